package httpsink

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// Lanes share one budget: four takers at once get their tokens one
// interval apart, never two in one interval.
func TestBucketSharedByLanes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBucket(60)
		start := time.Now()
		var (
			mu sync.Mutex
			at []time.Duration
			wg sync.WaitGroup
		)
		for range 4 {
			wg.Go(func() {
				for range 2 {
					if err := b.take(context.Background()); err != nil {
						t.Error(err)
					}
					mu.Lock()
					at = append(at, time.Since(start))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		slices.Sort(at)
		for i, d := range at {
			if want := time.Duration(i) * time.Second; d != want {
				t.Fatalf("tokens at %v; want one a second from 0", at)
			}
		}
	})
}

// A lane shares the URL, client, key source, budget and counters, and has
// buffers of its own.
func TestLaneShares(t *testing.T) {
	s, err := New(Options{URL: "http://127.0.0.1:1/v1/metrics", APIKey: "k", Host: "h", Gzip: true})
	if err != nil {
		t.Fatal(err)
	}
	l := s.Lane().(*Sink)
	if l == s || l.client != s.client || l.keys != s.keys || l.rate != s.rate || l.limit != s.limit || l.stats != s.stats || l.url != s.url {
		t.Fatal("a lane must share the client, key source, budget, learned limit, counters and URL")
	}
	s.buf = append(s.buf, "x"...)
	if l.zw == s.zw || l.dropLog == s.dropLog || len(l.buf) != 0 {
		t.Fatal("a lane must have its own buffers and log throttle")
	}
}

// Through a forwarder with Inflight 4 against a loopback metrics API, four
// requests are in flight at once (the server holds the first ones until the
// fourth arrives), every event arrives, and the accounting balances.
func TestPipelinedRequests(t *testing.T) {
	const inflight, events = 4, 80
	var (
		mu      sync.Mutex
		now     int
		peak    int
		got     = map[string]int{}
		allIn   = make(chan struct{})
		allOnce sync.Once
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		now++
		peak = max(peak, now)
		if now == inflight {
			allOnce.Do(func() { close(allIn) })
		}
		for _, m := range regexp.MustCompile(`"id":"(e-\d+)"`).FindAllSubmatch(body, -1) {
			got[string(m[1])]++
		}
		mu.Unlock()
		select {
		case <-allIn:
		case <-time.After(time.Minute): // a hang detector, not a timing
		}
		mu.Lock()
		now--
		mu.Unlock()
		w.Write([]byte(`{"status":"accepted"}`))
	}))
	defer srv.Close()
	s, err := New(Options{URL: srv.URL, APIKey: "k", Host: "h", MaxEvents: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mem := spool.NewMemory(0)
	if err := mem.AddSink("http"); err != nil {
		t.Fatal(err)
	}
	var data [][]byte
	for i := range events {
		data = append(data, fmt.Appendf(nil, `{"id":"e-%d","type":"t","timestamp":"1","data":{}}`, i))
	}
	if err := mem.Append(data); err != nil {
		t.Fatal(err)
	}
	stats := relay.NewStats()
	s.stats = stats
	batch, maxBytes := s.Limits()
	f := &relay.Forwarder{Name: "http", Sink: s, Queue: mem, Stats: stats, Batch: batch, MaxBytes: maxBytes, Inflight: inflight}
	f.Init()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	deadline := time.After(time.Minute)
	for {
		st, _ := mem.SinkStat("http")
		if st.Pending == 0 {
			break
		}
		select {
		case <-deadline:
			cancel()
			t.Fatalf("not delivered: %+v", st)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if peak != inflight || len(got) != events {
		t.Fatalf("peak %d requests in flight, %d distinct events; want %d and %d", peak, len(got), inflight, events)
	}
	st, _ := mem.SinkStat("http")
	if rep := relay.Account("http", stats.Snapshot(), st); !rep.Balanced || rep.Delivered != events {
		t.Fatalf("report %+v", rep)
	}
}

// A lane reads a success answer as the sink does: the "accepted" count of a
// partial acceptance drops the rest as DropNotAccepted, and a JSON answer
// delimited by the connection's close and cut short is not a success.
func TestLaneReadsAnswer(t *testing.T) {
	for _, lane := range []bool{false, true} {
		t.Run(fmt.Sprintf("lane=%v", lane), func(t *testing.T) {
			api := newMetricsAPI(t)
			api.notAccepted = func(id string) bool { return id == idOf(1) }
			api.wire = func(n int) wireFault {
				if n == 1 {
					return wireCloseCut
				}
				return wireWhole
			}
			srv := httptest.NewServer(api)
			defer srv.Close()
			s := mustNew(t, Options{URL: srv.URL})
			var sk relay.Sink = s
			if lane {
				sk = s.Lane()
			}
			recs := records(envelopes(5))
			res := sk.Send(t.Context(), recs)
			if res.Err != nil || res.Settled != 5 || len(res.Dropped) != 1 || res.Dropped[0].Reason != DropNotAccepted || res.Dropped[0].ID != idOf(4) {
				t.Fatalf("4 of 5 accepted: result %+v; want all settled, %s dropped as %s", res, idOf(4), DropNotAccepted)
			}
			if res := sk.Send(t.Context(), recs); res.Err == nil || res.Settled != 0 {
				t.Fatalf("an answer cut short: result %+v; want an error and nothing settled", res)
			}
		})
	}
}
