package relay_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// laneGate is a LaneSink whose Sends each wait until the test opens the gate
// of their batch (keyed by its first seq), then answer what the gate was
// opened with. All its lanes share one state.
type laneGate struct {
	st *laneGateState
}

type laneGateState struct {
	mu       sync.Mutex
	gates    map[uint64]chan relay.Result
	calls    [][]uint64 // batches in the order Send began
	inflight int
	peak     int  // most Sends at once
	lanes    int  // Lane calls
	deaf     bool // Sends wait for their gate even after ctx ends
}

func newLaneGate() *laneGate {
	return &laneGate{st: &laneGateState{gates: map[uint64]chan relay.Result{}}}
}

func (g *laneGate) Lane() relay.Sink {
	g.st.mu.Lock()
	g.st.lanes++
	g.st.mu.Unlock()
	return &laneGate{st: g.st}
}

func (g *laneGate) gate(first uint64) chan relay.Result {
	if g.st.gates[first] == nil {
		g.st.gates[first] = make(chan relay.Result, 1)
	}
	return g.st.gates[first]
}

// open lets the Send of the batch starting at first answer res.
func (g *laneGate) open(first uint64, res relay.Result) {
	g.st.mu.Lock()
	ch := g.gate(first)
	g.st.mu.Unlock()
	ch <- res
}

func (g *laneGate) Send(ctx context.Context, recs []spool.Record) relay.Result {
	var seqs []uint64
	for _, r := range recs {
		seqs = append(seqs, r.Seq)
	}
	g.st.mu.Lock()
	g.st.calls = append(g.st.calls, seqs)
	g.st.inflight++
	g.st.peak = max(g.st.peak, g.st.inflight)
	ch := g.gate(seqs[0])
	g.st.mu.Unlock()
	defer func() {
		g.st.mu.Lock()
		g.st.inflight--
		delete(g.st.gates, seqs[0])
		g.st.mu.Unlock()
	}()
	done := ctx.Done()
	if g.st.deaf {
		done = nil
	}
	select {
	case res := <-ch:
		if res.Err == nil && res.Settled == 0 {
			res.Settled = len(recs)
		}
		return res
	case <-done:
		return relay.Result{Err: ctx.Err()}
	}
}

// Calls returns the batches sent so far, sorted by their first seq: lanes
// start their Sends in any order.
func (g *laneGate) Calls() string {
	g.st.mu.Lock()
	defer g.st.mu.Unlock()
	calls := slices.Clone(g.st.calls)
	slices.SortStableFunc(calls, func(a, b []uint64) int { return cmp.Compare(a[0], b[0]) })
	return fmt.Sprint(calls)
}

func (g *laneGate) Peak() int {
	g.st.mu.Lock()
	defer g.st.mu.Unlock()
	return g.st.peak
}

// startLanes starts a forwarder of batches of 2 on 3 lanes of a laneGate
// (tune may change more) over n records, and waits until its first Sends
// are out.
func startLanes(t *testing.T, n int, tune func(*relay.Forwarder)) (*laneGate, *rig) {
	t.Helper()
	sink := newLaneGate()
	r := newRig(t, sink, func(f *relay.Forwarder) {
		f.Batch, f.Inflight = 2, 3
		if tune != nil {
			tune(f)
		}
	})
	r.add(n)
	r.start()
	synctest.Wait()
	return sink, r
}

// Three batches go out at once on three lanes; they are acknowledged in
// order whatever order they finish in, and the accounting holds at every
// step.
func TestForwarderPipelinedAcksInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink, r := startLanes(t, 8, nil)
		if got := sink.Calls(); got != "[[1 2] [3 4] [5 6]]" || sink.Peak() != 3 || sink.st.lanes != 2 {
			t.Fatalf("in flight %s, peak %d, lanes %d; want the first three batches at once on 2 extra lanes", got, sink.Peak(), sink.st.lanes)
		}

		sink.open(3, relay.Result{}) // the second finishes first
		synctest.Wait()
		if _, ss := r.check(); ss.Cursor != 0 {
			t.Fatalf("cursor %d after only the second batch finished; want 0 (in order)", ss.Cursor)
		}
		sink.open(5, relay.Result{})
		synctest.Wait()
		if _, ss := r.check(); ss.Cursor != 0 {
			t.Fatalf("cursor %d with the first batch still in flight", ss.Cursor)
		}
		sink.open(1, relay.Result{})
		synctest.Wait()
		if snap, ss := r.check(); ss.Cursor != 6 || snap.Delivered != 6 {
			t.Fatalf("after the first batch: cursor %d delivered %d; want 6, 6", ss.Cursor, snap.Delivered)
		}
		if got := sink.Calls(); got != "[[1 2] [3 4] [5 6] [7 8]]" {
			t.Fatalf("calls %s; want the last batch sent once lanes freed", got)
		}
		sink.open(7, relay.Result{})
		synctest.Wait()
		if snap, ss := r.check(); ss.Pending != 0 || snap.Delivered != 8 {
			t.Fatalf("at the end: %+v %+v", snap, ss)
		}
	})
}

// A slow answer holds back the acknowledgements behind it, not the lanes:
// while the oldest batch is out, each lane that finishes takes the next
// batch, up to twice Inflight batches unsettled; nothing is acknowledged
// past the slow one until it is answered, and then all at once, in order.
func TestForwarderSlowHeadHoldsAcksNotLanes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink, r := startLanes(t, 16, nil)
		sink.open(3, relay.Result{})
		synctest.Wait()
		if got := sink.Calls(); got != "[[1 2] [3 4] [5 6] [7 8]]" {
			t.Fatalf("calls %s; want [7 8] sent once the second lane was free, the first batch still out", got)
		}
		sink.open(5, relay.Result{})
		sink.open(7, relay.Result{})
		synctest.Wait()
		if got := sink.Calls(); got != "[[1 2] [3 4] [5 6] [7 8] [9 10] [11 12]]" {
			t.Fatalf("calls %s; want two more batches, six unsettled", got)
		}
		sink.open(9, relay.Result{})
		synctest.Wait()
		if got := sink.Calls(); got != "[[1 2] [3 4] [5 6] [7 8] [9 10] [11 12]]" {
			t.Fatalf("calls %s; want no seventh unsettled batch while the first is out", got)
		}
		if snap, ss := r.check(); ss.Cursor != 0 || snap.Delivered != 0 {
			t.Fatalf("cursor %d, delivered %d with the first batch out; want 0, 0", ss.Cursor, snap.Delivered)
		}
		if p := sink.Peak(); p != 3 {
			t.Fatalf("peak %d Sends at once; want Inflight, 3", p)
		}
		sink.open(1, relay.Result{})
		synctest.Wait()
		if snap, ss := r.check(); ss.Cursor != 10 || snap.Delivered != 10 {
			t.Fatalf("after the first batch: cursor %d, delivered %d; want 10, 10", ss.Cursor, snap.Delivered)
		}
		if got := sink.Calls(); got != "[[1 2] [3 4] [5 6] [7 8] [9 10] [11 12] [13 14] [15 16]]" {
			t.Fatalf("calls %s; want the window open again", got)
		}
		for _, first := range []uint64{11, 13, 15} {
			sink.open(first, relay.Result{})
		}
		synctest.Wait()
		if snap, ss := r.check(); ss.Pending != 0 || snap.Delivered != 16 || sink.Peak() != 3 {
			t.Fatalf("at the end: delivered %d, pending %d, peak %d; want 16, 0, 3", snap.Delivered, ss.Pending, sink.Peak())
		}
	})
}

// A batch that fails while later ones succeed: nothing past its settled
// part is acknowledged; after the backoff the rest is read again and sent
// alone, then the window opens again. Every record is counted once.
func TestForwarderPipelinedFailureGoesBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		sink, r := startLanes(t, 10, func(f *relay.Forwarder) { f.NewBackOff = constant(time.Second) })
		sink.open(3, relay.Result{})
		sink.open(5, relay.Result{})
		synctest.Wait()
		if got := sink.Calls(); got != "[[1 2] [3 4] [5 6] [7 8] [9 10]]" {
			t.Fatalf("calls %s; want the freed lanes to take the next batches", got)
		}
		sink.open(7, relay.Result{})
		sink.open(9, relay.Result{})
		synctest.Wait()
		sink.open(1, relay.Result{Settled: 1, Err: errors.New("http 503")})
		synctest.Wait()
		snap, ss := r.check()
		if ss.Cursor != 1 || snap.Delivered != 1 || snap.Retries["transient"] != 1 {
			t.Fatalf("after the failure: cursor %d, delivered %d, retries %v; want 1, 1, transient 1", ss.Cursor, snap.Delivered, snap.Retries)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := sink.Calls(); got != "[[1 2] [2 3] [3 4] [5 6] [7 8] [9 10]]" || time.Since(t0) != time.Second {
			t.Fatalf("calls %s at +%s; want the rest sent again alone after the 1 s backoff", got, time.Since(t0))
		}
		sink.open(2, relay.Result{})
		synctest.Wait()
		if got := sink.Calls(); got != "[[1 2] [2 3] [3 4] [4 5] [5 6] [6 7] [7 8] [8 9] [9 10]]" {
			t.Fatalf("calls %s; want the window open again after the success", got)
		}
		for _, first := range []uint64{4, 6, 8} {
			sink.open(first, relay.Result{})
		}
		synctest.Wait()
		sink.open(10, relay.Result{})
		synctest.Wait()
		if snap, ss := r.check(); ss.Pending != 0 || snap.Delivered != 10 || snap.DroppedTotal() != 0 {
			t.Fatalf("at the end: delivered %d, dropped %d, pending %d; want 10, 0, 0", snap.Delivered, snap.DroppedTotal(), ss.Pending)
		}
	})
}

// While batches are in flight a partial batch is held back (it may fill);
// with nothing in flight it goes after the linger, as with one lane.
func TestForwarderPipelinedHoldsPartialBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newLaneGate()
		r := newRig(t, sink, func(f *relay.Forwarder) {
			f.Batch, f.Inflight, f.Linger = 4, 3, time.Second
		})
		t0 := time.Now()
		r.add(6)
		r.start()
		synctest.Wait()
		if got := sink.Calls(); got != "[[1 2 3 4]]" {
			t.Fatalf("calls %s; want only the full batch while it is in flight", got)
		}
		r.add(2) // fills the partial batch
		synctest.Wait()
		if got := sink.Calls(); got != "[[1 2 3 4] [5 6 7 8]]" {
			t.Fatalf("calls %s; want the batch sent once full", got)
		}
		r.add(1)
		sink.open(1, relay.Result{})
		sink.open(5, relay.Result{})
		synctest.Wait()
		if got := sink.Calls(); got != "[[1 2 3 4] [5 6 7 8]]" {
			t.Fatalf("calls %s; want the single record lingering", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := sink.Calls(); got != "[[1 2 3 4] [5 6 7 8] [9]]" || time.Since(t0) != time.Second {
			t.Fatalf("calls %s at +%s; want [9] after the 1 s linger", got, time.Since(t0))
		}
		sink.open(9, relay.Result{})
		synctest.Wait()
		if snap, ss := r.check(); ss.Pending != 0 || snap.Delivered != 9 {
			t.Fatalf("at the end: %+v %+v", snap, ss)
		}
	})
}

// Cancelling Run with batches in flight: Run returns once every Send has,
// acknowledging in order what was settled before the first that was not;
// the rest stays pending.
func TestForwarderPipelinedCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink, r := startLanes(t, 6, nil)
		sink.open(1, relay.Result{})
		sink.open(5, relay.Result{})
		synctest.Wait()
		r.cancel()
		<-r.done
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("Run = %v", r.err)
		}
		if snap, ss := r.check(); ss.Cursor != 2 || snap.Delivered != 2 || ss.Pending != 4 {
			t.Fatalf("after cancel: cursor %d delivered %d pending %d; want 2, 2, 4", ss.Cursor, snap.Delivered, ss.Pending)
		}
	})
}

// Cancelling Run while the batches are still being sent: they all succeed
// after Run stopped waiting, and the first one's acknowledgement fails. None
// behind it is acknowledged either (an ack covers every record up to its
// seq, so acknowledging the second would take the first's records out of
// the spool without counting them), and the identity holds.
func TestForwarderPipelinedCancelAckError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newLaneGate()
		sink.st.deaf = true
		r := newRig(t, sink, func(f *relay.Forwarder) {
			f.Batch, f.Inflight = 2, 3
			f.Queue = &faultyQueue{Queue: f.Queue, ackErrs: []error{errors.New("spool: closed")}}
		})
		r.add(6)
		r.start()
		synctest.Wait()
		r.cancel()
		synctest.Wait() // Run waits for the Sends in flight
		if r.returned() {
			t.Fatal("Run returned with Sends in flight")
		}
		for _, first := range []uint64{1, 3, 5} {
			sink.open(first, relay.Result{})
		}
		<-r.done
		if snap, ss := r.check(); ss.Cursor != 0 || snap.Delivered != 0 || ss.Pending != 6 {
			t.Fatalf("after a failed ack on cancel: cursor %d delivered %d pending %d; want 0, 0, 6", ss.Cursor, snap.Delivered, ss.Pending)
		}
	})
}

// A sink that is not a LaneSink keeps one batch in flight whatever
// Inflight says.
func TestForwarderInflightNeedsLanes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newScriptSink(blockUntilDone)
		r := newRig(t, sink, func(f *relay.Forwarder) { f.Batch, f.Inflight = 2, 4 })
		r.add(6)
		r.start()
		synctest.Wait()
		if n := len(sink.Calls()); n != 1 {
			t.Fatalf("%d Sends at once to a sink without lanes; want 1", n)
		}
	})
}
