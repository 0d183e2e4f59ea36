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
	"os"
	"reflect"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/agent/session"
	"github.com/livepeer/edgerelay/envelope"
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
	// Retired session channels are kept as one report (and one set of
	// metric series), however many sessions came and went.
	rep := r.a.Report()
	if s, ok := rep.Sinks["sessions"]; !ok || !s.Balanced || s.Pending != 0 || s.DroppedTotal != 0 || s.Delivered != 60 {
		t.Errorf("sessions: %+v (want the 40 lines of own and the 20 of shared delivered)", s)
	}
	for _, name := range []string{"session:own", "session:shared"} {
		if _, ok := rep.Sinks[name]; ok {
			t.Errorf("a report of its own for the retired %s", name)
		}
	}
}

// TestStaticTrickleChannelGone: a static channel that the server loses (an
// orchestrator restart: 404 until the channel is created again) pauses the
// trickle sink with reason channel_gone; what it holds stays pending and
// counted, the other sinks go on, and once the channel is back everything
// held is delivered, from seq 0 with Lp-Trickle-Reset.
func TestStaticTrickleChannelGone(t *testing.T) {
	ts := newTrickleServer(t, trickletest.Options{KeepSegments: 100})
	ts.CreateChannel("static-events")
	r := startAgent(t, testEnv(t, map[string]string{"EDGERELAY_TRICKLE_URL": ts.ChannelURL("static-events"), "EDGERELAY_STDOUT": "on"}))
	postIDs(t, r, "s", 0, 10)
	waitUntil(t, "the first events on the channel", func() bool { return len(channelLines(ts, "static-events")) >= 10 })
	ts.Restart() // all channels lost: POSTs answer 404
	postIDs(t, r, "s", 10, 10)
	waitUntil(t, "the trickle sink to pause", func() bool {
		s := r.a.Report().Sinks["trickle"]
		return s.Paused == "channel_gone" && s.Pending == 10
	})
	resp, err := testClient.Get(r.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`edgerelay_sink_paused{reason="channel_gone",sink="trickle"} 1`, `edgerelay_events_pending{sink="trickle"} 10`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	postIDs(t, r, "s", 20, 10)
	r.waitLines(t, 30) // stdout goes on
	logged := len(ts.Requests())
	ts.CreateChannel("static-events")
	waitUntil(t, "the held events on the channel again", func() bool {
		s := r.a.Report().Sinks["trickle"]
		return s.Delivered == 30 && s.Pending == 0 && s.Paused == ""
	})
	rep := r.a.Report()
	if s := rep.Sinks["trickle"]; !s.Balanced || s.DroppedTotal != 0 {
		t.Errorf("trickle: %+v", s)
	}
	var first trickletest.Request
	for _, q := range ts.Requests()[logged:] {
		if q.Method == http.MethodPost && q.Seq != "" && q.Status == http.StatusOK {
			first = q
			break
		}
	}
	if first.Seq != "0" || !first.Reset {
		t.Errorf("first POST on the channel created again: %+v, want seq 0 with Lp-Trickle-Reset", first)
	}
}

// TestManySessions attaches and detaches 10,000 sessions, each with an
// events channel and a subscription: goroutines, memory, the reports and
// the metric series stay bounded (retired session sinks and subscribers are
// folded into one "sessions" entry each).
func TestManySessions(t *testing.T) {
	ts := newTrickleServer(t, trickletest.Options{AutoCreate: true})
	ts.CreateChannel("sub-events")
	r := startAgent(t, testEnv(t, nil))
	a := r.a
	cycle := func(i int) {
		s := &session.Session{
			SessionID: fmt.Sprintf("s-%05d", i), StreamID: "st", GPUID: "GPU-1",
			EventsURL: ts.ChannelURL("pub-events"), SubscribeURL: ts.ChannelURL("sub-events"),
		}
		if err := a.sessions.Attach(s); err != nil {
			t.Fatal(err)
		}
		if !a.sessions.Detach(s.SessionID) {
			t.Fatal("detach: not attached")
		}
	}
	series := func() int {
		resp, err := testClient.Get(r.base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		n := 0
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "edgerelay_") {
				n++
			}
		}
		return n
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	for i := range 100 { // warm up: the aggregates exist
		cycle(i)
	}
	live := func() int {
		a.subs.mu.Lock()
		defer a.subs.mu.Unlock()
		return len(a.subs.live)
	}
	waitUntil(t, "the warm-up subscribers to end", func() bool { return live() == 0 })
	s0 := series() // its keep-alive connection counts in g0 too
	g0, h0 := runtime.NumGoroutine(), heap()
	const n = 10000
	for i := 100; i < 100+n; i++ {
		cycle(i)
	}
	waitUntil(t, "the subscribers to end", func() bool { return live() == 0 })
	if !eventually(func() bool { return runtime.NumGoroutine() <= g0+2 }) {
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.Fatalf("goroutines %d, were %d", runtime.NumGoroutine(), g0)
	}
	g1, h1, s1 := runtime.NumGoroutine(), heap(), series()
	rep := a.Report()
	if len(rep.Sinks) != 2 || len(rep.Subscribers) != 1 || s1 != s0 {
		t.Errorf("after %d sessions: %d sink reports, %d subscriber reports, %d metric series (%d before)", n, len(rep.Sinks), len(rep.Subscribers), s1, s0)
	}
	if h1 > h0+8<<20 {
		t.Errorf("heap grew from %d to %d bytes over %d sessions", h0, h1, n)
	}
	t.Logf("%d sessions attached and detached: goroutines %d -> %d, heap in use %.1f -> %.1f MiB, metric series %d -> %d, sink reports %v",
		n, g0, g1, float64(h0)/(1<<20), float64(h1)/(1<<20), s0, s1, len(rep.Sinks))
}

// eventually polls cond for up to 10 s.
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// TestReattachWhileDetachDrains: a session attached again while its detach
// is still flushing the old channel (a slow server) keeps its new channel:
// the detach must not stop or retire the sink that took the same name.
func TestReattachWhileDetachDrains(t *testing.T) {
	ts := newTrickleServer(t, trickletest.Options{KeepSegments: 100})
	ts.CreateChannel("old-events")
	ts.CreateChannel("new-events")
	r := startAgent(t, testEnv(t, nil))
	a := r.a
	attach := func(ch string) {
		t.Helper()
		if err := a.sessions.Attach(&session.Session{SessionID: "re", EventsURL: ts.ChannelURL(ch)}); err != nil {
			t.Fatal(err)
		}
	}
	attach("old-events")
	ts.SetLatency(http.MethodPost, time.Second) // the detach waits on this POST
	if err := a.sessions.AppendFrames("re", [][]byte{[]byte(`{"type":"old"}`)}); err != nil {
		t.Fatal(err)
	}
	detached := make(chan struct{})
	go func() { defer close(detached); a.sessions.Detach("re") }()
	waitUntil(t, "the detach to begin", func() bool { attached, _ := a.sessions.HasChannel("re"); return !attached })
	attach("new-events")
	ts.SetLatency(http.MethodPost, 0)
	<-detached
	if attached, ch := a.sessions.HasChannel("re"); !attached || !ch {
		t.Fatalf("after the old detach ended: attached %v, channel %v", attached, ch)
	}
	if err := a.sessions.AppendFrames("re", [][]byte{[]byte(`{"type":"new"}`)}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the new frame on the new channel", func() bool {
		return slices.Contains(channelLines(ts, "new-events"), `{"type":"new"}`)
	})
}

// TestSubscriberCountersShown: what a followed channel's subscriber relays,
// skips as a duplicate and rejects as malformed is in /v1/stats and in
// /metrics under the channel, and its loss counters (jumps, skipped
// segments, reconnects, gone) are series from the start, at 0.
func TestSubscriberCountersShown(t *testing.T) {
	ts := newTrickleServer(t, trickletest.Options{KeepSegments: 50})
	ts.CreateChannel("watched")
	chURL := ts.ChannelURL("watched")
	r := startAgent(t, testEnv(t, map[string]string{"EDGERELAY_TRICKLE_SUBSCRIBE": chURL, "EDGERELAY_STDOUT": "on"}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.WaitReaders(ctx, "watched", 1); err != nil {
		t.Fatal("the agent is not following the channel:", err)
	}
	env := `{"id":"0190c1d2-0000-7000-8000-00000000a001","type":"frame_stats","timestamp":"1733500000000","gateway":"","data":{"n":1}}`
	frame := string(envelope.WrapTelemetry(nil, []byte(env))) + "\n"
	seg := frame + frame + "{\"type\":\"telemetry\",\"event\":{\"id\":\"\"}}\n"
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, chURL+"/0", strings.NewReader(seg))
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST seq 0: %s", resp.Status)
	}
	// The channel's entry and label: its URL, which carries no secret here.
	name := chURL
	if subs := r.a.Report().Subscribers; len(subs) != 1 {
		t.Fatalf("subscriber reports %+v, want the one followed channel", subs)
	} else if _, ok := subs[name]; !ok {
		t.Fatalf("subscriber reports %+v, want one named %s", subs, name)
	}
	waitUntil(t, "the segment to be read", func() bool {
		sr := r.a.Report().Subscribers[name]
		return sr.Relayed == 1 && sr.Duplicates == 1 && len(sr.Malformed) > 0
	})
	// /v1/stats, as a client reads it.
	var stats struct {
		Subscribers map[string]SubscriberReport `json:"subscribers"`
	}
	sresp, err := testClient.Get(r.base + "/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(sresp.Body).Decode(&stats)
	sresp.Body.Close()
	if err != nil || sresp.StatusCode != http.StatusOK {
		t.Fatalf("/v1/stats: %s, %v", sresp.Status, err)
	}
	got := stats.Subscribers[name]
	var malformed uint64
	for _, n := range got.Malformed {
		malformed += n
	}
	if got.Relayed != 1 || got.Duplicates != 1 || malformed != 1 || got.Jumps != 0 || got.Skipped != 0 || got.Ended != "" {
		t.Fatalf("/v1/stats subscribers[%q] = %+v (all: %+v)", name, got, stats.Subscribers)
	}
	m := scrape(t, r)
	label := fmt.Sprintf("{channel=%q}", name)
	for series, want := range map[string]float64{
		"edgerelay_subscriber_relayed_total":          1,
		"edgerelay_subscriber_duplicates_total":       1,
		"edgerelay_subscriber_jumps_total":            0,
		"edgerelay_subscriber_skipped_segments_total": 0,
		"edgerelay_subscriber_reconnects_total":       0,
		"edgerelay_subscriber_gone_total":             0,
	} {
		if v, ok := m[series+label]; !ok || v != want {
			t.Errorf("%s%s = %v (present %v), want %v", series, label, v, ok, want)
		}
	}
	var bad float64
	for k, v := range m {
		if strings.HasPrefix(k, "edgerelay_subscriber_malformed_total{channel=") && strings.Contains(k, fmt.Sprintf("channel=%q", name)) {
			bad += v
		}
	}
	if bad != 1 {
		t.Errorf("edgerelay_subscriber_malformed_total for %s: %v, want 1", name, bad)
	}
}
