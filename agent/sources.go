package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/livepeer/edgerelay/agent/pipeline"
	"github.com/livepeer/edgerelay/agent/telemetry"
	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/trickle"
)

// startSources starts the agent's own event sources. Each runs until
// intakeCtx ends and is waited for by shutdown.
func (a *Agent) startSources() error {
	a.goSource(a.statusLoop)
	a.startSampler()
	for _, u := range a.cfg.TrickleSubscribe {
		if err := a.startSubscriber(a.intakeCtx, u, ""); err != nil {
			return fmt.Errorf("EDGERELAY_TRICKLE_SUBSCRIBE: %w", err)
		}
	}
	return a.startStormlogTail()
}

// goSource runs fn as a source goroutine owned by the agent.
func (a *Agent) goSource(fn func(ctx context.Context)) {
	a.sources.Go(func() { fn(a.intakeCtx) })
}

// statusLoop emits agent_status every StatusInterval.
func (a *Agent) statusLoop(ctx context.Context) {
	every(ctx, a.cfg.StatusInterval, func() { a.emitStatus("interval") })
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

func (a *Agent) emitStatus(reason string) {
	a.emit("agent", "agent_status", a.statusData(reason), nil)
}

// startSubscriber follows a channel and relays its telemetry into the
// pipeline (source "trickle"), until ctx ends (or, for a session's channel,
// the channel does). A static channel (session "") survives 404 and
// DELETE: it is probed until it comes back. The subscriber checked each
// envelope already (envelope.AnnotateRelay).
func (a *Agent) startSubscriber(ctx context.Context, u, session string) error {
	name := relay.RedactURL(u)
	if session != "" {
		name = sessionPrefix + session
	}
	sub, err := trickle.NewSubscriber(trickle.SubscriberOptions{
		URL: u, Insecure: a.cfg.TrickleInsecure, Persistent: session == "",
		Logger: a.log.With("source", "trickle", "url", relay.RedactURL(u)),
		OnEnvelope: func(env []byte, ce envelope.Checked) {
			if len(env) > a.cfg.MaxEventBytes {
				a.counters.AddRejected("trickle", 1)
				return
			}
			a.pipe.Emit("trickle", pipeline.Entry{Env: env, Type: ce.Type, Session: ce.SessionID})
		},
	})
	if err != nil {
		return err
	}
	a.subs.add(name, sub)
	a.sources.Go(func() {
		defer a.subs.end(name, session != "")
		if err := sub.Run(ctx); errors.Is(err, relay.ErrClosed) {
			a.log.Info("subscribed channel ended", "url", relay.RedactURL(u), "why", sub.Stats().Ended)
		}
	})
	return nil
}

// startStormlogTail follows EDGERELAY_STORMLOG_DIR. A line's position is
// saved only once its envelope is in the spool, so a restart neither repeats
// nor skips records.
func (a *Agent) startStormlogTail() error {
	if a.cfg.StormlogDir == "" {
		return nil
	}
	sessions := segmentSessions{dir: a.cfg.StormlogDir}
	t, err := telemetry.NewTailer(telemetry.TailerOptions{
		Dir:       a.cfg.StormlogDir,
		StatePath: filepath.Join(a.cfg.StateDir, "stormlog-tail.json"),
		Logger:    a.log.With("source", "stormlog"),
		Emit: func(ctx context.Context, raw json.RawMessage, pos telemetry.Position) error {
			// A record without a session id takes its segment's, as
			// stormlog's loader gives it.
			opts := telemetry.NormalizeOptions{AllowLegacy: true, DefaultSessionID: sessions.of(pos.File)}
			rec, err := telemetry.Normalize(raw, opts)
			if err != nil {
				a.counters.AddRejected("stormlog", 1)
				a.counters.AddDropped("stormlog", "invalid_record", 1)
				return nil // a bad line is counted and skipped, not retried forever
			}
			a.alloc.Observe(rec, "", telemetry.SourceStormlog)
			env, err := a.envs.Allocator(rec, nil, "")
			if err != nil {
				a.counters.AddDropped("stormlog", "invalid_record", 1)
				return nil
			}
			return a.pipe.SubmitWait(ctx, "stormlog", pipeline.Entry{Env: env, Type: telemetry.TypeAllocatorSample, Session: rec.SessionID()})
		},
	})
	if err != nil {
		return fmt.Errorf("EDGERELAY_STORMLOG_DIR: %w", err)
	}
	a.goSource(func(ctx context.Context) {
		if err := t.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("stormlog tail stopped", "dir", a.cfg.StormlogDir, "err", err)
		}
	})
	return nil
}

// segmentSessions remembers the session id of the stormlog segment being
// tailed (the tail's goroutine only). One the manifest lists is kept; the
// path-derived one is looked at again after a second, since the writer may
// list the segment in its manifest after writing to it.
type segmentSessions struct {
	dir     string
	file    string
	id      string
	listed  bool
	checked time.Time
}

func (s *segmentSessions) of(file string) string {
	if file != s.file || (!s.listed && time.Since(s.checked) >= time.Second) {
		s.file, s.checked = file, time.Now()
		s.id, s.listed = telemetry.SegmentSessionID(filepath.Join(s.dir, file))
	}
	return s.id
}

// Reload re-reads what may change without a restart (SIGHUP): secrets such
// as the HTTP sink's key file, and the log level.
func (a *Agent) Reload() {
	a.log.Info("reloading secrets and log level")
	for _, fn := range a.reloaders {
		fn()
	}
	if a.cfg.EnvFile == "" || a.opts.LogLevel == nil {
		return
	}
	v, err := readEnvFileValue(a.cfg.EnvFile, "EDGERELAY_LOG_LEVEL")
	if err != nil {
		a.log.Error("reload: cannot read the environment file; log level unchanged", "path", a.cfg.EnvFile, "err", err)
		return
	}
	if v == "" {
		v = "info"
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		a.log.Error("reload: bad EDGERELAY_LOG_LEVEL; log level unchanged", "value", v)
		return
	}
	if old := a.opts.LogLevel.Level(); old != l {
		a.opts.LogLevel.Set(l)
		a.log.Info("log level changed", "from", old.String(), "to", l.String())
	}
}

// readEnvFileValue returns the value of key in a systemd EnvironmentFile
// (KEY=VALUE lines, # comments, optional quotes), "" when absent.
func readEnvFileValue(path, key string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	val := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok && strings.TrimSpace(k) == key {
			val = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return val, nil
}
