package agent

import (
	"context"
	"fmt"
	"strings"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/httpsink"
	"github.com/livepeer/edgerelay/relay/kafkasink"
)

// startSinks registers every configured sink in the store and starts its
// forwarder.
func (a *Agent) startSinks() error {
	if a.cfg.Stdout {
		if _, err := a.addForwarder(a.store, "stdout", "stdout", relay.NewStdoutSink(a.opts.Stdout), nil); err != nil {
			return err
		}
	}
	if err := a.startHTTP(); err != nil {
		return err
	}
	if err := a.startKafka(); err != nil {
		return err
	}
	if a.opts.extraSink != nil {
		if _, err := a.addForwarder(a.store, "test", "test", a.opts.extraSink, nil); err != nil {
			return err
		}
	}
	return nil
}

// finishedSinks are the final reports of sinks that have been removed
// (detached sessions), so totals stay whole.
func (a *Agent) finishedSinks() map[string]SinkReport { return nil }

// attachSession registers a session's identity.
func (a *Agent) attachSession(ctx context.Context, s *Session) error {
	if a.sessions.put(s) {
		a.log.Info("session re-attached", "session_id", s.SessionID)
	} else {
		a.log.Info("session attached", "session_id", s.SessionID, "stream_id", s.StreamID, "gpu_id", s.GPUID)
	}
	return nil
}

// detachSession forgets a session.
func (a *Agent) detachSession(ctx context.Context, id string) bool {
	_, ok := a.sessions.remove(id)
	if ok {
		a.log.Info("session detached", "session_id", id)
	}
	return ok
}

func (a *Agent) detachAllSessions() {}

// kafkaOptions reads the EDGERELAY_KAFKA_* settings; the brokers may come
// from a flag, so they are taken from the loaded configuration.
func kafkaOptions(c Config) (kafkasink.Options, error) {
	getenv := func(k string) string {
		if k == kafkasink.EnvBrokers {
			return strings.Join(c.KafkaBrokers, ",")
		}
		if c.Getenv == nil {
			return ""
		}
		return c.Getenv(k)
	}
	return kafkasink.OptionsFromEnv(getenv)
}

func (a *Agent) startKafka() error {
	ko, err := kafkaOptions(a.cfg)
	if err != nil || !ko.Enabled() {
		return err
	}
	h, err := a.newSinkHandle(a.store, "kafka", "kafka")
	if err != nil {
		return err
	}
	ko.Stats, ko.Logger = h.stats, a.log.With("sink", "kafka")
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
	a.startForwarder(h, sink, func(f *relay.Forwarder) {
		f.Batch = 2000 // the client splits by broker limits itself
		f.Resume = sink.Resume()
	})
	return nil
}

// httpOptions maps the configuration to the HTTP sink's options.
func httpOptions(c Config) httpsink.Options {
	rate := c.HTTPRate
	if rate == 0 {
		rate = httpsink.RateUnlimited // EDGERELAY_HTTP_RATE=0 means unlimited; the option's 0 means default
	}
	return httpsink.Options{
		URL:                c.HTTPURL,
		APIKey:             c.HTTPAPIKey,
		APIKeyFile:         c.HTTPAPIKeyFile,
		Host:               c.Identity["host"],
		MaxEvents:          c.HTTPBatch,
		MaxBody:            c.HTTPMaxBody,
		RatePerMinute:      rate,
		Gzip:               c.HTTPGzip,
		InsecureSkipVerify: c.HTTPInsecure,
		Timeout:            c.HTTPTimeout,
	}
}

func (a *Agent) startHTTP() error {
	if a.cfg.HTTPURL == "" {
		return nil
	}
	h, err := a.newSinkHandle(a.store, "http", "http")
	if err != nil {
		return err
	}
	opts := httpOptions(a.cfg)
	opts.Stats, opts.Logger = h.stats, a.log.With("sink", "http")
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
	a.sinkWG.Add(1)
	go func() {
		defer a.sinkWG.Done()
		sink.WatchKey(a.sinkCtx)
	}()
	batch, maxBytes := sink.Limits()
	a.startForwarder(h, sink, func(f *relay.Forwarder) {
		f.Batch, f.MaxBytes, f.Linger, f.ProbeInterval, f.Resume = batch, maxBytes, a.cfg.HTTPLinger, a.cfg.HTTPProbeInterval, sink.Resume()
	})
	return nil
}
