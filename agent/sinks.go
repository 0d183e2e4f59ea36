package agent

import (
	"fmt"
	"os"

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
	sink, err := httpsink.New(opts)
	if err != nil {
		return fmt.Errorf("http sink: %w", err)
	}
	if a.cfg.HTTPInsecure {
		a.log.Warn("http sink: TLS verification is off (EDGERELAY_HTTP_INSECURE)")
	}
	a.reloaders = append(a.reloaders, func() {
		if err := sink.Reload(); err != nil {
			a.log.Error("http: reload failed; keeping the old key", "err", err)
		}
	})
	a.closers = append(a.closers, sink.Close)
	a.sinkAux.Go(func() { sink.WatchKey(a.sinkCtx) })
	f.Sink = sink
	sink.Tune(f) // batch limits, resume, and the waits the metrics API asks for
	f.Linger, f.ProbeInterval = a.cfg.HTTPLinger, a.cfg.HTTPProbeInterval
	a.run("http", f, nil)
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
	sink, err := kafkasink.New(a.sinkCtx, ko)
	if err != nil {
		return fmt.Errorf("kafka sink: %w", err)
	}
	a.reloaders = append(a.reloaders, func() {
		if err := sink.Reload(); err != nil {
			a.log.Error("kafka: reload failed; keeping the old credentials", "err", err)
		}
	})
	a.closers = append(a.closers, sink.Close)
	f.Sink = sink
	f.Batch = 2000 // the client splits by broker limits itself
	f.Resume = sink.Resume()
	a.run("kafka", f, nil)
	return nil
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
