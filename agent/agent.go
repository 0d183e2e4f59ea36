package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livepeer/edgerelay/envelope"

	"github.com/cenkalti/backoff/v4"

	"github.com/livepeer/edgerelay/agent/sampler"
	"github.com/livepeer/edgerelay/agent/telemetry"
	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// Agent is one running edgerelay: sources, ring, spool writer, spool, sinks
// and the local API, wired together. Create it with New, run it with Run
// (once). Its methods are safe for concurrent use.
//
// Shutdown order (Run, after its context ends), written so that nothing
// acknowledged is lost:
//
//  1. intake stops: the API answers 503 to new events, sources are cancelled
//     and waited for, and a final agent_status is emitted;
//  2. the ring is closed and the spool writer drains it into the spool, so
//     every in-flight ingest request gets its answer;
//  3. the API server shuts down;
//  4. the sinks get the grace period to deliver what is pending (no linger);
//     a second signal (Abort) cuts the grace short;
//  5. the sinks are stopped (unsent records stay in the spool) and the spool
//     is closed cleanly.
type Agent struct {
	cfg      Config
	opts     Options
	log      *slog.Logger
	stamper  *envelope.Stamper
	ring     *Ring
	sessions *sessions
	tail     *tailHub
	counters *counters

	alloc    *telemetry.Allocators // latest allocator figures per GPU
	gpu      gpuLookup             // the GPU sampler, nil without NVML
	sampler  *sampler.Sampler      // GPUs and host network; nil when both are off
	stormlog *telemetry.Tailer     // nil unless EDGERELAY_STORMLOG_DIR

	store   store // set by start; never replaced
	durable func() bool

	sinksMu  sync.Mutex // guards sinks and finished
	sinks    map[string]*sinkHandle
	finished map[string]SinkReport // final reports of retired sinks

	sessSinks     sessionSinks // session channels by session id
	sessSinkCount atomic.Int32 // len(sessSinks.m), read without the lock on the hot path
	sessSubs      sync.Map     // session id -> context.CancelFunc of its subscriber
	subsMu        sync.Mutex   // guards subs
	subs          []subscriberRef

	state      atomic.Int32
	intakeCtx  context.Context // ends when intake stops
	stopIntake context.CancelFunc
	sinkCtx    context.Context // ends when the sinks must stop
	stopSinks  context.CancelFunc
	ready      chan struct{} // closed once the API listens
	abort      chan struct{} // closed by Abort
	abortOnce  sync.Once

	reloaders []func() // run by Reload (SIGHUP); set during start
	closers   []func() // run after the sinks stopped; set during start

	srv       *http.Server
	tcpAddr   net.Addr
	listeners []net.Listener

	sources    sync.WaitGroup // source goroutines (cancelled by intakeCtx)
	writerDone chan struct{}
	// writerBusySince is when the writer's current Append began (unix
	// nanos), 0 when it is not appending; read by the watchdog.
	writerBusySince atomic.Int64
	sinkWG          sync.WaitGroup
	watchdogWG      sync.WaitGroup
	watchdogCancel  context.CancelFunc
	serveWG         sync.WaitGroup
}

// Agent states, as reported by /readyz and /v1/stats.
const (
	stateStarting int32 = iota
	stateRunning
	stateStopping
	stateStopped
)

func stateName(s int32) string {
	return [...]string{"starting", "running", "stopping", "stopped"}[s]
}

// Options are the in-process hooks of an agent (tests, bench). The zero
// value is the production default.
type Options struct {
	Stdout   io.Writer      // the stdout sink's writer (default os.Stdout)
	Logger   *slog.Logger   // default: discard
	LogLevel *slog.LevelVar // set by SIGHUP re-reads; may be nil
	Now      func() time.Time

	wrapStore  func(store) store      // tests: intercept the spool
	extraSink  relay.Sink             // tests: one more sink, named "test"
	newBackOff func() backoff.BackOff // tests: every forwarder's retry schedule
}

// store is what the agent needs of a spool: spool.Spool on disk or
// spool.Memory.
type store interface {
	relay.Queue
	AddSink(name string) error
	RemoveSink(name string) (spool.SinkStat, error)
	Append(data [][]byte) error
	SinkStat(sink string) (spool.SinkStat, error)
	Stat() spool.Stat
	Sinks() []string
	Close() error
}

// sinkHandle is one running sink: its stats, the store holding its cursor,
// and how to drain it.
type sinkHandle struct {
	name    string
	kind    string // "stdout", "http", "trickle", "kafka", "session"
	stats   *relay.Stats
	st      store
	drain   func()                                        // send partial batches at once
	stalled func(now time.Time, limit time.Duration) bool // stuck in one send for longer than limit
	done    chan struct{}                                 // closed when its goroutine returns
}

// New checks cfg and builds an agent; nothing runs until Run.
func New(cfg Config, opts Options) (*Agent, error) {
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if cfg.RingMaxEvents <= 0 || cfg.MaxEventBytes <= 0 || cfg.MaxBodyBytes <= 0 {
		return nil, errors.New("agent: configuration not loaded (use agent.Load)")
	}
	a := &Agent{
		cfg:        cfg,
		opts:       opts,
		log:        opts.Logger,
		ring:       NewRing(cfg.RingMaxEvents, cfg.RingMaxBytes),
		sessions:   newSessions(),
		tail:       newTailHub(),
		counters:   newCounters(),
		sinks:      make(map[string]*sinkHandle),
		ready:      make(chan struct{}),
		abort:      make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	a.stamper = envelope.NewStamper(envelope.StamperOptions{
		Node: cfg.Identity, Gateway: cfg.Gateway, Now: opts.Now,
		Session: a.sessions.identity, MaxBytes: cfg.MaxEventBytes,
	})
	a.intakeCtx, a.stopIntake = context.WithCancel(context.Background())
	a.sinkCtx, a.stopSinks = context.WithCancel(context.Background())
	return a, nil
}

// Ready is closed once the agent accepts events (spool open, API listening).
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Addr returns the TCP address of the local API (useful with port 0), or nil.
// Valid after Ready.
func (a *Agent) Addr() net.Addr { return a.tcpAddr }

// Abort cuts the shutdown grace period short (a second SIGTERM). Unsent
// records stay in the spool.
func (a *Agent) Abort() { a.abortOnce.Do(func() { close(a.abort) }) }

// Run starts the agent, serves until ctx ends, then shuts down in the order
// documented on Agent. It returns an error if start-up failed.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.start(); err != nil {
		a.stopIntake()
		a.stopSinks()
		a.sinkWG.Wait()
		for _, c := range a.closers {
			c()
		}
		if a.store != nil {
			a.store.Close()
		}
		for _, l := range a.listeners {
			l.Close()
		}
		return err
	}
	<-ctx.Done()
	return a.shutdown()
}

func (a *Agent) start() error {
	st, durable, err := a.openStore()
	if err != nil {
		return err
	}
	if a.opts.wrapStore != nil {
		st = a.opts.wrapStore(st)
	}
	a.store, a.durable = st, durable
	if err := a.startSinks(); err != nil {
		return err
	}
	a.forgetStaleSinks()
	if err := a.setupGPU(); err != nil {
		return err
	}
	go a.writeLoop()
	if err := a.startAPI(); err != nil {
		a.ring.Close()
		<-a.writerDone
		return err
	}
	if err := a.startSources(); err != nil {
		a.stopIntake()
		a.sources.Wait()
		a.ring.Close()
		<-a.writerDone
		a.srv.Close()
		a.serveWG.Wait()
		return err
	}
	a.state.Store(stateRunning)
	close(a.ready)
	a.sdNotify("READY=1\nSTATUS=" + a.statusLine())
	// The watchdog outlives intake: during the shutdown grace a wedged
	// sink must still stop the pings.
	wctx, cancel := context.WithCancel(context.Background())
	a.watchdogCancel = cancel
	a.watchdogWG.Add(1)
	go func() {
		defer a.watchdogWG.Done()
		a.watchdogLoop(wctx)
	}()
	a.log.Info("edgerelay running", "state_dir", a.cfg.StateDir, "durable", a.durable(), "listen", addrString(a.tcpAddr), "socket", a.cfg.Socket, "sinks", a.sinkNames())
	return nil
}

func (a *Agent) shutdown() error {
	a.state.Store(stateStopping)
	a.sdNotify("STOPPING=1")
	a.log.Info("edgerelay stopping", "grace", a.cfg.ShutdownGrace.String())
	a.stopIntake()
	a.sources.Wait()
	a.emitStatus("shutdown")
	a.ring.Close()
	<-a.writerDone

	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	a.srv.Shutdown(sctx)
	cancel()
	a.serveWG.Wait()
	if a.cfg.Socket != "" {
		os.Remove(a.cfg.Socket)
	}

	a.drainSinks()
	a.stopSinks()
	a.sinkWG.Wait()
	for _, c := range a.closers {
		c()
	}
	a.watchdogCancel()
	a.watchdogWG.Wait()
	a.detachAllSessions()
	rep := a.Report()
	err := a.store.Close()
	a.state.Store(stateStopped)
	var pending uint64
	for _, s := range rep.Sinks {
		pending += s.Pending
	}
	a.log.Info("edgerelay stopped", "pending_in_spool", pending, "durable", rep.Durable)
	if err != nil {
		return fmt.Errorf("closing spool: %w", err)
	}
	return nil
}

// drainSinks lets the sinks deliver what is pending, for at most the grace
// period.
func (a *Agent) drainSinks() {
	for _, h := range a.sinkList() {
		if h.drain != nil {
			h.drain()
		}
	}
	deadline := time.NewTimer(a.cfg.ShutdownGrace)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if a.pendingTotal() == 0 {
			return
		}
		select {
		case <-deadline.C:
			a.log.Warn("shutdown grace over; undelivered events stay in the spool", "pending", a.pendingTotal(), "durable", a.durable())
			return
		case <-a.abort:
			a.log.Warn("second signal: stopping now; undelivered events stay in the spool", "pending", a.pendingTotal())
			return
		case <-tick.C:
		}
	}
}

func (a *Agent) pendingTotal() uint64 {
	var n uint64
	for _, h := range a.sinkList() {
		if s, err := h.st.SinkStat(h.name); err == nil {
			n += s.Pending
		}
	}
	return n
}

func (a *Agent) sinkList() []*sinkHandle {
	a.sinksMu.Lock()
	defer a.sinksMu.Unlock()
	out := make([]*sinkHandle, 0, len(a.sinks))
	for _, h := range a.sinks {
		out = append(out, h)
	}
	return out
}

func (a *Agent) sinkNames() []string {
	var names []string
	for _, h := range a.sinkList() {
		names = append(names, h.name)
	}
	return names
}

// newSinkHandle registers sink name in st and returns its handle, whose
// stats the sink is built with.
func (a *Agent) newSinkHandle(st store, name, kind string) (*sinkHandle, error) {
	if err := st.AddSink(name); err != nil {
		return nil, fmt.Errorf("sink %s: %w", name, err)
	}
	return &sinkHandle{name: name, kind: kind, stats: relay.NewStats(), st: st, done: make(chan struct{})}, nil
}

// newForwarder returns the forwarder of h, not yet started: the one
// delivery loop of every sink. A sink that reports progress within a Send
// takes its Alive.
func (a *Agent) newForwarder(h *sinkHandle) *relay.Forwarder {
	f := &relay.Forwarder{
		Name:   h.name,
		Queue:  h.st,
		Stats:  h.stats,
		Logger: a.log,
	}
	if a.opts.newBackOff != nil {
		f.NewBackOff = a.opts.newBackOff
	}
	return f
}

// startForwarder runs f, h's forwarder, to sink; tune may set its fields.
func (a *Agent) startForwarder(h *sinkHandle, f *relay.Forwarder, sink relay.Sink, tune func(*relay.Forwarder)) {
	f.Sink = sink
	if tune != nil {
		tune(f)
	}
	f.Init()
	h.drain, h.stalled = f.Drain, f.Stalled
	a.runSink(h, f.Run)
}

// addForwarder registers a sink and runs a forwarder for it.
func (a *Agent) addForwarder(st store, name, kind string, sink relay.Sink, tune func(*relay.Forwarder)) (*sinkHandle, error) {
	h, err := a.newSinkHandle(st, name, kind)
	if err != nil {
		return nil, err
	}
	a.startForwarder(h, a.newForwarder(h), sink, tune)
	return h, nil
}

// runSink registers h and runs its loop until the sinks stop.
func (a *Agent) runSink(h *sinkHandle, run func(context.Context) error) {
	a.sinksMu.Lock()
	a.sinks[h.name] = h
	a.sinksMu.Unlock()
	a.sinkWG.Add(1)
	go func() {
		defer a.sinkWG.Done()
		defer close(h.done)
		if err := run(a.sinkCtx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Warn("sink stopped", "sink", h.name, "err", err)
		}
	}()
}

// writeLoop is the spool writer: the only goroutine that appends to the
// store. It takes a group of up to SpoolGroupEvents entries from the ring
// (waiting up to SpoolGroupDelay to fill it), commits them in one
// transaction, then releases the producers waiting for durability. It
// returns once the ring is closed and empty.
func (a *Agent) writeLoop() {
	defer close(a.writerDone)
	max := a.cfg.SpoolGroupEvents
	group := make([]ringItem, 0, max)
	data := make([][]byte, 0, max)
	var fill *time.Timer
	for {
		group = a.ring.Pop(group[:0], max)
		if len(group) == 0 {
			if a.ring.closedAndEmpty() {
				return
			}
			<-a.ring.Ready()
			continue
		}
		if len(group) < max && a.cfg.SpoolGroupDelay > 0 && !a.ring.isClosed() {
			if fill == nil {
				fill = time.NewTimer(a.cfg.SpoolGroupDelay)
			} else {
				fill.Reset(a.cfg.SpoolGroupDelay)
			}
		wait:
			for len(group) < max {
				select {
				case <-fill.C:
					break wait
				case <-a.ring.Ready():
					group = a.ring.Pop(group, max-len(group))
					if a.ring.isClosed() {
						break wait
					}
				}
			}
			fill.Stop()
		}
		data = data[:0]
		for _, it := range group {
			data = append(data, it.data)
		}
		a.writerBusySince.Store(time.Now().UnixNano())
		err := a.store.Append(data)
		a.writerBusySince.Store(0)
		notDurable := isNotDurable(err)
		if notDurable {
			err = nil
		}
		if err != nil {
			a.counters.dropped.add("spool/write_failed", uint64(len(group)))
			a.log.Error("spool append failed; events lost", "events", len(group), "err", err)
		}
		settleWaiters(group, notDurable, err)
		clear(group) // let the envelopes go
	}
}

// settleWaiters tells each waiter how many of its entries the commit
// covered. Entries of one request are adjacent in the group, so this is one
// call per request, not per event.
func settleWaiters(group []ringItem, notDurable bool, err error) {
	for i := 0; i < len(group); {
		w := group[i].w
		j := i + 1
		for j < len(group) && group[j].w == w {
			j++
		}
		if w != nil {
			w.commit(j-i, notDurable, err)
		}
		i = j
	}
}

// submit hands prepared envelopes to the ring with one waiter for all of
// them. It fails only when the agent is not accepting events.
func (a *Agent) submit(source string, items []prepared) (*waiter, error) {
	if a.state.Load() != stateRunning {
		return nil, errNotAccepting
	}
	w := newWaiter(len(items))
	a.counters.received.add(source, uint64(len(items)))
	for i, p := range items {
		a.tail.publish(p.typ, p.env)
		a.routeToSession(p.session, p.env)
		if err := a.ring.Push(p.env, w, i); err != nil {
			// The ring closed while pushing: settle the rest as dropped
			// so the request is answered.
			for k := i; k < len(items); k++ {
				w.drop(k)
			}
			break
		}
	}
	return w, nil
}

var errNotAccepting = errors.New("the agent is not accepting events (starting or stopping)")

// emit stamps an event of the agent's own sources and queues it without
// waiting for the spool (sources never block).
func (a *Agent) emit(source, typ string, data map[string]any, session envelope.Identity) {
	env, err := a.stamper.Stamp(typ, data, session)
	if err != nil {
		a.log.Error("stamping failed; event dropped", "source", source, "type", typ, "err", err)
		a.counters.dropped.add("stamp/invalid", 1)
		return
	}
	sessionID := session["session_id"]
	if sessionID == "" {
		sessionID, _ = data["session_id"].(string)
	}
	a.pushEnvelope(source, typ, env, sessionID)
}

// pushEnvelope queues a finished envelope from an internal source.
func (a *Agent) pushEnvelope(source, typ string, env []byte, sessionID string) {
	a.counters.received.add(source, 1)
	a.tail.publish(typ, env)
	a.routeToSession(sessionID, env)
	if err := a.ring.Push(env, nil, 0); err != nil {
		a.counters.dropped.add("ring/stopping", 1)
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
