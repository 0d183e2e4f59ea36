package trickle

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"

	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/trickle/trickletest"
)

// load appends what an agent on an 8-GPU node produces at its defaults,
// until ctx ends: each second 8 gpu_memory_sample and a host_network_sample,
// every 5 s 8 gpu_process_sample, every 30 s an agent_status; with frames,
// every 2 s a runner status frame of the runner's own (a session channel).
type load struct {
	q      *ackQueue
	frames bool // a session channel: records are frames

	mu     sync.Mutex
	ids    []string // every envelope appended
	runner int      // runner frames appended
}

func (l *load) envelope(typ string, i int) []byte {
	id := uuid.Must(uuid.NewV7()).String()
	l.ids = append(l.ids, id)
	return fmt.Appendf(nil, `{"id":%q,"type":%q,"timestamp":"%d","gateway":"","data":{"type":%q,"client_source":"edgerelay","gpu_id":"GPU-%d","memory_used_bytes":%d}}`,
		id, typ, time.Now().UnixMilli(), typ, i, 1<<30+i)
}

func (l *load) run(ctx context.Context, t testing.TB) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 0; ; n++ {
		l.mu.Lock()
		var recs [][]byte
		add := func(env []byte) {
			if l.frames {
				env = envelope.WrapTelemetry(nil, env)
			}
			recs = append(recs, env)
		}
		for i := range 8 {
			add(l.envelope("gpu_memory_sample", i))
		}
		add(l.envelope("host_network_sample", 0))
		if n%5 == 0 {
			for i := range 8 {
				add(l.envelope("gpu_process_sample", i))
			}
		}
		if n%30 == 0 {
			add(l.envelope("agent_status", 0))
		}
		if l.frames && n%2 == 0 {
			recs = append(recs, fmt.Appendf(nil, `{"queue_event_type":"ai_stream_status","event":{"type":"status","seq":%d}}`, l.runner))
			l.runner++
		}
		l.mu.Unlock()
		l.q.append(t, recs...)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (l *load) appended() (ids []string, runner int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ids...), l.runner
}

// gatewayGot sorts what a gateway reader parsed: the envelope ids of our
// documents (each counted), and the runner's own events.
func gatewayGot(t *testing.T, st trickletest.ReaderStats) (ids map[string]int, runner int) {
	t.Helper()
	ids = map[string]int{}
	for _, ev := range st.Events {
		var e struct {
			Type      string            `json:"type"`
			Envelopes []json.RawMessage `json:"envelopes"`
		}
		if err := json.Unmarshal(ev, &e); err != nil {
			t.Fatalf("event %s: %v", ev, err)
		}
		if e.Type == "status" {
			runner++
			continue
		}
		for _, env := range e.Envelopes {
			id, _ := envelope.ID(env)
			if typ, _ := envelope.TypeOf(env); typ != e.Type {
				t.Fatalf("a %s in an event of family %s", typ, e.Type)
			}
			ids[string(id)]++
		}
	}
	return ids, runner
}

func startReader(t *testing.T, srv *trickletest.Server, kind trickletest.ReaderKind, name string) *trickletest.Reader {
	t.Helper()
	r := srv.NewReader(kind, name)
	ctx, cancel := context.WithCancel(context.Background())
	go r.Run(ctx)
	t.Cleanup(func() { cancel(); <-r.Done() })
	return r
}

func startLoad(t *testing.T, l *load) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx, t) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// checkAllOnce fails unless every id was read (once, but for the few that
// a failed segment sent again).
func checkAll(t *testing.T, want []string, got map[string]int) {
	t.Helper()
	missing, dup := 0, 0
	for _, id := range want {
		switch n := got[id]; {
		case n == 0:
			missing++
		case n > 1:
			dup++
		}
	}
	if missing > 0 || len(got) != len(want) {
		t.Fatalf("%d of %d envelopes never read (%d read, %d twice)", missing, len(want), len(got), dup)
	}
}

// Gateway framing at the default load, with the runner's own frames, for 10
// minutes: the go-livepeer gateway reads every envelope and every frame, is
// never sent to the live edge, never pauses on an error, and never waits
// 30 s for an event.
func TestGatewayReaderDefaultLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("s-events")
		gw := startReader(t, srv, trickletest.GatewayReader, "s-events")
		synctest.Wait()
		q := newSpool(t)
		opts := pipeOpts(srv, "s-events")
		opts.Framing, opts.Wrap = FramingGateway, false
		startPublisher(t, opts, q)
		l := &load{q: q, frames: true}
		stop := startLoad(t, l)
		time.Sleep(10 * time.Minute)
		stop()
		ids, runner := l.appended()
		q.waitAcked(t, t.Context(), uint64(len(ids)+runner))
		synctest.Wait()

		st := gw.Stats()
		got, gotRunner := gatewayGot(t, st)
		checkAll(t, ids, got)
		if gotRunner != runner {
			t.Errorf("%d runner frames read, want %d", gotRunner, runner)
		}
		if st.Stopped != "" || st.Jumps != 0 || st.Errors != 0 || st.MaxGap >= trickletest.GatewayMaxEventGap {
			t.Errorf("gateway reader %+v", summary(st))
		}
		t.Logf("10 min: %d envelopes and %d runner frames in %d segments (%.1f a second); gateway: %d errors, %d jumps, longest gap %s",
			len(ids), runner, st.Segments, float64(st.Segments)/600, st.Errors, st.Jumps, st.MaxGap)
	})
}

func summary(st trickletest.ReaderStats) string {
	return fmt.Sprintf("segments %d events %d errors %d (%d in a row) jumps %d skipped %d max gap %s stopped %q",
		st.Segments, len(st.Events), st.Errors, st.MaxInRow, st.Jumps, st.Skipped, st.MaxGap, st.Stopped)
}

// A 5-minute backlog (the channel was missing: the sink paused, counted,
// and probed) replayed to a gateway reader that starts when the channel
// comes back: paced, it reads everything, and is never stopped.
func TestGatewayReaderBacklogReplay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		q := newSpool(t)
		opts := pipeOpts(srv, "static-events")
		opts.Framing, opts.Persistent = FramingGateway, true
		p, _ := startPublisher(t, opts, q)
		l := &load{q: q}
		stop := startLoad(t, l)
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		snap := p.Stats().Snapshot()
		if snap.Paused != PauseChannelGone || snap.Delivered != 0 {
			t.Fatalf("with the channel missing: %+v", snap)
		}
		backlog := q.pending(t)
		srv.CreateChannel("static-events")
		gw := startReader(t, srv, trickletest.GatewayReader, "static-events")
		time.Sleep(2 * time.Minute)
		stop()
		ids, _ := l.appended()
		q.waitAcked(t, t.Context(), uint64(len(ids)))
		synctest.Wait()

		st := gw.Stats()
		got, _ := gatewayGot(t, st)
		checkAll(t, ids, got)
		if st.Stopped != "" || st.Jumps != 0 || st.Errors != 0 || st.MaxGap >= trickletest.GatewayMaxEventGap {
			t.Errorf("gateway reader %+v", summary(st))
		}
		if p.Stats().Snapshot().Paused != "" {
			t.Error("still paused")
		}
		t.Logf("backlog of %d envelopes after 5 min: read whole in %d segments; gateway: %s", backlog, st.Segments, summary(st))
	})
}

// The largest event the agent accepts fits a segment that the Scope
// client's JSONL reader takes; so does a backlog around it.
func TestJSONLReaderMaximalEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		jr := startReader(t, srv, trickletest.JSONLReader, "ch")
		synctest.Wait()
		q := newSpool(t)
		p, _ := startPublisher(t, pipeOpts(srv, "ch"), q)
		max := p.MaxEventBytes()
		head := `{"id":"big","type":"t","timestamp":"1","gateway":"","data":{"pad":"`
		big := []byte(head + strings.Repeat("x", max-len(head)-3) + `"}}`)
		if len(big) != max {
			t.Fatalf("built %d bytes, want %d", len(big), max)
		}
		recs := append(envelopes(500), big)
		recs = append(recs, envelopes(500)...)
		q.append(t, recs...)
		q.waitAcked(t, t.Context(), uint64(len(recs)))
		synctest.Wait()
		st := jr.Stats()
		if st.Stopped != "" || len(st.Events) != len(recs) || st.MaxSegment > trickletest.PythonMaxSegment {
			t.Fatalf("JSONL reader: %s, largest segment %d", summary(st), st.MaxSegment)
		}
		if ps := p.Stats().Snapshot(); ps.DroppedTotal() != 0 {
			t.Fatalf("dropped %v", ps.Dropped)
		}
		t.Logf("maximal event %d bytes; largest segment %d of %d", max, st.MaxSegment, trickletest.PythonMaxSegment)
	})
}

// livepeer-python-gateway's ChannelReader never sees an empty segment, idle
// or busy: keep-alives are real documents.
func TestChannelReaderNeverEmpty(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		cr := startReader(t, srv, trickletest.ChannelReader, "ch")
		gw := startReader(t, srv, trickletest.GatewayReader, "ch")
		synctest.Wait()
		q := newSpool(t)
		opts := pipeOpts(srv, "ch")
		opts.Framing = FramingGateway
		opts.KeepAliveEvent = func() []byte {
			return []byte(`{"id":"ka","type":"agent_status","timestamp":"1","gateway":"","data":{"reason":"keepalive"}}`)
		}
		startPublisher(t, opts, q)
		const idle = 2 * time.Minute
		time.Sleep(idle) // idle: keep-alives only
		recs := envelopes(20)
		q.append(t, recs...)
		q.waitAcked(t, t.Context(), uint64(len(recs)))
		time.Sleep(time.Minute)
		synctest.Wait()
		st := cr.Stats()
		if keepAlives := int(idle / DefaultKeepAlive); st.Stopped != "" || st.Empty != 0 || st.Segments < keepAlives {
			t.Fatalf("ChannelReader: %s, %d empty, want at least %d keep-alives", summary(st), st.Empty, keepAlives)
		}
		var ids []string
		for _, r := range recs {
			id, _ := envelope.ID(r)
			ids = append(ids, string(id))
		}
		read := map[string]int{}
		for _, doc := range st.Events {
			var w struct {
				Event struct {
					Envelopes []json.RawMessage `json:"envelopes"`
				} `json:"event"`
			}
			if err := json.Unmarshal(doc, &w); err != nil {
				t.Fatalf("ChannelReader document %s: %v", doc, err)
			}
			for _, env := range w.Event.Envelopes {
				id, _ := envelope.ID(env)
				read[string(id)]++
			}
		}
		checkAll(t, ids, trimTo(read, ids))
		g := gw.Stats()
		if g.Stopped != "" || g.MaxGap >= trickletest.GatewayMaxEventGap {
			t.Fatalf("gateway reader while idle: %s", summary(g))
		}
		gotGW, _ := gatewayGot(t, g)
		checkAll(t, ids, trimTo(gotGW, ids))
	})
}

// Faults of the server, for the publisher and the subscriber at once: a
// restart with the channel created again at once, a channel missing for 8 s,
// a DELETE of the channel (created again 8 s later), a slow server (3 s and
// 12 s a request). Through each, every appended record is delivered or
// counted, the identity holds, the subscriber (a static one) relays every
// envelope and skips nothing, and neither side spins.
func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(srv *trickletest.Server)
	}{
		{"restart, channel at once", func(srv *trickletest.Server) { srv.Restart(); srv.CreateChannel("ch") }},
		{"restart, channel missing 8 s", func(srv *trickletest.Server) {
			srv.Restart()
			time.Sleep(8 * time.Second)
			srv.CreateChannel("ch")
		}},
		{"DELETE of the channel", func(srv *trickletest.Server) {
			srv.CloseChannel("ch")
			time.Sleep(8 * time.Second)
			srv.CreateChannel("ch")
		}},
		{"slow server, 3 s", func(srv *trickletest.Server) { slow(srv, 3*time.Second) }},
		{"slow server, 12 s", func(srv *trickletest.Server) { slow(srv, 12*time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newFake(t, trickletest.Options{InMemory: true, KeepSegments: 10})
				srv.CreateChannel("ch")
				c := newCollector()
				sopts := subOpts(srv, "ch", c)
				sopts.Persistent = true
				sub, _ := startSubscriber(t, sopts)
				synctest.Wait()
				q := newSpool(t)
				opts := pipeOpts(srv, "ch")
				opts.Persistent = true
				p, _ := startPublisher(t, opts, q)
				l := &load{q: q}
				stop := startLoad(t, l)
				// The fault comes between two segments, once the subscriber
				// has read the last: a segment a server loses before any
				// reader read it (it keeps channels in memory) is lost to
				// every reader, whatever the publisher does.
				time.Sleep(20*time.Second + 500*time.Millisecond)
				synctest.Wait()
				tc.fault(srv)
				time.Sleep(time.Minute)
				stop()
				ids, _ := l.appended()
				q.waitAcked(t, t.Context(), uint64(len(ids)))
				time.Sleep(5 * time.Second) // the subscriber reads the last segment
				synctest.Wait()

				snap := p.Stats().Snapshot()
				ss, _ := q.SinkStat(sinkName)
				rep := relay.Account("trickle", snap, ss)
				if !rep.Balanced || rep.Pending != 0 || rep.Delivered+rep.DroppedTotal != uint64(len(ids)) {
					t.Fatalf("publisher: %+v for %d appended", rep, len(ids))
				}
				got := map[string]int{}
				for _, env := range c.got() {
					id, _ := envelope.ID(env)
					got[string(id)]++
				}
				sst := sub.Stats()
				var req uint64
				for _, n := range snap.Requests {
					req += n
				}
				t.Logf("%d envelopes: delivered %d, dropped %d; publisher requests %v, retries %v; subscriber relayed %d (%d duplicates), gone %d, reconnects %d, jumps %d",
					len(ids), rep.Delivered, rep.DroppedTotal, snap.Requests, snap.Retries, sst.Relayed, sst.Duplicates, sst.Gone, sst.Reconnects, sst.Jumps)
				checkAll(t, ids, got)
				if sst.Skipped != 0 {
					t.Errorf("the subscriber skipped %d segments", sst.Skipped)
				}
				// No spinning: a minute and a half of load is about 90
				// segments; probes and retries add a few a second at most.
				if req > 300 || sst.Reconnects > 100 {
					t.Errorf("%d publisher requests, %d subscriber reconnects", req, sst.Reconnects)
				}
			})
		})
	}
}

// slow makes every request take d for 20 s, then the server is quick again.
func slow(srv *trickletest.Server, d time.Duration) {
	for _, m := range []string{"GET", "POST", "DELETE"} {
		srv.SetLatency(m, d)
	}
	time.Sleep(20 * time.Second)
	for _, m := range []string{"GET", "POST", "DELETE"} {
		srv.SetLatency(m, 0)
	}
}

// A server restart that keeps the channel name (it comes back at seq 0)
// while the publisher is idle between segments: the publisher notices the
// new connection, learns the position again and resets, so a gateway
// reader that starts on the restarted server (at its live edge, seq 0)
// reads everything after the restart.
func TestRestartFreshGatewayReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		q := newSpool(t)
		opts := pipeOpts(srv, "ch")
		opts.Framing, opts.Persistent = FramingGateway, true
		startPublisher(t, opts, q)
		l := &load{q: q}
		stop := startLoad(t, l)
		time.Sleep(30*time.Second + 500*time.Millisecond) // between two batches
		logged := len(srv.Requests())
		srv.Restart()
		srv.CreateChannel("ch")
		before, _ := l.appended()
		gw := startReader(t, srv, trickletest.GatewayReader, "ch")
		time.Sleep(time.Minute)
		stop()
		ids, _ := l.appended()
		q.waitAcked(t, t.Context(), uint64(len(ids)))
		synctest.Wait()
		st := gw.Stats()
		got, _ := gatewayGot(t, st)
		checkAll(t, ids[len(before):], trimTo(got, ids[len(before):]))
		if st.Stopped != "" || st.Jumps != 0 || st.Errors != 0 {
			t.Fatalf("gateway reader on the restarted server: %s", summary(st))
		}
		var first trickletest.Request
		for _, r := range postsOf(srv.Requests()[logged:]) {
			if r.Status == 200 && r.Restarts == 1 {
				first = r
				break
			}
		}
		if first.Seq != "0" || !first.Reset {
			t.Fatalf("first POST on the restarted server %+v, want seq 0 with Lp-Trickle-Reset", first)
		}
	})
}

// trimTo keeps the ids of got that are in want.
func trimTo(got map[string]int, want []string) map[string]int {
	out := map[string]int{}
	for _, id := range want {
		if n, ok := got[id]; ok {
			out[id] = n
		}
	}
	return out
}
