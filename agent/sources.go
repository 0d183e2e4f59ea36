package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// startSources starts the agent's own event sources. Each runs until
// intakeCtx ends and is waited for by shutdown.
func (a *Agent) startSources() error {
	a.goSource(a.statusLoop)
	a.startSampler()
	for _, u := range a.cfg.TrickleSubscribe {
		if err := a.startSubscriber(a.intakeCtx, u); err != nil {
			return fmt.Errorf("EDGERELAY_TRICKLE_SUBSCRIBE: %w", err)
		}
	}
	return a.startStormlogTail()
}

// goSource runs fn as a source goroutine owned by the agent.
func (a *Agent) goSource(fn func(ctx context.Context)) {
	a.sources.Add(1)
	go func() {
		defer a.sources.Done()
		fn(a.intakeCtx)
	}()
}

// statusLoop emits agent_status every StatusInterval.
func (a *Agent) statusLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.emitStatus("interval")
		}
	}
}

func (a *Agent) emitStatus(reason string) {
	a.emit("agent", "agent_status", a.statusData(reason), nil)
}

// extraCollectors are Prometheus collectors of optional parts (GPU gauges).
func (a *Agent) extraCollectors() []prometheus.Collector {
	if a.sampler == nil {
		return nil
	}
	return []prometheus.Collector{a.sampler.Collector()}
}

// registerRoutes adds the endpoints of the telemetry and session parts.
func (a *Agent) registerRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/telemetry", a.intake(a.handleTelemetry))
	mux.HandleFunc("POST /v1/allocator", a.intake(a.handleAllocator))
}

// Reload re-reads what may change without a restart (SIGHUP): secrets such
// as the HTTP sink's key file.
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
