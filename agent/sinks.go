package agent

import (
	"context"
	"fmt"
	"os"
	"time"

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
	if err := a.startStaticTrickle(); err != nil {
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
func (a *Agent) finishedSinks() map[string]SinkReport {
	a.sinksMu.Lock()
	defer a.sinksMu.Unlock()
	out := make(map[string]SinkReport, len(a.finished))
	for k, v := range a.finished {
		out[k] = v
	}
	return out
}

// attachSession registers a session's identity and starts its events
// channel publisher and subscriber, when it names them. Re-attaching a
// session replaces its channels.
func (a *Agent) attachSession(ctx context.Context, s *Session) error {
	if _, ok := a.sessions.get(s.SessionID); ok {
		a.stopSessionChannels(s.SessionID, a.cfg.ShutdownGrace, false)
	}
	a.sessions.put(s)
	if s.EventsURL != "" {
		if err := a.attachSessionChannel(s); err != nil {
			a.sessions.remove(s.SessionID)
			return err
		}
		a.sessSinkCount.Add(1)
	}
	if s.SubscribeURL != "" {
		sctx, cancel := context.WithCancel(a.intakeCtx)
		if err := a.startSubscriber(sctx, s.SubscribeURL); err != nil {
			cancel()
			a.stopSessionChannels(s.SessionID, 0, false)
			a.sessions.remove(s.SessionID)
			return fmt.Errorf("subscribe_url: %w", err)
		}
		a.sessSubs.Store(s.SessionID, cancel)
	}
	a.log.Info("session attached", "session_id", s.SessionID, "stream_id", s.StreamID, "gpu_id", s.GPUID, "events_channel", s.EventsURL != "", "subscribed", s.SubscribeURL != "")
	return nil
}

// detachSession flushes the session's channel (for at most the shutdown
// grace), deletes it if the session owns it, and forgets the session.
func (a *Agent) detachSession(ctx context.Context, id string) bool {
	if _, ok := a.sessions.get(id); !ok {
		return false
	}
	a.stopSessionChannels(id, a.cfg.ShutdownGrace, true)
	a.sessions.remove(id)
	a.log.Info("session detached", "session_id", id)
	return true
}

func (a *Agent) stopSessionChannels(id string, grace time.Duration, deleteOwned bool) {
	if c, ok := a.sessSubs.LoadAndDelete(id); ok {
		c.(context.CancelFunc)()
	}
	a.detachSessionChannel(id, grace, relay.DropChannelClosed, deleteOwned)
}

// detachAllSessions retires the session channels at shutdown, after the
// sinks have stopped: what they had not sent is counted as dropped
// ("shutdown"); channels are not deleted (the sessions may go on).
func (a *Agent) detachAllSessions() {
	a.sessSinks.mu.Lock()
	var ids []string
	for id := range a.sessSinks.m {
		ids = append(ids, id)
	}
	a.sessSinks.mu.Unlock()
	for _, id := range ids {
		a.detachSessionChannel(id, 0, "shutdown", false)
	}
}

func (a *Agent) startKafka() error {
	ko := a.cfg.Kafka
	if !ko.Enabled() {
		return nil
	}
	a.warnLoosePermissions("EDGERELAY_KAFKA_PASSWORD_FILE", ko.SASLPasswordFile)
	h, err := a.newSinkHandle(a.store, "kafka", "kafka")
	if err != nil {
		return err
	}
	ko.Stats, ko.Logger = h.stats, a.log.With("sink", "kafka")
	f := a.newForwarder(h)
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
	a.startForwarder(h, f, sink, func(f *relay.Forwarder) {
		f.Batch = 2000 // the client splits by broker limits itself
		f.Resume = sink.Resume()
	})
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
	h, err := a.newSinkHandle(a.store, "http", "http")
	if err != nil {
		return err
	}
	a.warnLoosePermissions("EDGERELAY_HTTP_API_KEY_FILE", a.cfg.HTTPAPIKeyFile)
	f := a.newForwarder(h)
	opts := httpOptions(a.cfg)
	opts.Stats, opts.Logger, opts.Alive = h.stats, a.log.With("sink", "http"), f.Alive
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
	a.startForwarder(h, f, sink, func(f *relay.Forwarder) {
		f.Batch, f.MaxBytes, f.Linger, f.ProbeInterval, f.Resume = batch, maxBytes, a.cfg.HTTPLinger, a.cfg.HTTPProbeInterval, sink.Resume()
	})
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
