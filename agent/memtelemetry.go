package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/livepeer/edgerelay/agent/telemetry"
)

// gpuLookup is what the telemetry endpoints need of the GPU sampler: the
// latest device figures and the UUID of a local index.
type gpuLookup interface {
	Latest(uuid string, index int) (telemetry.DeviceFigures, bool)
	UUIDOf(index int) (string, bool)
}

// setupTelemetry builds the allocator registry shared by /v1/allocator,
// /v1/telemetry, the stormlog tail and the GPU sampler. gpu may be nil (no
// NVML): then allocator records carry no device join.
func (a *Agent) setupTelemetry(gpu gpuLookup) error {
	opts := telemetry.AllocatorsOptions{Host: a.cfg.Identity["host"], Interval: a.cfg.SampleInterval, Now: a.opts.Now}
	if gpu != nil {
		opts.Devices = gpu.Latest
		opts.Resolve = gpu.UUIDOf
	}
	alloc, err := telemetry.NewAllocators(opts)
	if err != nil {
		return fmt.Errorf("allocator registry: %w", err)
	}
	a.alloc, a.gpu = alloc, gpu
	return nil
}

// telemetryEnvelope stamps a normalized v3 record as an allocator_sample:
// data holds the record's fields plus identity (gpu_id from the sampler when
// the device index is known to it; the session's identity when the record's
// session_id names an attached session).
func (a *Agent) telemetryEnvelope(rec telemetry.Record, extra map[string]string, session string) ([]byte, error) {
	data := make(map[string]any, len(rec)+8)
	for k, v := range rec {
		data[k] = v
	}
	for k, v := range extra {
		if v != "" {
			data[k] = v
		}
	}
	if _, ok := data["gpu_id"]; !ok && a.gpu != nil {
		if uuid, ok := a.gpu.UUIDOf(int(rec.DeviceID())); ok && rec.DeviceID() >= 0 {
			data["gpu_id"] = uuid
		}
	}
	if session == "" {
		session = rec.SessionID()
	}
	env, err := a.stamper.Stamp("allocator_sample", data, a.sessions.identity(session))
	if err != nil {
		return nil, err
	}
	if len(env) > a.cfg.MaxEventBytes {
		return nil, fmt.Errorf("record: %d bytes once stamped is over the limit of %d", len(env), a.cfg.MaxEventBytes)
	}
	return env, nil
}

func (a *Agent) normalizeOptions() telemetry.NormalizeOptions {
	// The node's environment is not the runner's: identity comes from the
	// record (or its metadata) only.
	return telemetry.NormalizeOptions{AllowLegacy: a.cfg.TelemetryLegacy}
}

// handleTelemetry takes stormlog v2/v3 (and legacy) records.
func (a *Agent) handleTelemetry(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, a.cfg.MaxBodyBytes)
	if err != nil {
		writeBodyError(w, err)
		return
	}
	decoded, err := telemetry.DecodeRecords(body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, IngestAnswer{Rejected: []Rejection{}, Error: err.Error()})
		return
	}
	items := make([]item, len(decoded))
	for i, d := range decoded {
		items[i] = item{raw: d.Raw, err: d.Err}
	}
	status, ans := a.ingest(r.Context(), "telemetry", items, func(raw json.RawMessage) (prepared, error) {
		if len(raw) > a.cfg.MaxEventBytes {
			return prepared{}, fmt.Errorf("record: %d bytes is over the limit of %d", len(raw), a.cfg.MaxEventBytes)
		}
		rec, err := telemetry.Normalize(raw, a.normalizeOptions())
		if err != nil {
			return prepared{}, err
		}
		a.alloc.Observe(rec, "", telemetry.SourcePush)
		env, err := a.telemetryEnvelope(rec, nil, "")
		return prepared{env: env, typ: "allocator_sample", session: rec.SessionID()}, err
	})
	writeJSON(w, status, ans)
}

// handleAllocator takes one torch.cuda.memory_stats() snapshot. Over the
// unix socket the peer's pid (SO_PEERCRED) stands in for a missing "pid".
func (a *Agent) handleAllocator(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, 1<<20)
	if err != nil {
		writeBodyError(w, err)
		return
	}
	snap, err := telemetry.DecodeSnapshot(body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, IngestAnswer{Rejected: []Rejection{{Index: 0, Error: err.Error()}}, Error: "no acceptable item"})
		return
	}
	rec, id, err := a.alloc.Apply(snap, peerPID(r))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, IngestAnswer{Rejected: []Rejection{{Index: 0, Error: err.Error()}}, Error: "no acceptable item"})
		return
	}
	env, err := a.telemetryEnvelope(rec, map[string]string{"gpu_id": id.GPU, "pipeline": id.Pipeline, "model_id": id.ModelID}, snap.SessionID)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, IngestAnswer{Rejected: []Rejection{{Index: 0, Error: err.Error()}}, Error: "no acceptable item"})
		return
	}
	session := snap.SessionID
	if session == "" {
		session = rec.SessionID()
	}
	status, ans := a.ingest(r.Context(), "allocator", []item{{raw: env}}, func(raw json.RawMessage) (prepared, error) {
		return prepared{env: raw, typ: "allocator_sample", session: session}, nil
	})
	writeJSON(w, status, ans)
}

// startStormlogTail follows EDGERELAY_STORMLOG_DIR. A line's position is
// saved only once its envelope is in the spool, so a restart neither repeats
// nor skips records.
func (a *Agent) startStormlogTail() error {
	if a.cfg.StormlogDir == "" {
		return nil
	}
	t, err := telemetry.NewTailer(telemetry.TailerOptions{
		Dir:       a.cfg.StormlogDir,
		StatePath: filepath.Join(a.cfg.StateDir, "stormlog-tail.json"),
		Logger:    a.log.With("source", "stormlog"),
		Emit: func(ctx context.Context, raw json.RawMessage, _ telemetry.Position) error {
			rec, err := telemetry.Normalize(raw, telemetry.NormalizeOptions{AllowLegacy: true})
			if err != nil {
				a.counters.rejected.add("stormlog", 1)
				a.counters.dropped.add("stormlog/invalid_record", 1)
				return nil // a bad line is counted and skipped, not retried forever
			}
			a.alloc.Observe(rec, "", telemetry.SourceStormlog)
			env, err := a.telemetryEnvelope(rec, nil, "")
			if err != nil {
				a.counters.dropped.add("stormlog/invalid_record", 1)
				return nil
			}
			return a.submitAndWait(ctx, "stormlog", prepared{env: env, typ: "allocator_sample", session: rec.SessionID()})
		},
	})
	if err != nil {
		return fmt.Errorf("EDGERELAY_STORMLOG_DIR: %w", err)
	}
	a.stormlog = t
	a.goSource(func(ctx context.Context) {
		if err := t.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("stormlog tail stopped", "dir", a.cfg.StormlogDir, "err", err)
		}
	})
	return nil
}

// submitAndWait queues one envelope and waits until it is in the spool. It
// fails if the envelope was dropped before it was stored, so the caller can
// offer it again.
func (a *Agent) submitAndWait(ctx context.Context, source string, p prepared) error {
	w, err := a.submit(source, []prepared{p})
	if err != nil {
		return err
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed != nil {
		return w.failed
	}
	if len(w.dropped) > 0 {
		return errors.New("dropped before it was stored: ring full")
	}
	return nil
}
