package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/httpsink"
	"github.com/livepeer/edgerelay/relay/kafkasink"
	"github.com/livepeer/edgerelay/relay/trickle"
	"github.com/livepeer/edgerelay/spool"
)

// startSinks registers every configured sink in the spool and starts its
// forwarder in the sink group.
func (a *Agent) startSinks() error {
	if a.cfg.Stdout {
		if err := a.addSink("stdout", "stdout", relay.NewStdoutSink(a.opts.Stdout), nil); err != nil {
			return err
		}
	}
	if err := a.startHTTP(); err != nil {
		return err
	}
	if err := a.startStaticTrickle(); err != nil {
		return err
	}
	if err := a.startKafka(); err != nil {
		return err
	}
	if a.opts.extraSink != nil {
		if err := a.addSink("test", "test", a.opts.extraSink, nil); err != nil {
			return err
		}
	}
	return nil
}

// newForwarder returns a forwarder with the agent's defaults for the sink
// name reading q; the caller sets Sink, tunes it and calls Init.
func (a *Agent) newForwarder(name string, q relay.Queue) *relay.Forwarder {
	f := &relay.Forwarder{Name: name, Queue: q, Stats: relay.NewStats(), Logger: a.log}
	if a.opts.newBackOff != nil {
		f.NewBackOff = a.opts.newBackOff
	}
	return f
}

// cursor registers a sink's cursor in the spool and returns its forwarder.
func (a *Agent) cursor(name string) (*relay.Forwarder, error) {
	if err := a.spool.AddSink(name); err != nil {
		return nil, fmt.Errorf("sink %s: %w", name, err)
	}
	return a.newForwarder(name, a.spool), nil
}

// run starts f (Sink set) in the sink group, reading the spool.
func (a *Agent) run(kind string, f *relay.Forwarder, done func()) {
	f.Init()
	name := f.Name
	a.sinks.Start(a.sinkCtx, relay.Member{
		Name: name, Kind: kind, Fwd: f,
		Stat:   func() (spool.SinkStat, error) { return a.spool.SinkStat(name) },
		Remove: func() (spool.SinkStat, error) { return a.spool.RemoveSink(name) },
		Done:   done,
	})
}

// addSink registers and runs a sink; tune may set forwarder fields.
func (a *Agent) addSink(name, kind string, sink relay.Sink, tune func(*relay.Forwarder)) error {
	f, err := a.cursor(name)
	if err != nil {
		return err
	}
	f.Sink = sink
	if tune != nil {
		tune(f)
	}
	a.run(kind, f, nil)
	return nil
}

// httpOptions maps the configuration to the HTTP sink's options.
func httpOptions(c Config) httpsink.Options {
	return httpsink.Options{
		URL:                c.HTTPURL,
		APIKey:             c.HTTPAPIKey,
		APIKeyFile:         c.HTTPAPIKeyFile,
		Host:               c.Identity["host"],
		MaxEvents:          c.HTTPBatch,
		MaxBody:            c.HTTPMaxBody,
		RatePerMinute:      c.HTTPRate,
		Gzip:               c.HTTPGzip,
		InsecureSkipVerify: c.HTTPInsecure,
		Timeout:            c.HTTPTimeout,
	}
}

func (a *Agent) startHTTP() error {
	if a.cfg.HTTPURL == "" {
		return nil
	}
	f, err := a.cursor("http")
	if err != nil {
		return err
	}
	a.warnLoosePermissions("EDGERELAY_HTTP_API_KEY_FILE", a.cfg.HTTPAPIKeyFile)
	opts := httpOptions(a.cfg)
	opts.Stats, opts.Logger, opts.Alive = f.Stats, a.log.With("sink", "http"), f.Alive
	f.Linger, f.ProbeInterval = a.cfg.HTTPLinger, a.cfg.HTTPProbeInterval
	f.Inflight = a.cfg.HTTPInflight // lanes when the sink starts at once; a sink started late sends one batch at a time
	a.startSink("http", f, func() (*built, error) {
		sink, err := httpsink.New(opts)
		if err != nil {
			return nil, fmt.Errorf("http sink: %w", err)
		}
		// At start, or on the forwarder's own goroutine (in its Send)
		// when the sink starts late: the forwarder reads them per batch.
		f.Batch, f.MaxBytes = sink.Limits()
		return &built{sink: sink, resume: sink.Resume(), reload: sink.Reload, close: sink.Close,
			watch: func(ctx context.Context) { sink.WatchKey(ctx) }}, nil
	}, false)
	if a.cfg.HTTPInsecure {
		a.log.Warn("http sink: TLS verification is off (EDGERELAY_HTTP_INSECURE)")
	}
	return nil
}

func (a *Agent) startStaticTrickle() error {
	if a.cfg.TrickleURL == "" {
		return nil
	}
	f, err := a.cursor("trickle")
	if err != nil {
		return err
	}
	pub, err := trickle.NewPublisher(trickle.PublisherOptions{
		URL: a.cfg.TrickleURL, Framing: a.cfg.TrickleFraming, Insecure: a.cfg.TrickleInsecure,
		Persistent: true, KeepAliveEvent: a.keepAliveEvent,
		Wrap: true, Stats: f.Stats, Alive: f.Alive, Logger: a.log.With("sink", "trickle"),
	})
	if err != nil {
		return fmt.Errorf("EDGERELAY_TRICKLE_URL: %w", err)
	}
	if a.cfg.TrickleInsecure {
		a.log.Warn("trickle: TLS verification is off (EDGERELAY_TRICKLE_INSECURE)")
	}
	f.Sink = pub
	pub.Tune(f)
	f.Init()
	a.sinks.Start(a.sinkCtx, relay.Member{
		Name: "trickle", Kind: "trickle", Fwd: f,
		Stat:   func() (spool.SinkStat, error) { return a.spool.SinkStat("trickle") },
		Remove: func() (spool.SinkStat, error) { return a.spool.RemoveSink("trickle") },
		Done:   pub.Close,
	})
	return nil
}

func (a *Agent) startKafka() error {
	ko := a.cfg.Kafka
	if !ko.Enabled() {
		return nil
	}
	a.warnLoosePermissions("EDGERELAY_KAFKA_PASSWORD_FILE", ko.SASLPasswordFile)
	f, err := a.cursor("kafka")
	if err != nil {
		return err
	}
	ko.Stats, ko.Logger = f.Stats, a.log.With("sink", "kafka")
	f.Batch = 2000 // the client splits by broker limits itself
	a.startSink("kafka", f, func() (*built, error) {
		sink, err := kafkasink.New(a.sinkCtx, ko)
		if err != nil {
			return nil, fmt.Errorf("kafka sink: %w", err)
		}
		return &built{sink: sink, resume: sink.Resume(), reload: sink.Reload, close: sink.Close}, nil
	}, true)
	return nil
}

// built is a sink that started, with what the agent wires around it.
type built struct {
	sink   relay.Sink
	resume <-chan struct{}           // the forwarder's Resume
	reload func() error              // on SIGHUP
	close  func()                    // after the forwarders stopped
	watch  func(ctx context.Context) // nil, or a goroutine beside the forwarder until ctx ends
}

// startSink starts a sink with start and runs its forwarder f (cursor
// registered, options set). A sink that cannot start (a missing Kafka
// topic, an unreadable key, password or CA file) fails alone: its
// forwarder runs paused with reason misconfigured, its events kept in the
// spool, and every probe tries to start it again, on a backoff from a
// second to a minute (SIGHUP tries at once); the agent, its API and the
// other sinks run meanwhile.
//
// With background, the first start runs beside the forwarder instead of
// before it, so that a start that waits on the network (Kafka's topic
// check, up to its produce timeout when the brokers do not answer) does
// not hold up the agent's start. start must then touch nothing the
// forwarder reads.
func (a *Agent) startSink(kind string, f *relay.Forwarder, start func() (*built, error), background bool) {
	if !background {
		b, err := start()
		if err == nil {
			a.wire(f.Name, b)
			f.Sink, f.Resume = b.sink, b.resume
			a.run(kind, f, nil)
			return
		}
		l := a.newLateSink(f, start)
		l.failed(err)
		a.run(kind, f, nil)
		return
	}
	l := a.newLateSink(f, start)
	a.run(kind, f, nil)
	a.sinkAux.Go(func() { l.ensure() })
}

// wire hands a started sink's reload, close and watcher to the agent.
func (a *Agent) wire(name string, b *built) {
	a.reloaders = append(a.reloaders, func() {
		if err := b.reload(); err != nil {
			a.log.Error("sink reload failed; keeping the old credentials", "sink", name, "err", err)
		}
	})
	a.closers = append(a.closers, b.close)
	if b.watch != nil {
		a.sinkAux.Go(func() { b.watch(a.sinkCtx) })
	}
}

// newLateSink makes f's sink a lateSink over start, and hands its reload
// and close to the agent.
func (a *Agent) newLateSink(f *relay.Forwarder, start func() (*built, error)) *lateSink {
	newBackOff := relay.DefaultBackOff
	if a.opts.newBackOff != nil {
		newBackOff = a.opts.newBackOff
	}
	l := &lateSink{a: a, start: start, stats: f.Stats, bo: newBackOff(), resume: make(chan struct{}, 1), log: a.log.With("sink", f.Name)}
	a.reloaders = append(a.reloaders, l.reload)
	a.closers = append(a.closers, l.close)
	f.Sink, f.Resume = l, l.resume
	return l
}

// lateSink stands in for a sink until it has started: Send starts it, and
// answers paused (misconfigured) while it cannot; from then on it is the
// sink. Send runs on the forwarder's goroutine; ensure, reload and close
// are safe beside it.
type lateSink struct {
	a      *Agent
	start  func() (*built, error)
	stats  *relay.Stats
	bo     backoff.BackOff // probe schedule; the forwarder's goroutine only
	resume chan struct{}   // the forwarder's Resume; capacity 1
	log    *slog.Logger

	startMu sync.Mutex // one start at a time; guards tries
	tries   int        // failed starts
	mu      sync.Mutex // guards b
	b       *built     // nil until started
}

func (l *lateSink) Send(ctx context.Context, recs []spool.Record) relay.Result {
	b, err := l.ensure()
	if err != nil {
		return relay.Result{Err: &relay.PausedError{Reason: "misconfigured", Err: err, Probe: nextProbe(l.bo)}}
	}
	return b.sink.Send(ctx, recs)
}

// ensure returns the started sink, starting it if it has not.
func (l *lateSink) ensure() (*built, error) {
	l.startMu.Lock()
	defer l.startMu.Unlock()
	if b := l.started(); b != nil {
		return b, nil
	}
	b, err := l.start()
	if err != nil {
		l.failed(err)
		return nil, err
	}
	l.mu.Lock()
	l.b = b
	l.mu.Unlock()
	// Started on the forwarder's goroutine, or on the agent's sinkAux one:
	// shutdown waits for both before it waits for sinkAux.
	if b.watch != nil {
		l.a.sinkAux.Go(func() { b.watch(l.a.sinkCtx) })
	}
	// The started sink's own resume signals (a rotated key, a reload) reach
	// the forwarder through ours.
	l.a.sinkAux.Go(func() {
		for {
			select {
			case <-l.a.sinkCtx.Done():
				return
			case <-b.resume:
				l.poke()
			}
		}
	})
	if l.tries > 0 {
		// The forwarder clears its own pause at its first success; this
		// clears one it has not seen yet (the first start failed beside it).
		l.stats.SetPaused("")
		l.log.Info("sink started", "failed_starts", l.tries)
	}
	return b, nil
}

// failed records a failed start: the first is logged with what to do,
// and the sink shows as paused (misconfigured) at once.
func (l *lateSink) failed(err error) {
	l.tries++
	if l.tries == 1 {
		l.log.Error("sink cannot start; it is paused and retried while the agent and the other sinks run", "err", err,
			"next", "events for it are kept in the spool; fix the cause (a SIGHUP retries at once)")
	}
	l.stats.SetPaused("misconfigured")
}

func (l *lateSink) started() *built {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b
}

// reload (SIGHUP) reloads the started sink, or makes the next start come
// at once.
func (l *lateSink) reload() {
	b := l.started()
	if b == nil {
		l.poke()
		return
	}
	if err := b.reload(); err != nil {
		l.log.Error("sink reload failed; keeping the old credentials", "err", err)
	}
}

func (l *lateSink) poke() {
	select {
	case l.resume <- struct{}{}:
	default:
	}
}

// close closes the sink if it started; the forwarder has returned.
func (l *lateSink) close() {
	if b := l.started(); b != nil {
		b.close()
	}
}

// nextProbe is the next wait of bo, which never gives up.
func nextProbe(bo backoff.BackOff) time.Duration {
	d := bo.NextBackOff()
	if d == backoff.Stop || d <= 0 {
		bo.Reset()
		d = time.Second
	}
	return d
}

// warnLoosePermissions warns when a secret file is readable by other users
// (a key file should be 0600, or 0640 with a dedicated group).
func (a *Agent) warnLoosePermissions(variable, path string) {
	if path == "" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		return // the sink reports unreadable files itself
	}
	if fi.Mode().Perm()&0o007 != 0 {
		a.log.Warn("secret file is readable by other users; chmod 600 it", "variable", variable, "path", path, "mode", fi.Mode().Perm().String())
	}
}
