package httpsink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/relay"
)

// TestStatusTable runs every row of the spec's classification table end to
// end: a relay.Forwarder over a memory spool, the Sink, and an httptest peer
// that answers the row's code. Each row checks what was delivered (once, in
// order), what was dropped and why, the request counts, and the accounting
// identity received = delivered + dropped + pending.
func TestStatusTable(t *testing.T) {
	const n = 20
	const poisonAt = 7
	const hugeAt = 12

	// failFirst answers code to the first k requests, then 200.
	failFirst := func(code, k int, header ...string) func(int, *seen, http.ResponseWriter) int {
		return func(i int, _ *seen, w http.ResponseWriter) int {
			if i < k {
				for j := 0; j+1 < len(header); j += 2 {
					w.Header().Set(header[j], header[j+1])
				}
				return reply(w, code)
			}
			return reply(w, 200)
		}
	}
	// refusePoison answers code to any batch holding a poison event.
	refusePoison := func(code int) func(int, *seen, http.ResponseWriter) int {
		return func(_ int, r *seen, w http.ResponseWriter) int {
			if r.poison {
				return reply(w, code)
			}
			return reply(w, 200)
		}
	}
	hugeID := idOf(hugeAt)
	tooLarge := func(_ int, r *seen, w http.ResponseWriter) int {
		if len(r.ids) > 5 || slices.Contains(r.ids, hugeID) {
			return reply(w, 413)
		}
		return reply(w, 200)
	}

	type row struct {
		name      string
		answer    func(int, *seen, http.ResponseWriter) int
		poison    bool           // event poisonAt is poison
		huge      bool           // event hugeAt is refused by size
		hijack    int            // close the connection without answering on the first k requests
		stall     int            // hold the first k requests past the client's timeout
		dropped   map[string]int // reason -> ids
		droppedID string
		codes     map[string]uint64 // at least these request counts
		retry     string            // the forwarder's retry class seen, if any
		paused    string            // pause reason logged
		logsURL   bool              // the URL is logged once at error level
	}
	rows := []row{
		{name: "200", answer: failFirst(200, 0), codes: map[string]uint64{"200": 1}},
		{name: "201", answer: failFirst(201, 1<<30), codes: map[string]uint64{"201": 1}},
		{name: "202", answer: failFirst(202, 1<<30), codes: map[string]uint64{"202": 1}},
		{name: "204", answer: failFirst(204, 1<<30), codes: map[string]uint64{"204": 1}},
		{name: "400 poison", answer: refusePoison(400), poison: true, dropped: map[string]int{relay.DropRejected: 1}, droppedID: idOf(poisonAt), codes: map[string]uint64{"400": 1, "200": 1}},
		{name: "409 poison", answer: refusePoison(409), poison: true, dropped: map[string]int{relay.DropRejected: 1}, droppedID: idOf(poisonAt), codes: map[string]uint64{"409": 1}},
		{name: "415 poison", answer: refusePoison(415), poison: true, dropped: map[string]int{relay.DropRejected: 1}, droppedID: idOf(poisonAt), codes: map[string]uint64{"415": 1}},
		{name: "422 poison", answer: refusePoison(422), poison: true, dropped: map[string]int{relay.DropRejected: 1}, droppedID: idOf(poisonAt), codes: map[string]uint64{"422": 1}},
		{name: "413 split, huge dropped", answer: tooLarge, huge: true, dropped: map[string]int{relay.DropOversize: 1}, droppedID: hugeID, codes: map[string]uint64{"413": 1, "200": 1}},
		{name: "401", answer: failFirst(401, 3), codes: map[string]uint64{"401": 3, "200": 1}, retry: "paused", paused: PauseUnauthorized},
		{name: "403", answer: failFirst(403, 3), codes: map[string]uint64{"403": 3, "200": 1}, retry: "paused", paused: PauseUnauthorized},
		{name: "404", answer: failFirst(404, 3), codes: map[string]uint64{"404": 3, "200": 1}, retry: "paused", paused: PauseMisconfigured, logsURL: true},
		{name: "405", answer: failFirst(405, 3), codes: map[string]uint64{"405": 3, "200": 1}, retry: "paused", paused: PauseMisconfigured, logsURL: true},
		{name: "408", answer: failFirst(408, 2), codes: map[string]uint64{"408": 2, "200": 1}, retry: "throttled"},
		{name: "425", answer: failFirst(425, 2, "Retry-After", "0"), codes: map[string]uint64{"425": 2, "200": 1}, retry: "throttled"},
		{name: "429", answer: failFirst(429, 2, "Retry-After", "garbage"), codes: map[string]uint64{"429": 2, "200": 1}, retry: "throttled"},
		{name: "500", answer: failFirst(500, 2), codes: map[string]uint64{"500": 2, "200": 1}, retry: "transient"},
		{name: "502", answer: failFirst(502, 2), codes: map[string]uint64{"502": 2, "200": 1}, retry: "transient"},
		{name: "503", answer: failFirst(503, 2), codes: map[string]uint64{"503": 2, "200": 1}, retry: "transient"},
		{name: "504", answer: failFirst(504, 2), codes: map[string]uint64{"504": 2, "200": 1}, retry: "transient"},
		{name: "network error", answer: failFirst(200, 0), hijack: 2, codes: map[string]uint64{"error": 2, "200": 1}, retry: "transient"},
		{name: "timeout", answer: failFirst(200, 0), stall: 1, codes: map[string]uint64{"timeout": 1, "200": 1}, retry: "transient"},
	}

	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			p := newPeer(t, r.answer)
			release := make(chan struct{})
			var served atomic.Int64
			h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				count := int(served.Add(1))
				if count <= r.hijack {
					c, _, _ := w.(http.Hijacker).Hijack()
					c.Close()
					return
				}
				if count <= r.hijack+r.stall {
					select {
					case <-req.Context().Done():
					case <-release:
					}
					return
				}
				p.ServeHTTP(w, req)
			})
			srv := httptest.NewServer(h)
			defer srv.Close()
			defer close(release)

			var logs syncBuffer
			log := newLogger(&logs)
			timeout := 10 * time.Second // generous: a spurious timeout would fail rows that expect no retry
			if r.stall > 0 {
				timeout = 300 * time.Millisecond
			}
			s := mustNew(t, Options{URL: srv.URL + "/v1/metrics", Timeout: timeout, Logger: log})
			evs := envelopes(n)
			if r.poison {
				evs[poisonAt] = testEnvelope(poisonAt, true, 0)
			}
			if r.huge {
				evs[hugeAt] = testEnvelope(hugeAt, false, 5000)
			}
			rg := startRig(t, s, rigOptions{probe: 20 * time.Millisecond, backoff: time.Millisecond, logger: log, preloaded: evs})
			defer rg.stop()
			eventually(t, 10*time.Second, "all events settled", rg.settled)
			rg.stop()

			snap, st := rg.account()
			wantDropped := 0
			for _, k := range r.dropped {
				wantDropped += k
			}
			if st.Received != n || snap.Delivered != uint64(n-wantDropped) || int(snap.DroppedTotal()) != wantDropped {
				t.Errorf("received %d, delivered %d, dropped %v; want %d, %d, %v", st.Received, snap.Delivered, snap.Dropped, n, n-wantDropped, r.dropped)
			}
			for reason, k := range r.dropped {
				if snap.Dropped[reason] != uint64(k) {
					t.Errorf("dropped[%s] = %d, want %d", reason, snap.Dropped[reason], k)
				}
			}
			// The peer accepted every other event exactly once, in order.
			var want []string
			for i := range n {
				if id := idOf(i); id != r.droppedID {
					want = append(want, id)
				}
			}
			if got := p.accepted(); !slices.Equal(got, want) {
				t.Errorf("peer accepted %v\nwant %v", got, want)
			}
			drops := rg.spy.drops()
			if r.droppedID != "" && (len(drops) != 1 || drops[0].ID != r.droppedID) {
				t.Errorf("drops %+v, want id %s", drops, r.droppedID)
			}
			for code, k := range r.codes {
				if snap.Requests[code] < k {
					t.Errorf("requests[%s] = %d, want at least %d (all: %v)", code, snap.Requests[code], k, snap.Requests)
				}
			}
			var total uint64
			for _, k := range snap.Requests {
				total += k
			}
			if seen := uint64(len(p.requests()) + r.hijack + r.stall); total != seen {
				t.Errorf("stats count %d requests, the peer saw %d", total, seen)
			}
			if r.retry != "" && snap.Retries[r.retry] == 0 {
				t.Errorf("no %s retry counted: %v", r.retry, snap.Retries)
			}
			if r.retry == "" && len(snap.Retries) != 0 {
				t.Errorf("retries %v, want none", snap.Retries)
			}
			if snap.Paused != "" {
				t.Errorf("still paused: %q", snap.Paused)
			}
			logText := logs.String()
			if r.paused != "" && !strings.Contains(logText, "reason="+r.paused) {
				t.Errorf("pause reason %s not logged:\n%s", r.paused, logText)
			}
			if n := strings.Count(logText, "metrics API refuses the URL"); (n == 1) != r.logsURL || (r.logsURL && !strings.Contains(logText, "url="+srv.URL+"/v1/metrics")) {
				t.Errorf("URL logged %d times (want once: %v):\n%s", n, r.logsURL, logText)
			}
			if r.droppedID != "" && !strings.Contains(logText, "id="+r.droppedID) {
				t.Errorf("dropped id not logged:\n%s", logText)
			}
			if strings.Contains(logText, testKey) {
				t.Errorf("key in logs:\n%s", logText)
			}
		})
	}
}

// sendOnce runs Send directly against an httptest peer.
func sendOnce(t *testing.T, o Options, answer func(int, *seen, http.ResponseWriter) int, data [][]byte) (relay.Result, *peer, *Sink) {
	t.Helper()
	p := newPeer(t, answer)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	o.URL = srv.URL + "/v1/metrics"
	s := mustNew(t, o)
	t.Cleanup(func() { s.Close() })
	return s.Send(context.Background(), records(data)), p, s
}

// TestPoisonBisection: 500 events, 3 of them poison; the peer answers 400 to
// any batch holding one.
func TestPoisonBisection(t *testing.T) {
	poison := []int{17, 250, 251}
	data := envelopes(500, poison...)
	res, p, s := sendOnce(t, Options{}, func(_ int, r *seen, w http.ResponseWriter) int {
		if r.poison {
			return reply(w, 400)
		}
		return reply(w, 200)
	}, data)
	if res.Err != nil || res.Settled != 500 {
		t.Fatalf("result %+v", res)
	}
	var gotDrops []string
	for _, d := range res.Dropped {
		if d.Reason != relay.DropRejected {
			t.Errorf("drop %+v: reason", d)
		}
		if want := idOf(int(d.Seq - 1)); d.ID != want {
			t.Errorf("drop seq %d has id %q, want %q", d.Seq, d.ID, want)
		}
		gotDrops = append(gotDrops, d.ID)
	}
	if want := []string{idOf(17), idOf(250), idOf(251)}; !slices.Equal(gotDrops, want) {
		t.Errorf("dropped %v, want %v", gotDrops, want)
	}
	accepted := p.accepted()
	if len(accepted) != 497 {
		t.Errorf("accepted %d events, want 497", len(accepted))
	}
	for i := range 500 {
		if slices.Contains(poison, i) == slices.Contains(accepted, idOf(i)) {
			t.Errorf("event %d: poison %v, accepted %v", i, slices.Contains(poison, i), slices.Contains(accepted, idOf(i)))
		}
	}
	if !slices.IsSorted(accepted) {
		t.Error("accepted out of order")
	}
	reqs := len(p.requests())
	// Each poison event costs at most two requests per level of a 9-level
	// bisection; one up-front request for the whole.
	if reqs > 1+2*9*len(poison) {
		t.Errorf("%d requests", reqs)
	}
	t.Logf("500 events with 3 poison: %d requests (%d refused), 497 delivered", reqs, countCode(p, 400))
	s.Close()
}

func countCode(p *peer, code int) int {
	n := 0
	for _, r := range p.requests() {
		if r.code == code {
			n++
		}
	}
	return n
}

// TestBisectionEdges pins the decisions the spec leaves to us.
func TestBisectionEdges(t *testing.T) {
	t.Run("single event 400 is dropped as rejected", func(t *testing.T) {
		res, p, _ := sendOnce(t, Options{}, func(int, *seen, http.ResponseWriter) int { return 0 }, nil)
		_ = p
		if res.Settled != 0 || res.Err != nil {
			t.Fatalf("empty batch: %+v", res)
		}
		res, p, _ = sendOnce(t, Options{}, func(_ int, _ *seen, w http.ResponseWriter) int { return reply(w, 400) }, envelopes(1))
		if res.Err != nil || res.Settled != 1 || len(res.Dropped) != 1 || res.Dropped[0].Reason != relay.DropRejected || len(p.requests()) != 1 {
			t.Fatalf("result %+v after %d requests", res, len(p.requests()))
		}
	})
	t.Run("flaky peer: nothing dropped", func(t *testing.T) {
		// Only the first answer is a refusal. Every half is then accepted,
		// and since a single event is dropped only when refused on its own,
		// nothing is dropped; the presumed-poison right halves cost at most
		// one request per level.
		res, p, _ := sendOnce(t, Options{}, func(i int, _ *seen, w http.ResponseWriter) int {
			if i == 0 {
				return reply(w, 400)
			}
			return reply(w, 200)
		}, envelopes(10))
		if res.Err != nil || res.Settled != 10 || len(res.Dropped) != 0 || len(p.accepted()) != 10 {
			t.Fatalf("result %+v; %d accepted", res, len(p.accepted()))
		}
		if n := len(p.requests()); n > 1+2*4 {
			t.Errorf("%d requests for 10 events", n)
		}
	})
	t.Run("right half of a refused batch is split without a request", func(t *testing.T) {
		// 8 events, poison at 6: [0..7] refused, [0..3] accepted, so the
		// poison is in [4..7]: no request for it, nor for [6,7]; [4,5]
		// accepted, [6] refused alone and dropped, [7] accepted.
		res, p, _ := sendOnce(t, Options{}, func(_ int, r *seen, w http.ResponseWriter) int {
			if r.poison {
				return reply(w, 400)
			}
			return reply(w, 200)
		}, envelopes(8, 6))
		if res.Err != nil || res.Settled != 8 || len(res.Dropped) != 1 || res.Dropped[0].ID != idOf(6) {
			t.Fatalf("result %+v", res)
		}
		var got [][]string
		for _, r := range p.requests() {
			got = append(got, r.ids)
		}
		want := [][]string{
			{idOf(0), idOf(1), idOf(2), idOf(3), idOf(4), idOf(5), idOf(6), idOf(7)},
			{idOf(0), idOf(1), idOf(2), idOf(3)},
			{idOf(4), idOf(5)},
			{idOf(6)},
			{idOf(7)},
		}
		if !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("requests %v\nwant %v", got, want)
		}
	})
	t.Run("transient error mid-bisection returns the settled prefix", func(t *testing.T) {
		// 8 events, poison at 1: [0..7] 400, [0..3] 400, [0..1] 400, [0] ok,
		// [1] 400 -> dropped, [2..3] ok, [4..7] 503 -> stop.
		res, p, _ := sendOnce(t, Options{}, func(i int, r *seen, w http.ResponseWriter) int {
			switch {
			case r.poison:
				return reply(w, 400)
			case slices.Contains(r.ids, idOf(4)):
				return reply(w, 503)
			}
			return reply(w, 200)
		}, envelopes(8, 1))
		var se *StatusError
		if res.Settled != 4 || len(res.Dropped) != 1 || res.Dropped[0].Seq != 2 || !errors.As(res.Err, &se) || se.Code != 503 {
			t.Fatalf("result %+v", res)
		}
		if class, _ := relay.Classify(res.Err); class != relay.ClassTransient {
			t.Errorf("class %v", class)
		}
		if got := p.accepted(); !slices.Equal(got, []string{idOf(0), idOf(2), idOf(3)}) {
			t.Errorf("accepted %v", got)
		}
	})
	t.Run("401 mid-split pauses with the prefix settled", func(t *testing.T) {
		res, _, _ := sendOnce(t, Options{}, func(i int, r *seen, w http.ResponseWriter) int {
			switch i {
			case 0:
				return reply(w, 413)
			case 1:
				return reply(w, 200)
			}
			return reply(w, 401)
		}, envelopes(6))
		var pe *relay.PausedError
		if res.Settled != 3 || len(res.Dropped) != 0 || !errors.As(res.Err, &pe) || pe.Reason != PauseUnauthorized {
			t.Fatalf("result %+v", res)
		}
	})
	t.Run("429 carries Retry-After", func(t *testing.T) {
		res, _, _ := sendOnce(t, Options{}, func(_ int, _ *seen, w http.ResponseWriter) int {
			w.Header().Set("Retry-After", "7")
			return reply(w, 429)
		}, envelopes(3))
		class, wait := relay.Classify(res.Err)
		if res.Settled != 0 || class != relay.ClassThrottled || wait != 7*time.Second {
			t.Fatalf("result %+v: %v %s", res, class, wait)
		}
	})
}

// TestSplit413: a peer that refuses more than 100 events per request gets
// everything, in parts of at most 100.
func TestSplit413(t *testing.T) {
	data := envelopes(500)
	res, p, _ := sendOnce(t, Options{}, func(_ int, r *seen, w http.ResponseWriter) int {
		if len(r.ids) > 100 {
			return reply(w, 413)
		}
		return reply(w, 200)
	}, data)
	if res.Err != nil || res.Settled != 500 || len(res.Dropped) != 0 {
		t.Fatalf("result %+v", res)
	}
	want := make([]string, 500)
	for i := range want {
		want[i] = idOf(i)
	}
	if got := p.accepted(); !slices.Equal(got, want) {
		t.Errorf("accepted %d events, not all 500 in order", len(got))
	}
	parts := 0
	for _, r := range p.requests() {
		if r.code == 200 {
			parts++
			if len(r.ids) > 100 {
				t.Errorf("accepted request of %d events", len(r.ids))
			}
		}
	}
	t.Logf("500 events, 413 above 100: %d requests, %d accepted parts", len(p.requests()), parts)
}

// TestChunkingAndOversize: requests respect MaxEvents and MaxBody, are
// filled greedily, and an event that alone exceeds MaxBody is dropped
// without a request.
func TestChunkingAndOversize(t *testing.T) {
	data := make([][]byte, 40)
	for i := range data {
		pad := 0
		if i >= 20 {
			pad = 400 // ~570 bytes: 3 fill a body
		} // else ~170 bytes: 7 fit in a body
		data[i] = testEnvelope(i, false, pad)
	}
	data[13] = testEnvelope(13, false, 3000) // alone > MaxBody
	const maxEvents, maxBody = 7, 2048
	res, p, _ := sendOnce(t, Options{MaxEvents: maxEvents, MaxBody: maxBody, App: "a", Host: "h"}, func(_ int, _ *seen, w http.ResponseWriter) int { return reply(w, 200) }, data)
	if res.Err != nil || res.Settled != 40 || len(res.Dropped) != 1 || res.Dropped[0].ID != idOf(13) || res.Dropped[0].Reason != relay.DropOversize {
		t.Fatalf("result %+v", res)
	}
	reqs := p.requests()
	byEvents, byBytes := 0, 0
	for i, r := range reqs {
		if len(r.ids) > maxEvents || r.size > maxBody {
			t.Errorf("request %d: %d events, %d bytes", i, len(r.ids), r.size)
		}
		if slices.Contains(r.ids, idOf(13)) {
			t.Errorf("oversize event was sent")
		}
		if i == len(reqs)-1 || reqs[i+1].ids[0] == idOf(14) {
			continue
		}
		// Greedy: the next request's first event would not have fitted.
		next := len(reqs[i+1].events[0])
		switch {
		case len(r.ids) == maxEvents:
			byEvents++
		case r.size+1+next > maxBody:
			byBytes++
		default:
			t.Errorf("request %d stopped at %d events, %d bytes, with room for a %d-byte event", i, len(r.ids), r.size, next)
		}
	}
	if byEvents == 0 || byBytes == 0 {
		t.Errorf("cuts by events %d, by bytes %d: the data should exercise both", byEvents, byBytes)
	}
	if got := p.accepted(); len(got) != 39 || !slices.IsSorted(got) {
		t.Errorf("accepted %d, in order %v", len(got), slices.IsSorted(got))
	}
}

// TestBodyOnTheWire: the peer sees app, host, the bearer key, and each
// element of "events" byte-identical to the stored envelope; with gzip on
// it decompresses to the same.
func TestBodyOnTheWire(t *testing.T) {
	data := [][]byte{
		[]byte(`{"id":"a","type":"t","timestamp":"1","gateway":"","data":{"x" : 1.50, "s":"\u00e9"}}`),
		testEnvelope(1, false, 100),
		[]byte(`{"id":"c","type":"t","timestamp":"3","gateway":"","data":{"nested":{"k":[1,2,{"z":null}]}}}`),
	}
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			data := append(data, testEnvelope(99, false, 20000)) // compressible
			res, p, _ := sendOnce(t, Options{Gzip: gz, App: "edge", Host: "node-1"}, func(_ int, _ *seen, w http.ResponseWriter) int { return reply(w, 200) }, data)
			if res.Err != nil || res.Settled != len(data) {
				t.Fatalf("result %+v", res)
			}
			reqs := p.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			r := reqs[0]
			if r.gzip != gz || r.auth != "Bearer "+testKey || r.app != "edge" || r.host != "node-1" {
				t.Errorf("gzip %v auth ok %v app %q host %q", r.gzip, r.auth == "Bearer "+testKey, r.app, r.host)
			}
			if len(r.events) != len(data) {
				t.Fatalf("%d events", len(r.events))
			}
			for i := range data {
				if string(r.events[i]) != string(data[i]) {
					t.Errorf("event %d differs:\n got %s\nwant %s", i, r.events[i], data[i])
				}
			}
			want := `{"app":"edge","host":"node-1","events":[` + string(data[0]) + "," + string(data[1]) + "," + string(data[2]) + "," + string(data[3]) + `]}`
			if string(r.raw) != want {
				t.Error("decoded body is not the exact concatenation")
			}
			if gz && r.size >= len(want)/2 {
				t.Errorf("gzip body %d bytes for %d uncompressed", r.size, len(want))
			}
		})
	}
}

// TestBufferReuse: consecutive Sends reuse the body buffer and the peer
// still sees each batch exactly. Every third full batch is refused with 413
// before the peer reads it, while the client may still be writing, which is
// when a buffer reused too early would be corrupted (and -race would see it).
func TestBufferReuse(t *testing.T) {
	for _, gz := range []bool{false, true} {
		p := newPeer(t, func(_ int, _ *seen, w http.ResponseWriter) int { return reply(w, 200) })
		// Full batches of 6 are ~108 kB (~54 kB gzipped), halves half that.
		threshold := int64(80_000)
		if gz {
			threshold = 40_000
		}
		var full atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > threshold && full.Add(1)%3 == 1 {
				// Answered without reading the body; the server then discards
				// the rest (it is under its 256 kB limit), so the client may
				// still be writing when it reads the answer.
				reply(w, 413)
				return
			}
			p.ServeHTTP(w, r)
		}))
		var logs syncBuffer
		s := mustNew(t, Options{URL: srv.URL, Gzip: gz, Logger: newLogger(&logs)})
		const n = 36
		all := make([][]byte, n)
		for i := range all {
			if gz {
				all[i] = fmt.Appendf(nil, `{"id":"%s","type":"t","timestamp":"1","gateway":"","data":{"r":"%x"}}`, idOf(i), randomish(i, 9_000))
			} else {
				all[i] = testEnvelope(i, false, 18_000+i)
			}
		}
		for b := 0; b < n; b += 6 {
			// Forget the limit the last 413 taught, so that every full batch
			// goes out whole and meets the early 413.
			s.limit = newBodyLimit(s.maxBody)
			res := s.Send(context.Background(), records(all[b:b+6]))
			if res.Err != nil || res.Settled != 6 || len(res.Dropped) != 0 {
				t.Fatalf("gzip=%v batch at %d: %+v", gz, b, res)
			}
		}
		want := make([]string, n)
		for i := range want {
			want[i] = idOf(i)
		}
		if got := p.accepted(); !slices.Equal(got, want) {
			t.Errorf("gzip=%v: accepted %v", gz, got)
		}
		if strings.Contains(logs.String(), "abandoned") {
			t.Logf("gzip=%v: the transport held a body past %s:\n%s", gz, bodyReleaseMax, logs.String())
		}
		for _, r := range p.requests() {
			for k, e := range r.events {
				if n := slices.Index(want, r.ids[k]); string(e) != string(all[n]) {
					t.Errorf("gzip=%v: event %s corrupted on the wire", gz, r.ids[k])
				}
			}
		}
		if full.Load() < 2 {
			t.Errorf("only %d full batches reached the early-413 path", full.Load())
		}
		s.Close()
		srv.Close()
	}
}

// randomish returns n bytes that gzip cannot shrink much.
func randomish(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed*2654435761 + 1)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func TestTLS(t *testing.T) {
	p := newPeer(t, func(_ int, _ *seen, w http.ResponseWriter) int { return reply(w, 200) })
	srv := httptest.NewUnstartedServer(p)
	srv.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	defer srv.Close()
	for _, insecure := range []bool{false, true} {
		stats := relay.NewStats()
		s := mustNew(t, Options{URL: srv.URL + "/v1/metrics", InsecureSkipVerify: insecure, Stats: stats})
		res := s.Send(context.Background(), records(envelopes(2)))
		snap := stats.Snapshot()
		if insecure && (res.Err != nil || snap.Requests["200"] != 1) {
			t.Errorf("insecure: %+v %v", res, snap.Requests)
		}
		if !insecure {
			if class, _ := relay.Classify(res.Err); res.Err == nil || class != relay.ClassTransient || snap.Requests["error"] != 1 {
				t.Errorf("self-signed certificate accepted or misclassified: %+v %v", res, snap.Requests)
			}
		}
		s.Close()
	}
	if tr := s0(t).client.Transport.(*http.Transport); tr.TLSClientConfig.MinVersion != tls.VersionTLS12 || tr.MaxIdleConnsPerHost < 1 || tr.TLSClientConfig.InsecureSkipVerify {
		t.Error("transport: TLS minimum, verification or keep-alive not set")
	}
}

// TestKeyNeverLeaks drives every path that writes a log line or an error
// (401s, a 404, 5xx, poison drops, a transport error, a key file rotation)
// against a peer that echoes the Authorization header back, and greps the
// captured logs, errors and stats for the key.
func TestKeyNeverLeaks(t *testing.T) {
	var logs syncBuffer
	log := newLogger(&logs)
	echo := func(code int, w http.ResponseWriter, auth string) int {
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":"bad request","you_sent":%q,"again":"%s"}`, auth, strings.TrimPrefix(auth, "Bearer "))
		return code
	}
	p := newPeer(t, func(i int, r *seen, w http.ResponseWriter) int {
		switch {
		case i < 2:
			return echo(401, w, r.auth)
		case i == 2:
			return echo(404, w, r.auth)
		case i == 3:
			return echo(503, w, r.auth)
		case i == 4:
			w.Header().Set("Retry-After", "0")
			return echo(429, w, r.auth)
		case r.poison:
			return echo(400, w, r.auth)
		}
		return reply(w, 200)
	})
	var hijacked atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(p.requests()) == 5 && hijacked.CompareAndSwap(false, true) {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
			return
		}
		p.ServeHTTP(w, r)
	}))
	defer srv.Close()

	s := mustNew(t, Options{URL: srv.URL, Logger: log})
	rg := startRig(t, s, rigOptions{probe: 10 * time.Millisecond, backoff: time.Millisecond, logger: log, preloaded: envelopes(12, 3, 9)})
	eventually(t, 10*time.Second, "all settled", rg.settled)
	rg.stop()
	snap, _ := rg.account()
	if snap.Dropped[relay.DropRejected] != 2 || snap.Delivered != 10 {
		t.Errorf("delivered %d, dropped %v", snap.Delivered, snap.Dropped)
	}

	errs := strings.Join(rg.spy.errs, "\n")
	if !strings.Contains(errs, "[redacted]") {
		t.Errorf("the echoed key was not quoted redacted; errors:\n%s", errs)
	}
	everything := logs.String() + errs + fmt.Sprintf("%+v", snap)
	for _, leak := range []string{testKey, testKey[:12], testKey[len(testKey)-12:]} {
		if strings.Contains(everything, leak) {
			t.Errorf("key material %q leaked:\n%s", leak, everything)
		}
	}
	for _, want := range []string{"sink paused", "metrics API refuses the URL", "event dropped", "send failed; retrying"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log line %q missing: the test did not cover that path:\n%s", want, logs.String())
		}
	}
	if codes := slices.Sorted(maps.Keys(snap.Requests)); !slices.Equal(codes, []string{"200", "400", "401", "404", "429", "503", "error"}) {
		t.Errorf("request codes %v", codes)
	}
}

// s0 is a sink with default options.
func s0(t *testing.T) *Sink {
	t.Helper()
	return mustNew(t, Options{URL: "https://metrics.example/v1/metrics", APIKey: "k"})
}
