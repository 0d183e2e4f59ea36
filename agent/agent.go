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

	"github.com/cenkalti/backoff/v4"

	"github.com/livepeer/edgerelay/agent/ingest"
	"github.com/livepeer/edgerelay/agent/naap"
	"github.com/livepeer/edgerelay/agent/pipeline"
	"github.com/livepeer/edgerelay/agent/sampler"
	"github.com/livepeer/edgerelay/agent/session"
	"github.com/livepeer/edgerelay/agent/telemetry"
	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/nvml"
	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// Agent is one running edgerelay: its parts (pipeline, sinks, sessions,
// local API, sources) wired together. Create it with New, run it with Run
// (once). Its methods are safe for concurrent use.
//
// The start and stop orders are written once, in start and shutdown.
type Agent struct {
	cfg   Config
	opts  Options
	log   *slog.Logger
	build Build

	counters *pipeline.Counters
	stamper  *envelope.Stamper
	tail     *ingest.TailHub
	sinks    *relay.Group
	sessions *session.Registry
	subs     *subscribers       // the trickle subscribers, for the reports
	pipe     *pipeline.Pipeline // set by start
	api      *ingest.Server     // set by start

	alloc   *telemetry.Allocators // latest allocator figures per GPU
	envs    *telemetry.Envelopes  // allocator_sample stamping
	gpu     gpuLookup             // the GPU sampler, nil without NVML
	gpus    *nvml.Backend         // NVML (or its simulation), nil without
	sampler *sampler.Sampler      // GPUs and host network; nil when both are off

	spool   Spool // set by start; never replaced
	durable bool  // false in memory-only mode

	// Read by goroutines that may run while start is still setting the
	// fields above (spool commits, the local API while starting).
	live      atomic.Pointer[pipeline.Pipeline] // a.pipe, once built
	diskSpool atomic.Pointer[spool.Spool]       // the disk spool, once its counters were restored
	stopBy    time.Time                         // when the stop must be over (shutdown)

	baseMu    sync.Mutex
	base      map[string]relay.SinkReport // per sink, what earlier runs settled (counters.go)
	savedMu   sync.Mutex
	lastSaved []byte // the counters as last handed to a commit

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

	sources        sync.WaitGroup // source goroutines (cancelled by intakeCtx)
	sinkAux        sync.WaitGroup // goroutines of the sinks beside their forwarders (key watchers), ended by sinkCtx
	watchdogWG     sync.WaitGroup // the watchdog and the counter saver
	watchdogCancel context.CancelFunc
}

// stopSlack is what the stop may take beyond EDGERELAY_SHUTDOWN_GRACE: the
// sinks' forwarders returning, their clients and NVML closing, the spool's
// last commit.
const stopSlack = 500 * time.Millisecond

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
	// Version and Revision are main's, set at link time (see BuildOf); they
	// are in /v1/stats, edgerelay_build_info and the logs.
	Version, Revision string

	wrapStore  func(Spool) Spool      // tests: intercept the spool
	procRoot   string                 // tests: the sampler's /proc
	extraSink  relay.Sink             // tests: one more sink, named "test"
	newBackOff func() backoff.BackOff // tests: every forwarder's retry schedule
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
		cfg:      cfg,
		opts:     opts,
		build:    BuildOf(opts.Version, opts.Revision),
		log:      opts.Logger,
		counters: &pipeline.Counters{},
		tail:     ingest.NewTailHub(),
		sinks:    relay.NewGroup(opts.Logger),
		subs:     newSubscribers(),
		ready:    make(chan struct{}),
		abort:    make(chan struct{}),
	}
	a.intakeCtx, a.stopIntake = context.WithCancel(context.Background())
	a.sinkCtx, a.stopSinks = context.WithCancel(context.Background())
	a.sessions = session.New(session.Options{
		Sinks:          a.sinks,
		SinkCtx:        a.sinkCtx,
		SourceCtx:      a.intakeCtx,
		NewForwarder:   a.newForwarder,
		Subscribe:      a.startSubscriber,
		Dropped:        func(reason string, n uint64) { a.counters.AddDropped("session", reason, n) },
		KeepAliveEvent: a.keepAliveEvent,
		Framing:        cfg.TrickleFraming,
		Insecure:       cfg.TrickleInsecure,
		Grace:          cfg.ShutdownGrace,
		Logger:         opts.Logger,
	})
	// NAAP mode: the stamper writes every envelope it stamps in the
	// analytics pipeline's shape (agent/naap). Prebuilt and relayed
	// envelopes keep theirs, as the envelope contract says; Entry.Type
	// keeps the native family, so /v1/tail filters as before.
	var mapping *envelope.Mapping
	if cfg.NAAP {
		o := cfg.naapOptions()
		mapping = naap.NewMapping(o)
		if o.OrchestratorAddress == "" || o.OrchestratorURL == "" || o.Region == "" {
			opts.Logger.Warn("NAAP mode without every dimension the analytics pipeline joins on; events go without the missing ones",
				"orchestrator_address", o.OrchestratorAddress, "orchestrator_url", o.OrchestratorURL, "region", o.Region,
				"next", "set EDGERELAY_ORCHESTRATOR_ADDRESS, EDGERELAY_ORCHESTRATOR_URL and EDGERELAY_REGION")
		}
	}
	a.stamper = envelope.NewStamper(envelope.StamperOptions{
		Node: cfg.Identity, Gateway: cfg.Gateway, Now: opts.Now,
		Session: a.sessions.Identity, MaxBytes: cfg.MaxEventBytes, LimitBy: cfg.MaxEventBy,
		Mapping: mapping,
	})
	return a, nil
}

// Ready is closed once the agent accepts events (spool open, API listening).
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Addr returns the TCP address of the local API (useful with port 0), or nil.
// Valid after Ready.
func (a *Agent) Addr() net.Addr { return a.api.Addr() }

// Abort cuts the shutdown grace period short (a second SIGTERM). Unsent
// records stay in the spool.
func (a *Agent) Abort() { a.abortOnce.Do(func() { close(a.abort) }) }

// Run starts the agent, serves until ctx ends, then shuts down in the order
// of shutdown. It returns an error if start-up failed.
func (a *Agent) Run(ctx context.Context) error {
	undo, err := a.start()
	if err != nil {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return err
	}
	<-ctx.Done()
	return a.shutdown()
}

// start brings the agent up, in this order:
//
//  1. the local API listens: until step 7 it answers 503 with Retry-After
//     (events, /metrics, /readyz), so that a large spool opening does not
//     keep a runner from hearing the agent;
//  2. the spool opens (on disk, degraded when the disk cannot be written;
//     memory-only when it is off) and the counters resume from it;
//  3. the sinks start, each a forwarder reading its cursor, and cursors of
//     sinks no longer configured are removed;
//  4. NVML opens and the sampler is built (nothing samples yet);
//  5. the pipeline's spool writer starts;
//  6. the sources start (status, sampler, subscribers, stormlog tail);
//  7. the agent is ready: the API takes events, READY=1 to systemd, and
//     the watchdog and the counter saver start.
//
// It returns what undoes the steps done so far when a later one fails.
func (a *Agent) start() (undo []func(), err error) {
	// undo runs in reverse: each step appends what takes it back.
	undo = append(undo, a.stopIntake)
	a.api = a.newAPI()
	if err := a.api.Start(); err != nil {
		return undo, err
	}
	undo = append(undo, a.api.Close)

	st, durable, err := a.openStore()
	if err != nil {
		return undo, err
	}
	if a.opts.wrapStore != nil {
		st = a.opts.wrapStore(st)
	}
	a.spool, a.durable = st, durable
	undo = append(undo, func() { a.spool.Close() })

	undo = append(undo, func() {
		a.stopSinks()
		a.sinks.Wait()
		a.sinkAux.Wait()
		for _, c := range a.closers {
			c()
		}
	})
	if err := a.startSinks(); err != nil {
		return undo, err
	}
	if len(a.sinks.Names()) == 0 {
		a.log.Warn("no sink configured: events are kept in the spool, delivered to none but session channels",
			"next", "set EDGERELAY_HTTP_URL, EDGERELAY_TRICKLE_URL or EDGERELAY_KAFKA_BROKERS, or EDGERELAY_STDOUT=on")
	}
	a.forgetStaleSinks()
	if err := a.setupGPU(); err != nil {
		return undo, err
	}
	// Read by the API's handlers only once the agent runs (a.state).
	a.api.Allocs, a.api.Envelopes = a.alloc, a.envs

	a.pipe = pipeline.New(pipeline.Options{
		RingMaxEvents: a.cfg.RingMaxEvents,
		RingMaxBytes:  a.cfg.RingMaxBytes,
		GroupEvents:   a.cfg.SpoolGroupEvents,
		GroupDelay:    a.cfg.SpoolGroupDelay,
		Store:         a.spool,
		Accepted:      a.tail.Publish,
		Committed:     a.sessions.Route,
		Counters:      a.counters,
		Logger:        a.log,
	})
	a.live.Store(a.pipe)
	a.pipe.Start()
	undo = append(undo, func() { a.pipe.Close(); a.pipe.Wait() })

	undo = append(undo, func() { a.stopIntake(); a.sources.Wait() })
	if err := a.startSources(); err != nil {
		return undo, err
	}

	a.state.Store(stateRunning)
	close(a.ready)
	a.sdNotify("READY=1\nSTATUS=" + a.statusLine())
	// The watchdog outlives intake: during the shutdown grace a wedged
	// sink must still stop the pings.
	wctx, cancel := context.WithCancel(context.Background())
	a.watchdogCancel = cancel
	a.watchdogWG.Go(func() { a.watchdogLoop(wctx) })
	a.watchdogWG.Go(func() { a.saveCountersLoop(wctx) })
	a.log.Info("edgerelay running", "version", a.build.Version, "state_dir", a.cfg.StateDir, "durable", a.durable, "listen", addrString(a.api.Addr()),
		"socket", a.cfg.Socket, "sinks", a.sinks.Names())
	return nil, nil
}

// shutdown stops the agent so that nothing acknowledged is lost, within
// EDGERELAY_SHUTDOWN_GRACE plus stopSlack from its first step:
//
//  1. intake stops: the API answers 503 to new events, WebSockets close,
//     the sources are cancelled and waited for, and a final agent_status is
//     emitted;
//  2. the pipeline closes and its writer drains the ring into the spool, so
//     every in-flight ingest request gets its answer;
//  3. the local API shuts down and its socket file goes: requests in
//     flight (a slow client's body) may finish until the grace ends;
//  4. the sinks get what is left of the grace to deliver what is pending
//     (no linger);
//  5. the sinks stop (unsent records stay in the spool), then what they own
//     is closed (clients, key watchers) and NVML shuts down;
//  6. the session channels are retired (what they held is counted as
//     dropped "shutdown"; channels are not deleted);
//  7. the watchdog and the counter saver stop;
//  8. the spool closes cleanly, with the counters, after a last report for
//     the log.
//
// A second signal (Abort) cuts every wait: the ring's drain, the API's,
// the sinks' and NVML's.
func (a *Agent) shutdown() error {
	a.stopBy = time.Now().Add(a.cfg.ShutdownGrace)
	a.state.Store(stateStopping)
	a.sdNotify("STOPPING=1")
	a.log.Info("edgerelay stopping", "grace", a.cfg.ShutdownGrace.String())
	a.stopIntake()
	a.sources.Wait()
	a.emitStatus("shutdown")

	a.pipe.Close()
	select {
	case <-a.pipe.Done():
	case <-a.abort:
		a.log.Warn("second signal: not waiting for the ring to reach the spool; what is left is counted as lost")
	}

	// The grace, for the API's drain and the sinks' together; a second
	// signal ends it. (The goroutine ends with cancel, below.)
	gctx, cancel := context.WithDeadline(context.Background(), a.stopBy)
	go func() {
		select {
		case <-a.abort:
			cancel()
		case <-gctx.Done():
		}
	}()
	a.api.Shutdown(gctx)
	a.drainSinks(gctx)
	cancel()
	a.stopSinks()
	a.sinks.Wait()
	a.sinkAux.Wait()
	for _, c := range a.closers {
		c()
	}
	a.sessions.DetachAll()
	a.watchdogCancel()
	a.watchdogWG.Wait()

	a.saveCounters()
	rep := a.Report()
	err := a.spool.Close()
	a.pipe.Wait() // at once: after a second signal, its last appends fail on the closed spool
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

// drainSinks lets the sinks deliver what is pending until ctx ends (the
// grace is over, or a second signal came).
func (a *Agent) drainSinks(ctx context.Context) {
	a.sinks.Drain()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if a.sinks.Pending() == 0 {
			return
		}
		select {
		case <-ctx.Done():
			select {
			case <-a.abort:
				a.log.Warn("second signal: stopping now; undelivered events stay in the spool", "pending", a.sinks.Pending())
			default:
				a.log.Warn("shutdown grace over; undelivered events stay in the spool", "pending", a.sinks.Pending(), "durable", a.durable)
			}
			return
		case <-tick.C:
		}
	}
}

// newAPI builds the local API over the agent's parts.
func (a *Agent) newAPI() *ingest.Server {
	var debug http.Handler
	if a.cfg.Pprof {
		debug = pprofHandler()
		a.log.Warn("pprof is on: profiles are served under /debug/pprof/ on the local API", "listen", a.cfg.Listen, "socket", a.cfg.Socket)
	}
	return &ingest.Server{
		Debug: debug,
		Options: ingest.Options{
			Listen: a.cfg.Listen, Socket: a.cfg.Socket, Token: a.cfg.IngestToken,
			MaxBodyBytes: a.cfg.MaxBodyBytes, MaxEventBytes: a.cfg.MaxEventBytes,
			TelemetryLegacy: a.cfg.TelemetryLegacy,
			// Half the ring per request: one request on an idle agent always
			// fits whole, beside what the sources emit meanwhile.
			MaxRequestEvents: max(a.cfg.RingMaxEvents/2, 1), MaxRequestBytes: max(a.cfg.RingMaxBytes/2, 1),
		},
		// The handlers that submit run only once the agent runs (Running),
		// after start has set a.pipe and a.durable.
		Submit:   func(source string, e []pipeline.Entry) (*pipeline.Waiter, error) { return a.pipe.Submit(source, e) },
		Durable:  func() bool { return a.durable },
		Rejected: a.counters.AddRejected,
		Refused:  a.counters.AddRefused,
		Room:     func(ctx context.Context) bool { return a.pipe.WaitRoom(ctx) },
		Stamper:  a.stamper,
		Sessions: a.sessions,
		Tail:     a.tail,
		Running: func() (bool, string) {
			s := a.state.Load()
			return s == stateRunning, stateName(s)
		},
		Stopping: a.intakeCtx,
		Report:   func() any { return a.Report() },
		Metrics:  a.metricsEndpoint(),
		Logger:   a.log,
	}
}

// emit stamps an event of the agent's own sources and queues it without
// waiting for the spool (sources never block).
func (a *Agent) emit(source, typ string, data map[string]any, sess envelope.Identity) {
	env, err := a.stamper.Stamp(typ, data, sess)
	if err != nil {
		a.log.Error("stamping failed; event dropped", "source", source, "type", typ, "err", err)
		a.counters.AddDropped("stamp", "invalid", 1)
		return
	}
	sessionID := sess["session_id"]
	if sessionID == "" {
		sessionID, _ = data["session_id"].(string)
	}
	a.pipe.Emit(source, pipeline.Entry{Env: env, Type: typ, Session: sessionID})
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// keepAliveEvent is the envelope of a trickle channel's keep-alive frame:
// the agent's status, stamped for the channel alone (it is not spooled:
// other sinks get agent_status on its own cadence).
func (a *Agent) keepAliveEvent() []byte {
	env, err := a.stamper.Stamp("agent_status", a.statusData("keepalive"), nil)
	if err != nil {
		return nil
	}
	return env
}

// metricsEndpoint serves /metrics once the agent runs; while it starts it
// answers 503 with Retry-After, so that a scrape never sees the counters
// before they resumed from the spool (a drop to 0 would read as a reset).
func (a *Agent) metricsEndpoint() http.Handler {
	var once sync.Once
	var h http.Handler
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.state.Load() == stateStarting {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "edgerelay is starting", http.StatusServiceUnavailable)
			return
		}
		once.Do(func() { h = a.metricsHandler() })
		h.ServeHTTP(w, r)
	})
}
