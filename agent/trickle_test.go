package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/relay/trickle/trickletest"
)

func newTrickleServer(t *testing.T, opts trickletest.Options) *trickletest.Server {
	t.Helper()
	s, err := trickletest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// captureServer is a metrics API that keeps every envelope it receives.
type captureServer struct {
	mu   sync.Mutex
	envs map[string]json.RawMessage
}

func (c *captureServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct{ Events []json.RawMessage }
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, e := range body.Events {
		var id struct{ ID string }
		json.Unmarshal(e, &id)
		c.envs[id.ID] = e
	}
	c.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (c *captureServer) count() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.envs) }

type envelopeJSON struct {
	ID        string                     `json:"id"`
	Type      string                     `json:"type"`
	Timestamp string                     `json:"timestamp"`
	Gateway   string                     `json:"gateway"`
	Data      map[string]json.RawMessage `json:"data"`
}

// TestTwoAgentRelay: agent A (runner side) takes 10,000 events through its
// ingest API and publishes them on a session channel; agent B (client side)
// subscribes and forwards them through its HTTP sink. Every envelope arrives
// with the same id, type, timestamp and data, plus only the two relay fields.
func TestTwoAgentRelay(t *testing.T) {
	ts := newTrickleServer(t, trickletest.Options{KeepSegments: 50})
	ts.CreateChannel("m1-events")
	chURL := ts.ChannelURL("m1-events")

	metrics := &captureServer{envs: map[string]json.RawMessage{}}
	ms := httptest.NewServer(metrics)
	defer ms.Close()
	b := startAgent(t, testEnv(t, map[string]string{
		"EDGERELAY_TRICKLE_SUBSCRIBE": chURL, "EDGERELAY_HTTP_URL": ms.URL, "EDGERELAY_HTTP_API_KEY": "k",
		"EDGERELAY_HTTP_RATE": "0", "EDGERELAY_HTTP_LINGER": "20ms", "EDGERELAY_STDOUT": "off",
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.WaitReaders(ctx, "m1-events", 1); err != nil {
		t.Fatal("agent B is not following the channel:", err)
	}

	a := startAgent(t, testEnv(t, nil))
	if code, _ := a.post(t, "/v1/sessions", fmt.Sprintf(`{"session_id":"sess-1","stream_id":"st-1","events_url":%q}`, chURL)); code != http.StatusCreated {
		t.Fatalf("attach: %d", code)
	}
	const total = 10000
	for i := 0; i < total; i += 1000 {
		var body strings.Builder
		for k := i; k < i+1000; k++ {
			fmt.Fprintf(&body, "{\"type\":\"frame_stats\",\"data\":{\"session_id\":\"sess-1\",\"n\":%d,\"big\":12345678901234567890}}\n", k)
		}
		if code, ans := a.post(t, "/v1/events", body.String()); code != 202 || ans.Accepted != 1000 {
			t.Fatalf("post: %d %+v", code, ans)
		}
	}
	waitUntil(t, "B to deliver 10,000 relayed envelopes", func() bool { return metrics.count() >= total })

	originals := map[string]envelopeJSON{}
	for _, l := range a.waitLines(t, total) {
		var e envelopeJSON
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		if e.Type == "frame_stats" {
			originals[e.ID] = e
		}
	}
	if len(originals) != total {
		t.Fatalf("agent A emitted %d envelopes", len(originals))
	}
	metrics.mu.Lock()
	defer metrics.mu.Unlock()
	for id, orig := range originals {
		raw, ok := metrics.envs[id]
		if !ok {
			t.Fatalf("envelope %s did not arrive through B", id)
		}
		var got envelopeJSON
		json.Unmarshal(raw, &got)
		if got.Type != orig.Type || got.Timestamp != orig.Timestamp || got.Gateway != orig.Gateway {
			t.Fatalf("envelope %s changed: %s", id, raw)
		}
		if string(got.Data["relayed_via"]) != `"trickle"` {
			t.Fatalf("relayed_via = %s", got.Data["relayed_via"])
		}
		if _, err := strconv.ParseInt(strings.Trim(string(got.Data["relay_received_timestamp"]), `"`), 10, 64); err != nil {
			t.Fatalf("relay_received_timestamp = %s", got.Data["relay_received_timestamp"])
		}
		delete(got.Data, "relayed_via")
		delete(got.Data, "relay_received_timestamp")
		if !reflect.DeepEqual(compactAll(got.Data), compactAll(orig.Data)) {
			t.Fatalf("data of %s changed:\n got %v\nwant %v", id, got.Data, orig.Data)
		}
	}
	if s := b.a.Report().Sinks["http"]; !s.Balanced {
		t.Errorf("B's http sink: %+v", s)
	}
}

func compactAll(m map[string]json.RawMessage) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		var buf bytes.Buffer
		json.Compact(&buf, v)
		out[k] = buf.String()
	}
	return out
}

// channelLines reads back a channel's completed segments in seq order, as a
// JSON-lines reader would.
func channelLines(ts *trickletest.Server, name string) []string {
	segs := ts.Received(name)
	var seqs []int
	for s := range segs {
		seqs = append(seqs, s)
	}
	sort.Ints(seqs)
	var lines []string
	for _, s := range seqs {
		sc := bufio.NewScanner(bytes.NewReader(segs[s]))
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				lines = append(lines, l)
			}
		}
	}
	return lines
}

// TestSessionChannelSingleWriter: the runner's frames posted to /frames
// appear on the session channel verbatim, in order, interleaved with that
// session's telemetry; other sessions' events do not; only the agent writes,
// each seq once; detach deletes the channel only when the session owns it.
func TestSessionChannelSingleWriter(t *testing.T) {
	ts := newTrickleServer(t, trickletest.Options{KeepSegments: 100})
	ts.CreateChannel("own-events")
	ts.CreateChannel("shared-events")
	r := startAgent(t, testEnv(t, nil))
	r.post(t, "/v1/sessions", fmt.Sprintf(`{"session_id":"own","events_url":%q,"owns_channel":true}`, ts.ChannelURL("own-events")))
	r.post(t, "/v1/sessions", fmt.Sprintf(`{"session_id":"shared","events_url":%q}`, ts.ChannelURL("shared-events")))

	var want []string
	for i := range 20 {
		frame := fmt.Sprintf(`{"type":"runner_status","seq":%d, "note":"spaces kept"}`, i)
		if code, ans := r.post(t, "/v1/sessions/own/frames", frame); code != 202 || ans.Accepted != 1 {
			t.Fatalf("frames: %d %+v", code, ans)
		}
		want = append(want, frame)
		ev := fmt.Sprintf(`{"id":"tele-%d","type":"gpu_note","timestamp":"5","data":{"session_id":"own","i":%d}}`, i, i)
		r.post(t, "/v1/events", ev)
		want = append(want, `{"type":"telemetry","event":`+ev+`}`)
		r.post(t, "/v1/events", fmt.Sprintf(`{"id":"other-%d","type":"gpu_note","timestamp":"5","data":{"session_id":"shared"}}`, i))
	}
	if code, _ := r.post(t, "/v1/sessions/own/frames", `{"no_type":1}`); code != http.StatusBadRequest {
		t.Errorf("a frame without type: %d", code)
	}
	if code, _ := r.post(t, "/v1/sessions/nobody/frames", `{"type":"x"}`); code != http.StatusNotFound {
		t.Errorf("frames for an unknown session: %d", code)
	}
	// Detach flushes what is pending, then deletes the owned channel.
	for _, id := range []string{"own", "shared"} {
		req, _ := http.NewRequest(http.MethodDelete, r.base+"/v1/sessions/"+id, nil)
		resp, err := testClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("detach %s: %v %v", id, resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	got := channelLines(ts, "own-events")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("channel content differs:\n got %d lines %q\nwant %d lines %q", len(got), got, len(want), want)
	}
	for _, l := range channelLines(ts, "shared-events") {
		if strings.Contains(l, `"session_id":"own"`) || strings.Contains(l, "runner_status") {
			t.Fatalf("another session's line on the shared channel: %s", l)
		}
	}
	posted := map[string]map[string]bool{}
	deleted := map[string]bool{}
	for _, q := range ts.Requests() {
		switch {
		case q.Method == http.MethodPost && q.Seq != "":
			if posted[q.Channel] == nil {
				posted[q.Channel] = map[string]bool{}
			}
			if posted[q.Channel][q.Seq] {
				t.Errorf("seq %s of %s POSTed twice", q.Seq, q.Channel)
			}
			posted[q.Channel][q.Seq] = true
		case q.Method == http.MethodDelete && q.Seq == "":
			deleted[q.Channel] = true
		}
	}
	if !deleted["own-events"] || deleted["shared-events"] {
		t.Errorf("channel deletes: %v (only the owned channel may be deleted)", deleted)
	}
	rep := r.a.Report()
	for _, name := range []string{"session:own", "session:shared"} {
		if s, ok := rep.Sinks[name]; !ok || !s.Balanced || s.Pending != 0 || s.DroppedTotal != 0 {
			t.Errorf("%s: %+v", name, s)
		}
	}
}

// TestStaticTrickleChannelEnds: a static channel that the server loses (404)
// stops the trickle sink without spinning; its undelivered events are
// counted as channel_closed and the other sinks are not affected.
func TestStaticTrickleChannelEnds(t *testing.T) {
	ts := newTrickleServer(t, trickletest.Options{})
	ts.CreateChannel("static-events")
	r := startAgent(t, testEnv(t, map[string]string{"EDGERELAY_TRICKLE_URL": ts.ChannelURL("static-events"), "EDGERELAY_STDOUT": "on"}))
	postIDs(t, r, "s", 0, 10)
	waitUntil(t, "the first events on the channel", func() bool { return len(channelLines(ts, "static-events")) >= 10 })
	ts.Restart() // all channels lost: the next POST answers 404
	postIDs(t, r, "s", 10, 10)
	waitUntil(t, "the trickle sink to retire", func() bool {
		s, ok := r.a.Report().Sinks["trickle"]
		return ok && s.Dropped["channel_closed"] > 0 && s.Pending == 0
	})
	before := len(ts.Requests())
	postIDs(t, r, "s", 20, 10)
	r.waitLines(t, 30)
	// Absence has no event to wait for: 300 ms are many forwarder rounds
	// for a sink that (wrongly) went on sending.
	time.Sleep(300 * time.Millisecond)
	if after := len(ts.Requests()); after != before {
		t.Errorf("the retired sink kept requesting: %d -> %d requests", before, after)
	}
	rep := r.a.Report()
	if s := rep.Sinks["trickle"]; !s.Balanced {
		t.Errorf("trickle: %+v", s)
	}
	if s := rep.Sinks["stdout"]; s.Delivered != 30 || !s.Balanced {
		t.Errorf("stdout: %+v", s)
	}
}
