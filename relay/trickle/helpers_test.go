package trickle

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/trickle/trickletest"
	"github.com/livepeer/edgerelay/spool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const sinkName = "trickle"

func newFake(t testing.TB, opts trickletest.Options) *trickletest.Server {
	t.Helper()
	srv, err := trickletest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// envelope returns a realistic envelope, stamped as spec/envelope.md says.
func testEnvelope(i int) []byte {
	id := uuid.Must(uuid.NewV7()).String()
	ts := strconv.FormatInt(1767908945000+int64(i), 10)
	return fmt.Appendf(nil, `{"id":%q,"type":"gpu_memory_sample","timestamp":%q,"gateway":"","data":{"type":"gpu_memory_sample","client_source":"edgerelay","gpu_id":"GPU-5a1c","node_id":"node-1","memory_used_bytes":%d,"memory_total_bytes":85899345920,"seq":%d}}`,
		id, ts, 1<<30+i, i)
}

func envelopes(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = testEnvelope(i)
	}
	return out
}

// ackQueue is a memory spool with one sink whose acknowledgements a test
// can wait for instead of sleeping.
type ackQueue struct {
	*spool.Memory
	stats *relay.Stats // the forwarder's; set by newPublisher

	mu    sync.Mutex
	acked uint64
	wake  chan struct{}
}

func newSpool(t testing.TB) *ackQueue {
	t.Helper()
	mem := spool.NewMemory(0)
	if err := mem.AddSink(sinkName); err != nil {
		t.Fatal(err)
	}
	return &ackQueue{Memory: mem, wake: make(chan struct{})}
}

func (c *ackQueue) AckFrom(sink string, seq uint64) (uint64, error) {
	prev, err := c.Memory.AckFrom(sink, seq)
	if err != nil {
		return prev, err
	}
	c.mu.Lock()
	c.acked = max(c.acked, seq)
	close(c.wake)
	c.wake = make(chan struct{})
	c.mu.Unlock()
	return prev, nil
}

func (c *ackQueue) append(t testing.TB, recs ...[]byte) {
	t.Helper()
	if err := c.Append(recs); err != nil {
		t.Fatal(err)
	}
}

// waitAcked blocks until records up to seq are acknowledged.
func (c *ackQueue) waitAcked(t testing.TB, ctx context.Context, seq uint64) {
	t.Helper()
	for {
		c.mu.Lock()
		acked, wake := c.acked, c.wake
		c.mu.Unlock()
		if acked >= seq {
			// The forwarder counts what it acked right after the ack.
			for c.stats != nil && c.settled() < seq {
				runtime.Gosched()
			}
			return
		}
		select {
		case <-wake:
		case <-ctx.Done():
			t.Fatalf("records up to %d not acknowledged (at %d): %v", seq, acked, ctx.Err())
		}
	}
}

// settled is what the forwarder counted, delivered or dropped.
func (c *ackQueue) settled() uint64 {
	st := c.stats.Snapshot()
	return st.Delivered + st.DroppedTotal()
}

func (c *ackQueue) pending(t testing.TB) uint64 {
	t.Helper()
	st, err := c.SinkStat(sinkName)
	if err != nil {
		t.Fatal(err)
	}
	return st.Pending
}

// fastBackOff keeps tests that run on real time short.
func fastBackOff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 5 * time.Millisecond
	b.MaxInterval = 50 * time.Millisecond
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// running is a Run in its own goroutine, owned by the test.
type running struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func start(t testing.TB, run func(ctx context.Context) error) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = run(ctx)
	}()
	t.Cleanup(r.stop)
	return r
}

// stop cancels the Run and waits for it.
func (r *running) stop() {
	r.cancel()
	<-r.done
}

// wait waits for Run to return by itself and returns its error.
func (r *running) wait(t testing.TB, ctx context.Context) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		t.Fatal("Run did not return")
		return nil
	}
}

// startPublisher runs a publisher as the agent does: behind the one
// delivery loop, a relay.Forwarder over q that the publisher tunes; tune
// may change the forwarder's fields after that.
func startPublisher(t testing.TB, opts PublisherOptions, q *ackQueue, tune ...func(*relay.Forwarder)) (*Publisher, *running) {
	t.Helper()
	p, f := newPublisher(t, opts, q, tune...)
	return p, start(t, f.Run)
}

func newPublisher(t testing.TB, opts PublisherOptions, q *ackQueue, tune ...func(*relay.Forwarder)) (*Publisher, *relay.Forwarder) {
	t.Helper()
	if opts.Stats == nil {
		opts.Stats = relay.NewStats()
	}
	f := &relay.Forwarder{Name: sinkName, Queue: q, Stats: opts.Stats}
	q.stats = opts.Stats
	opts.Alive = f.Alive
	p, err := NewPublisher(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.Sink = p
	p.Tune(f)
	for _, fn := range tune {
		fn(f)
	}
	f.Init()
	return p, f
}

type frame struct {
	Type  string          `json:"type"`
	Event json.RawMessage `json:"event"`
}

// readLines reads segment bodies as a JSON-lines reader does: one message
// per line, each decoded on its own.
func readLines(t testing.TB, segs map[int][]byte) []frame {
	t.Helper()
	var out []frame
	for _, seq := range sortedSeqs(segs) {
		sc := bufio.NewScanner(bytes.NewReader(segs[seq]))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var f frame
			if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
				t.Fatalf("segment %d: line %q: %v", seq, sc.Bytes(), err)
			}
			out = append(out, f)
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func sortedSeqs(segs map[int][]byte) []int {
	seqs := make([]int, 0, len(segs))
	for s := range segs {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	return seqs
}

func postsOf(log []trickletest.Request) []trickletest.Request {
	var out []trickletest.Request
	for _, r := range log {
		if r.Method == "POST" && r.Seq != "" {
			out = append(out, r)
		}
	}
	return out
}

// checkNoRePost asserts the publisher never POSTed a seq twice.
func checkNoRePost(t testing.TB, log []trickletest.Request) {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range postsOf(log) {
		if seen[r.Seq] {
			t.Fatalf("seq %s POSTed twice: %+v", r.Seq, log)
		}
		if r.Dropped {
			t.Fatalf("the server dropped a re-POST: %+v", r)
		}
		seen[r.Seq] = true
	}
}

// flakyDialer dials through the fake server and can be told to break the
// connections it made and fail the next dials.
type flakyDialer struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	fail  atomic.Int32 // dials left to fail
	mu    sync.Mutex
	conns []net.Conn
	dials atomic.Int32
}

func (d *flakyDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.dials.Add(1)
	if d.fail.Add(-1) >= 0 {
		return nil, errors.New("flaky dialer: refused")
	}
	d.fail.Store(0)
	c, err := d.dial(ctx, network, addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

// breakNext closes every connection made so far and fails the next n dials.
func (d *flakyDialer) breakNext(n int) {
	d.fail.Store(int32(n))
	d.mu.Lock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
	d.mu.Unlock()
}
