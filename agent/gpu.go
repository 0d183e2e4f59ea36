package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/livepeer/edgerelay/envelope"

	"github.com/livepeer/edgerelay/agent/hostnet"
	"github.com/livepeer/edgerelay/agent/sampler"
	"github.com/livepeer/edgerelay/agent/telemetry"
	"github.com/livepeer/edgerelay/nvml"
)

// setupGPU opens NVML as EDGERELAY_NVML says, builds the allocator registry
// and the sampler (GPUs and host network), and starts nothing yet. With
// "auto" a machine without NVML goes on without GPUs, saying so once; with
// "on" it is a start-up error.
func (a *Agent) setupGPU() error {
	gpus, err := nvml.Open(nvml.Options{Mode: a.cfg.NVML, LibraryPath: a.cfg.NVMLLibrary, Logger: a.log.With("part", "nvml")})
	switch {
	case err == nil:
		info := gpus.Info()
		a.log.Info("NVML ready", "source", info.Source, "gpus", gpus.Count(), "driver", info.DriverVersion)
		a.gpus = gpus
		a.closers = append(a.closers, func() { a.closeNVML(gpus.Close) })
	case errors.Is(err, nvml.ErrDisabled):
		gpus = nil
	case errors.Is(err, nvml.ErrUnavailable) && a.cfg.NVML != "on":
		a.log.Info("no GPUs: NVML unavailable; going on without GPU samples", "reason", err.Error())
		gpus = nil
	default:
		return fmt.Errorf("EDGERELAY_NVML=%s: %w", a.cfg.NVML, err)
	}
	var hn sampler.HostNet
	if a.cfg.HostNet {
		hn = hostnet.New("")
	}
	if gpus == nil && hn == nil && !a.cfg.StreamNetwork {
		return a.setupTelemetry(nil)
	}
	// The sampler and the allocator registry refer to each other: the
	// registry joins the sampler's device figures, the sampler reads the
	// registry's allocator figures. smp is set before anything runs.
	var smp *sampler.Sampler
	if err := a.setupTelemetry(samplerLookup{&smp}); err != nil {
		return err
	}
	opts := sampler.Options{
		HostNet:         hn,
		Host:            a.cfg.Identity["host"],
		Interval:        a.cfg.SampleInterval,
		ProcessInterval: a.cfg.ProcessInterval,
		Allocators:      a.alloc,
		Logger:          a.log.With("part", "sampler"),
		ProcRoot:        a.opts.procRoot,
		SessionFor: func(uuid string, pids []int) string {
			if s, ok := a.sessions.ForGPU(uuid, pids); ok {
				return s.SessionID
			}
			return ""
		},
		Emit: func(typ string, data map[string]any) {
			source := "gpu"
			if typ == sampler.TypeHostNet || typ == sampler.TypeStreamNet {
				source = "hostnet"
			}
			var sess envelope.Identity
			if sid, ok := data["session_id"].(string); ok {
				sess = a.sessions.Identity(sid)
			}
			a.emit(source, typ, data, sess)
		},
	}
	if gpus != nil {
		opts.GPUs = gpus
	}
	if a.cfg.StreamNetwork {
		opts.StreamNet = hostnet.NewNamespaces(a.opts.procRoot)
		opts.Runners = func() []hostnet.Target {
			rs := a.sessions.Runners()
			out := make([]hostnet.Target, len(rs))
			for i, r := range rs {
				out[i] = hostnet.Target{Key: r.SessionID, PID: r.PID}
			}
			return out
		}
	}
	smp, err = sampler.New(opts)
	if err != nil {
		return fmt.Errorf("sampler: %w", err)
	}
	a.sampler = smp
	return nil
}

// samplerLookup lets the allocator registry reach the sampler built after it.
type samplerLookup struct{ smp **sampler.Sampler }

func (l samplerLookup) Latest(uuid string, index int) (d telemetry.DeviceFigures, ok bool) {
	if *l.smp == nil {
		return d, false
	}
	return (*l.smp).Latest(uuid, index)
}

func (l samplerLookup) UUIDOf(index int) (string, bool) {
	if *l.smp == nil {
		return "", false
	}
	return (*l.smp).UUIDOf(index)
}

// startSampler runs the sampler as a source.
func (a *Agent) startSampler() {
	if a.sampler == nil {
		return
	}
	a.goSource(func(ctx context.Context) {
		if err := a.sampler.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("sampler stopped", "err", err)
		}
	})
}

// gpuLookup is what the telemetry endpoints need of the GPU sampler: the
// latest device figures and the UUID of a local index.
type gpuLookup interface {
	Latest(uuid string, index int) (telemetry.DeviceFigures, bool)
	UUIDOf(index int) (string, bool)
}

// setupTelemetry builds the allocator registry shared by /v1/allocator,
// /v1/telemetry, the stormlog tail and the GPU sampler, and the stamping of
// allocator_sample envelopes. gpu may be nil (no NVML): then allocator
// records carry no device join.
func (a *Agent) setupTelemetry(gpu gpuLookup) error {
	opts := telemetry.AllocatorsOptions{Host: a.cfg.Identity["host"], Interval: a.cfg.SampleInterval, Now: a.opts.Now}
	a.envs = &telemetry.Envelopes{Stamper: a.stamper, Session: a.sessions.Identity, MaxBytes: a.cfg.MaxEventBytes}
	if gpu != nil {
		opts.Devices = gpu.Latest
		opts.Resolve = gpu.UUIDOf
		a.envs.UUIDOf = gpu.UUIDOf
	}
	alloc, err := telemetry.NewAllocators(opts)
	if err != nil {
		return fmt.Errorf("allocator registry: %w", err)
	}
	a.alloc, a.gpu = alloc, gpu
	return nil
}

// nvmlCloseWait bounds NVML's shutdown: a call hung in the driver holds the
// backend's lock, and shutdown must not wait on it forever.
const nvmlCloseWait = 2 * time.Second

// closeNVML shuts NVML down, waiting at most nvmlCloseWait; past that the
// process exits with the call still in the driver.
func (a *Agent) closeNVML(closeFn func() error) {
	done := make(chan error, 1)
	go func() { done <- closeFn() }()
	// Within the stop's slack: past the grace, a call hung in the driver
	// does not hold the exit for long, and a second signal not at all.
	wait := nvmlCloseWait
	if !a.stopBy.IsZero() {
		wait = min(wait, max(time.Until(a.stopBy.Add(stopSlack/2)), 100*time.Millisecond))
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			a.log.Warn("NVML shutdown failed", "err", err)
		}
	case <-t.C:
		a.log.Error("NVML shutdown is blocked by a hung call; leaving it", "waited", wait)
	case <-a.abort:
		a.log.Warn("second signal: not waiting for NVML to shut down")
	}
}
