package httpsink

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/goleak"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testKey = "sk-test-7f3a9c2e5b1d4f60"

// envelope returns one stored envelope. poison marks it for peers that
// refuse such events; pad adds that many bytes of payload.
func testEnvelope(i int, poison bool, pad int) []byte {
	p := ""
	if poison {
		p = `,"poison":true`
	}
	return fmt.Appendf(nil, `{"id":"ev-%06d","type":"gpu_memory_sample","timestamp":"1767908945%03d","gateway":"","data":{"type":"gpu_memory_sample","client_source":"edgerelay","n":%d%s,"pad":"%s"}}`,
		i, i%1000, i, p, strings.Repeat("x", pad))
}

func envelopes(n int, poisonAt ...int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = testEnvelope(i, slices.Contains(poisonAt, i), 0)
	}
	return out
}

func idOf(i int) string { return fmt.Sprintf("ev-%06d", i) }

func records(data [][]byte) []spool.Record {
	recs := make([]spool.Record, len(data))
	for i, d := range data {
		recs[i] = spool.Record{Seq: uint64(i + 1), Data: d}
	}
	return recs
}

// seen is one request as the fake peer decoded it.
type seen struct {
	at     time.Time
	auth   string
	gzip   bool
	size   int // body bytes on the wire
	raw    []byte
	app    string
	host   string
	events []json.RawMessage
	ids    []string
	poison bool
	code   int
}

// peer is a fake metrics API. answer decides each reply; a 2xx records the
// events as delivered. It is safe for concurrent use.
type peer struct {
	t      testing.TB
	answer func(n int, r *seen, w http.ResponseWriter) int // n counts requests from 0

	mu        sync.Mutex
	reqs      []*seen
	delivered []string // ids in the order accepted
}

func newPeer(t testing.TB, answer func(n int, r *seen, w http.ResponseWriter) int) *peer {
	return &peer{t: t, answer: answer}
}

func (p *peer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return // aborted by the client
	}
	s := &seen{at: time.Now(), auth: r.Header.Get("Authorization"), size: len(raw), raw: raw}
	body := raw
	if r.Header.Get("Content-Encoding") == "gzip" {
		s.gzip = true
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			p.t.Errorf("peer: gzip: %v", err)
			w.WriteHeader(400)
			return
		}
		if body, err = io.ReadAll(zr); err != nil {
			p.t.Errorf("peer: gunzip: %v", err)
		}
		s.raw = body
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		p.t.Errorf("peer: %s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
	}
	var wrapper struct {
		App    string            `json:"app"`
		Host   string            `json:"host"`
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &wrapper); err != nil {
		p.t.Errorf("peer: body is not the wrapper: %v", err)
	}
	s.app, s.host, s.events = wrapper.App, wrapper.Host, wrapper.Events
	for _, e := range wrapper.Events {
		var env struct {
			ID   string `json:"id"`
			Data struct {
				Poison bool `json:"poison"`
			} `json:"data"`
		}
		if err := json.Unmarshal(e, &env); err != nil {
			p.t.Errorf("peer: event: %v", err)
		}
		s.ids = append(s.ids, env.ID)
		s.poison = s.poison || env.Data.Poison
	}
	p.mu.Lock()
	n := len(p.reqs)
	p.reqs = append(p.reqs, s)
	p.mu.Unlock()

	code := p.answer(n, s, w)
	p.mu.Lock()
	s.code = code
	if code >= 200 && code <= 299 {
		p.delivered = append(p.delivered, s.ids...)
	}
	p.mu.Unlock()
}

// requests returns copies of the requests seen so far.
func (p *peer) requests() []*seen {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*seen, len(p.reqs))
	for i, r := range p.reqs {
		c := *r
		out[i] = &c
	}
	return out
}

func (p *peer) accepted() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.delivered)
}

// reply writes code with a small JSON body and returns it.
func reply(w http.ResponseWriter, code int) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if code != http.StatusNoContent {
		fmt.Fprintf(w, `{"status":%q}`, http.StatusText(code))
	}
	return code
}

// spy wraps the sink to record what each Send reported.
type spy struct {
	inner relay.Sink

	mu      sync.Mutex
	dropped []relay.Drop
	errs    []string
}

func (s *spy) Send(ctx context.Context, recs []spool.Record) relay.Result {
	res := s.inner.Send(ctx, recs)
	s.mu.Lock()
	s.dropped = append(s.dropped, res.Dropped...)
	if res.Err != nil {
		s.errs = append(s.errs, res.Err.Error())
	}
	s.mu.Unlock()
	return res
}

func (s *spy) drops() []relay.Drop {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.dropped)
}

// rig runs a Sink behind a relay.Forwarder over a memory spool, as the
// agent will.
type rig struct {
	t     testing.TB
	mem   *spool.Memory
	stats *relay.Stats
	sink  *Sink
	spy   *spy
	fwd   *relay.Forwarder

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type rigOptions struct {
	linger    time.Duration
	probe     time.Duration
	backoff   time.Duration // constant backoff; 0 means the forwarder's default
	watchKey  bool
	logger    *slog.Logger
	preloaded [][]byte // appended before the forwarder starts
}

const sinkName = "http"

func startRig(t testing.TB, s *Sink, o rigOptions) *rig {
	t.Helper()
	r := &rig{t: t, mem: spool.NewMemory(0), stats: s.stats, sink: s, spy: &spy{inner: s}}
	if err := r.mem.AddSink(sinkName); err != nil {
		t.Fatal(err)
	}
	if len(o.preloaded) > 0 {
		r.append(o.preloaded)
	}
	r.fwd = &relay.Forwarder{
		Name:          sinkName,
		Sink:          r.spy,
		Queue:         r.mem,
		Stats:         r.stats,
		Linger:        o.linger,
		ProbeInterval: o.probe,
		Logger:        o.logger,
	}
	if o.backoff > 0 {
		r.fwd.NewBackOff = func() backoff.BackOff { return backoff.NewConstantBackOff(o.backoff) }
	}
	s.Tune(r.fwd) // as the agent does
	r.fwd.Init()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	t.Cleanup(r.stop)
	r.wg.Go(func() { r.fwd.Run(ctx) })
	if o.watchKey {
		r.wg.Go(func() { s.WatchKey(ctx) })
	}
	return r
}

func (r *rig) append(data [][]byte) {
	r.t.Helper()
	if err := r.mem.Append(data); err != nil {
		r.t.Fatal(err)
	}
}

// stop ends the forwarder and waits for it; it is safe to call twice.
func (r *rig) stop() {
	r.cancel()
	r.wg.Wait()
	r.sink.Close()
}

// account returns the stats and the spool's view of the sink at rest (no
// Send in flight), and checks the accounting identity both ways.
func (r *rig) account() (relay.Snapshot, spool.SinkStat) {
	r.t.Helper()
	snap := r.stats.Snapshot()
	st, err := r.mem.SinkStat(sinkName)
	if err != nil {
		r.t.Error(err)
	}
	if rep := relay.Account("http", snap, st); !rep.Balanced || rep.Pending != st.Pending {
		r.t.Errorf("report %+v, spool pending %d", rep, st.Pending)
	}
	if st.Received != snap.Delivered+snap.DroppedTotal()+st.Pending+st.Evicted {
		r.t.Errorf("accounting: received %d != delivered %d + dropped %d + pending %d + evicted %d",
			st.Received, snap.Delivered, snap.DroppedTotal(), st.Pending, st.Evicted)
	}
	if st.Acked != snap.Delivered+snap.DroppedTotal() {
		r.t.Errorf("accounting: spool acked %d != delivered %d + dropped %d", st.Acked, snap.Delivered, snap.DroppedTotal())
	}
	return snap, st
}

// settled reports whether nothing is pending for the sink and the stats
// have counted every acknowledgement: the forwarder counts a batch just
// after the spool takes its ack, so the spool alone can read 0 pending a
// moment before the stats say delivered.
func (r *rig) settled() bool {
	snap := r.stats.Snapshot()
	st, err := r.mem.SinkStat(sinkName)
	return err == nil && st.Pending == 0 && st.Acked == snap.Delivered+snap.DroppedTotal()
}

// eventually polls cond in real time until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// pipeNet is an in-memory network for tests inside a synctest bubble:
// net.Pipe connections block durably, so virtual time advances while the
// client and server wait on each other.
type pipeNet struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeNet() *pipeNet {
	return &pipeNet{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (p *pipeNet) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

func (p *pipeNet) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

func (p *pipeNet) Addr() net.Addr { return pipeAddr{} }

func (p *pipeNet) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	c, s := net.Pipe()
	select {
	case p.conns <- s:
		return c, nil
	case <-ctx.Done():
		c.Close()
		s.Close()
		return nil, ctx.Err()
	case <-p.done:
		c.Close()
		s.Close()
		return nil, net.ErrClosed
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// servePipe serves h on a pipeNet and points s at it. The returned function
// stops the server and waits for it; it also runs at cleanup.
func servePipe(t testing.TB, s *Sink, h http.Handler) (stop func()) {
	pn := newPipeNet()
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(pn)
	}()
	s.client.Transport = &http.Transport{DialContext: pn.DialContext, MaxIdleConnsPerHost: 2}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			s.Close()
			// Shutdown waits for handlers still running (a request the
			// client gave up on), so the test reads settled records.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			srv.Shutdown(ctx)
			srv.Close()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// mustNew builds a sink for tests; opts.URL defaults to a pipe URL.
func mustNew(t testing.TB, o Options) *Sink {
	t.Helper()
	if o.URL == "" {
		o.URL = "http://metrics.test/v1/metrics"
	}
	if o.APIKey == "" && o.APIKeyFile == "" {
		o.APIKey = testKey
	}
	if o.Stats == nil {
		o.Stats = relay.NewStats()
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
