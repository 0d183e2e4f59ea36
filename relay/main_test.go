package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/goleak"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sinkName is the one sink every rig registers in its spool.
const sinkName = "test"

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// sendCall is what the scripted sink saw in one Send.
type sendCall struct {
	At    time.Time // time.Now() when Send began (virtual inside a bubble)
	Seqs  []uint64
	Bytes int
}

// step is one scripted answer of the sink.
type step func(ctx context.Context, recs []spool.Record) relay.Result

// ret answers res, whatever the batch.
func ret(res relay.Result) step {
	return func(context.Context, []spool.Record) relay.Result { return res }
}

// failWith answers err with nothing settled.
func failWith(err error) step { return ret(relay.Result{Err: err}) }

// blockUntilDone waits for ctx and reports its error, as a sink must.
func blockUntilDone(ctx context.Context, _ []spool.Record) relay.Result {
	<-ctx.Done()
	return relay.Result{Err: ctx.Err()}
}

// scriptSink answers each Send with the next step of its script, then with
// then (Done when nil), and records every batch it was given.
type scriptSink struct {
	mu    sync.Mutex
	steps []step
	then  step
	calls []sendCall
}

func newScriptSink(steps ...step) *scriptSink { return &scriptSink{steps: steps} }

func (s *scriptSink) Send(ctx context.Context, recs []spool.Record) relay.Result {
	c := sendCall{At: time.Now()}
	for _, r := range recs {
		c.Seqs = append(c.Seqs, r.Seq)
		c.Bytes += len(r.Data)
	}
	s.mu.Lock()
	s.calls = append(s.calls, c)
	st := s.then
	if len(s.steps) > 0 {
		st, s.steps = s.steps[0], s.steps[1:]
	}
	s.mu.Unlock()
	if st == nil {
		return relay.Done(len(recs))
	}
	return st(ctx, recs)
}

// Calls returns a copy of the batches seen so far.
func (s *scriptSink) Calls() []sendCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sendCall(nil), s.calls...)
}

// scriptBackOff returns its durations in order, repeating the last; Reset
// starts again from the first and is counted.
type scriptBackOff struct {
	mu     sync.Mutex
	ds     []time.Duration
	i      int
	resets int
}

func (b *scriptBackOff) NextBackOff() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.ds[min(b.i, len(b.ds)-1)]
	b.i++
	return d
}

func (b *scriptBackOff) Reset() {
	b.mu.Lock()
	b.i = 0
	b.resets++
	b.mu.Unlock()
}

func (b *scriptBackOff) Resets() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.resets
}

// constant returns a NewBackOff that always waits d.
func constant(d time.Duration) func() backoff.BackOff {
	return func() backoff.BackOff { return backoff.NewConstantBackOff(d) }
}

// rig is a forwarder from a memory spool to a sink, with its outcome.
type rig struct {
	t      *testing.T
	mem    *spool.Memory
	stats  *relay.Stats
	f      *relay.Forwarder
	next   int // number of the next appended record
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned
	err    error         // what Run returned; read after done
	endAt  time.Time     // when Run returned
}

// newRig builds and Inits a forwarder to sink over a fresh memory spool;
// tune may set its fields before Init.
func newRig(t *testing.T, sink relay.Sink, tune func(*relay.Forwarder)) *rig {
	t.Helper()
	return newRigCap(t, 0, sink, tune)
}

// newRigCap is newRig over a memory spool capped at maxBytes of records.
func newRigCap(t *testing.T, maxBytes int64, sink relay.Sink, tune func(*relay.Forwarder)) *rig {
	t.Helper()
	mem := spool.NewMemory(maxBytes)
	if err := mem.AddSink(sinkName); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, mem: mem, stats: relay.NewStats(), next: 1}
	r.f = &relay.Forwarder{
		Name:   sinkName,
		Sink:   sink,
		Queue:  mem,
		Stats:  r.stats,
		Logger: testLogger(t),
	}
	if tune != nil {
		tune(r.f)
	}
	r.f.Init()
	return r
}

// start runs the forwarder in a goroutine; the test's cleanup cancels it and
// waits for it.
func (r *rig) start() {
	ctx, cancel := context.WithCancel(r.t.Context())
	r.startCtx(ctx, cancel)
}

func (r *rig) startCtx(ctx context.Context, cancel context.CancelFunc) {
	r.cancel = cancel
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		r.err = r.f.Run(ctx)
		r.endAt = time.Now()
	}()
	r.t.Cleanup(func() {
		cancel()
		<-r.done
	})
}

// returned reports whether Run has returned, without waiting.
func (r *rig) returned() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// add appends n records "rec-0001"... numbered on from the last ones.
func (r *rig) add(n int) {
	r.t.Helper()
	data := make([][]byte, n)
	for i := range data {
		data[i] = fmt.Appendf(nil, "rec-%04d", r.next)
		r.next++
	}
	r.appendData(data...)
}

// addSized appends one record of each given size.
func (r *rig) addSized(sizes ...int) {
	r.t.Helper()
	data := make([][]byte, len(sizes))
	for i, n := range sizes {
		data[i] = make([]byte, n)
		for j := range data[i] {
			data[i][j] = 'a' + byte(r.next%26)
		}
		r.next++
	}
	r.appendData(data...)
}

func (r *rig) appendData(data ...[]byte) {
	r.t.Helper()
	if err := r.mem.Append(data); err != nil {
		r.t.Fatal(err)
	}
}

// check fails the test unless, at rest, received = delivered + dropped +
// pending (+ evicted) and the spool's acked count is exactly what Stats
// counted; it returns both sides.
func (r *rig) check() (relay.Snapshot, spool.SinkStat) {
	r.t.Helper()
	return checkIdentity(r.t, r.stats, r.mem)
}

func checkIdentity(t testing.TB, stats *relay.Stats, mem *spool.Memory) (relay.Snapshot, spool.SinkStat) {
	t.Helper()
	snap := stats.Snapshot()
	ss, err := mem.SinkStat(sinkName)
	if err != nil {
		t.Fatalf("SinkStat: %v", err)
	}
	if ss.Received != snap.Delivered+snap.DroppedTotal()+ss.Pending+ss.Evicted {
		t.Fatalf("received %d != delivered %d + dropped %d + pending %d + evicted %d",
			ss.Received, snap.Delivered, snap.DroppedTotal(), ss.Pending, ss.Evicted)
	}
	if ss.Acked != snap.Delivered+snap.DroppedTotal() {
		t.Fatalf("spool acked %d != delivered %d + dropped %d", ss.Acked, snap.Delivered, snap.DroppedTotal())
	}
	if r := relay.Account("test", snap, ss); !r.Balanced || r.Pending != ss.Pending {
		t.Fatalf("report %+v, spool pending %d", r, ss.Pending)
	}
	return snap, ss
}

// seqs returns from..to.
func seqs(from, to uint64) []uint64 {
	var s []uint64
	for q := from; q <= to; q++ {
		s = append(s, q)
	}
	return s
}

// wantCalls fails unless the sink saw exactly these batches, each at the
// given offset from t0.
func wantCalls(t testing.TB, got []sendCall, t0 time.Time, want ...wantCall) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("sink got %d Sends %s, want %d", len(got), fmtCalls(got, t0), len(want))
	}
	for i, w := range want {
		if at := got[i].At.Sub(t0); at != w.at || fmt.Sprint(got[i].Seqs) != fmt.Sprint(w.seqs) {
			t.Fatalf("Send %d: seqs %v at +%s, want %v at +%s (all: %s)", i, got[i].Seqs, at, w.seqs, w.at, fmtCalls(got, t0))
		}
	}
}

type wantCall struct {
	at   time.Duration
	seqs []uint64
}

func fmtCalls(calls []sendCall, t0 time.Time) string {
	s := "["
	for i, c := range calls {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%v@+%s", c.Seqs, c.At.Sub(t0))
	}
	return s + "]"
}
