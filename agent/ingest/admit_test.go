package ingest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/agent/pipeline"
	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/spool"
)

// refusals records what the server counted as refused.
type refusals struct {
	mu sync.Mutex
	n  map[string]uint64 // "source/reason"
}

func (r *refusals) add(source, reason string, n uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]uint64{}
	}
	r.n[source+"/"+reason] += n
}

func (r *refusals) get(key string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[key]
}

// admitServer is a server over a real pipeline into a memory spool, with
// one ingest slot; submitGate, when set, holds Submit until it is closed.
func admitServer(t *testing.T, room func(context.Context) bool) (*Server, *refusals, chan struct{}, chan struct{}) {
	t.Helper()
	mem := spool.NewMemory(0)
	if err := mem.AddSink("s"); err != nil {
		t.Fatal(err)
	}
	p := pipeline.New(pipeline.Options{RingMaxEvents: 100, RingMaxBytes: 1 << 20, GroupEvents: 100, Store: mem})
	p.Start()
	t.Cleanup(func() { p.Close(); p.Wait() })
	entered, release := make(chan struct{}, 1), make(chan struct{})
	ref := &refusals{}
	s := &Server{
		Options: Options{MaxBodyBytes: 1 << 20, MaxEventBytes: 1 << 16},
		Submit: func(source string, e []pipeline.Entry) (*pipeline.Waiter, error) {
			entered <- struct{}{}
			<-release
			return p.Submit(source, e)
		},
		Durable:  func() bool { return true },
		Rejected: func(string, uint64) {},
		Refused:  ref.add,
		Room:     room,
		Stamper:  envelope.NewStamper(envelope.StamperOptions{Node: envelope.Identity{"host": "h"}}),
	}
	s.admission = newAdmission(1, time.Millisecond)
	return s, ref, entered, release
}

func post(s *Server, body string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	s.handleEvents(w, httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(body)))
	return w
}

const threeEvents = `[{"type":"a","data":{}},{"type":"b","data":{}},{"type":"c","data":{}}]`

// With every parsing slot taken for longer than the queue wait, a request
// is refused whole with 429 and Retry-After, its items counted; the request
// holding the slot is answered normally.
func TestIngestRefusesWhenBusy(t *testing.T) {
	s, ref, entered, release := admitServer(t, nil)
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- post(s, threeEvents) }()
	<-entered // the first request holds the only slot

	// Were the slot not held, this request would reach Submit too: that
	// fails here rather than hanging on the gate.
	second := make(chan *httptest.ResponseRecorder, 1)
	go func() { second <- post(s, threeEvents) }()
	var w *httptest.ResponseRecorder
	select {
	case w = <-second:
	case <-entered:
		close(release)
		t.Fatal("a second request was submitted while the only slot was held")
	}
	var ans Answer
	if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" || ans.Refused != 3 || ans.Accepted != 0 || ans.RetryAfter != 1 {
		t.Fatalf("busy: %d Retry-After %q %s; want 429, 1, refused 3", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if n := ref.get("api/" + RefusedBusy); n != 3 {
		t.Fatalf("counted %d refused; want 3", n)
	}
	close(release)
	if w := <-first; w.Code != http.StatusAccepted {
		t.Fatalf("the request holding the slot: %d %s", w.Code, w.Body)
	}
	// The slot is free again.
	go func() { <-entered }()
	if w := post(s, threeEvents); w.Code != http.StatusAccepted {
		t.Fatalf("after the slot freed: %d %s", w.Code, w.Body)
	}
}

// With the spool writer behind (the ring over half full) for the whole
// queue wait, requests are refused with 503 and Retry-After, their items
// counted.
func TestIngestRefusesWhenBacklogged(t *testing.T) {
	s, ref, entered, release := admitServer(t, func(ctx context.Context) bool { <-ctx.Done(); return false })
	close(release) // were Room not consulted, the events would be submitted and the answer 202
	w := post(s, threeEvents)
	select {
	case <-entered:
		t.Fatal("events were submitted while the ring had no room")
	default:
	}
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" || !strings.Contains(w.Body.String(), `"refused":3`) {
		t.Fatalf("backlogged: %d Retry-After %q %s; want 503, 1, refused 3", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if n := ref.get("api/" + RefusedBacklog); n != 3 {
		t.Fatalf("counted %d refused; want 3", n)
	}
}
