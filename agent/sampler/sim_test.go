//go:build linux && cgo

package sampler

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/livepeer/edgerelay/agent/telemetry"
	"github.com/livepeer/edgerelay/nvml"
)

// v3Fields is the stormlog v3 field set (spec/stormlog.md): required, then
// optional.
var v3Fields = []string{
	"schema_version", "session_id", "timestamp_ns", "event_type", "collector",
	"sampling_interval_ms", "pid", "host", "device_id", "allocator_allocated_bytes",
	"allocator_reserved_bytes", "allocator_active_bytes", "allocator_inactive_bytes",
	"allocator_change_bytes", "device_used_bytes", "device_free_bytes", "device_total_bytes",
	"context", "metadata",
	"job_id", "rank", "local_rank", "world_size",
}

// harness is a sampler on a simulated DGX H100, running in the current
// synctest bubble.
type harness struct {
	t       *testing.T
	b       *nvml.Backend
	sim     *nvml.Sim
	s       *Sampler
	rec     *recorder
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stopped bool
}

// start opens the simulation and runs a sampler on it; before calls
// prepare the simulation before the first tick. It returns after the first
// tick.
func start(t *testing.T, opts Options, before ...func(*nvml.Sim)) *harness {
	t.Helper()
	b, sim, err := nvml.OpenSim(nvml.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range before {
		f(sim)
	}
	h := &harness{t: t, b: b, sim: sim, rec: &recorder{}}
	opts.GPUs = b
	opts.Emit = h.rec.emit
	if opts.Host == "" {
		opts.Host = "node-1"
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = t.TempDir()
	}
	h.s, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.wg.Go(func() {
		if err := h.s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	synctest.Wait()
	return h
}

// after advances the bubble's clock by d and lets the sampler catch up.
func (h *harness) after(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func (h *harness) stop() {
	if h.stopped {
		return
	}
	h.stopped = true
	h.cancel()
	h.wg.Wait()
	if err := h.b.Close(); err != nil {
		h.t.Errorf("Close: %v", err)
	}
}

func byGPU(samples []map[string]any) map[string]map[string]any {
	out := make(map[string]map[string]any, len(samples))
	for _, d := range samples {
		out[d["gpu_id"].(string)] = d
	}
	return out
}

func TestEightGPUsPerTick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{})
		defer h.stop()
		for tick := range 3 {
			if tick > 0 {
				h.after(time.Second)
			}
			samples := h.rec.take(TypeMemory)
			if len(samples) != 8 {
				t.Fatalf("tick %d: %d gpu_memory_sample, want 8", tick, len(samples))
			}
			for i, d := range samples {
				if d["gpu_id"] != nvml.SimUUID(i) || d["device_id"] != i {
					t.Errorf("tick %d sample %d: gpu_id %v device_id %v", tick, i, d["gpu_id"], d["device_id"])
				}
				if d["name"] != "NVIDIA H100 80GB HBM3" || !strings.HasPrefix(d["pci_bus_id"].(string), "00000000:") {
					t.Errorf("identity extras: %v %v", d["name"], d["pci_bus_id"])
				}
				for _, k := range []string{"memory_info_version", "memory_reserved_bytes", "utilization_gpu_pct", "utilization_memory_pct", "temperature_c", "power_mw", "sm_clock_mhz"} {
					if _, ok := d[k]; !ok {
						t.Errorf("sample %d lacks %s", i, k)
					}
				}
				if d["timestamp_ns"] != time.Now().UnixNano() {
					t.Errorf("timestamp_ns %v is not the tick's time %d", d["timestamp_ns"], time.Now().UnixNano())
				}
			}
		}
	})
}

// fakeAllocators answers Latest from a map.
type fakeAllocators map[string]telemetry.AllocatorFigures

func (f fakeAllocators) Latest(id string) (telemetry.AllocatorFigures, bool) {
	fig, ok := f[id]
	return fig, ok
}

func TestMemorySamplesPassV3Validation(t *testing.T) {
	active := int64(3 << 30)
	allocs := fakeAllocators{
		nvml.SimUUID(0): {PID: 4321, Allocated: 5 << 30, Reserved: 6 << 30, Active: &active, Change: -1 << 20, Source: "push"},
		nvml.SimUUID(1): {PID: -1, Allocated: 1 << 30, Reserved: 2 << 30, Source: "stormlog", Stale: true},
	}
	for _, tc := range []struct {
		name string
		opts Options
		sim  func(*nvml.Sim)
	}{
		{"no allocator figures", Options{}, func(*nvml.Sim) {}},
		{"with allocator figures", Options{Allocators: allocs, SessionFor: func(id string, _ []int) string {
			if id == "" {
				return ""
			}
			return "stream-" + id[len(id)-1:]
		}}, func(*nvml.Sim) {}},
		{"unsupported readings", Options{}, func(s *nvml.Sim) {
			for i := range s.Len() {
				s.SetUnsupported(i, nvml.FieldPower|nvml.FieldUtilization|nvml.FieldTemperature|nvml.FieldSMClock, true)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := start(t, tc.opts, tc.sim)
				defer h.stop()
				h.after(10 * time.Second)
				samples := h.rec.take(TypeMemory)
				if len(samples) != 88 {
					t.Fatalf("%d samples over 11 ticks, want 88", len(samples))
				}
				for _, d := range samples {
					proj := make(map[string]any, len(v3Fields))
					for _, f := range v3Fields {
						v, ok := d[f]
						if !ok {
							t.Fatalf("sample lacks v3 field %s: %v", f, d)
						}
						proj[f] = v
					}
					raw, err := json.Marshal(proj)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := telemetry.Validate(raw); err != nil {
						t.Fatalf("v3 validation: %v\n%s", err, raw)
					}
				}
			})
		})
	}
}

func TestAllocatorJoinAndSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		active := int64(3 << 30)
		h := start(t, Options{
			Allocators: fakeAllocators{
				nvml.SimUUID(0): {PID: 4321, Allocated: 5 << 30, Reserved: 6 << 30, Active: &active, Change: -1 << 20, Source: "push"},
				nvml.SimUUID(1): {PID: -1, Allocated: 1 << 30, Reserved: 2 << 30, Source: "stormlog", Stale: true},
			},
			SessionFor: func(id string, _ []int) string {
				if id == nvml.SimUUID(0) {
					return "stream-abc"
				}
				return ""
			},
		})
		defer h.stop()
		first := byGPU(h.rec.take(TypeMemory))
		g0, g1, g2 := first[nvml.SimUUID(0)], first[nvml.SimUUID(1)], first[nvml.SimUUID(2)]
		if g0["allocator_allocated_bytes"] != int64(5<<30) || g0["allocator_active_bytes"] != active || g0["allocator_inactive_bytes"] != nil || g0["allocator_change_bytes"] != int64(-1<<20) {
			t.Errorf("GPU 0 allocator fields: %v", g0)
		}
		if m := g0["metadata"].(map[string]any); m["allocator_source"] != "push" || m["allocator_stale"] != false || m["allocator_pid"] != 4321 {
			t.Errorf("GPU 0 metadata = %v", m)
		}
		if m := g1["metadata"].(map[string]any); m["allocator_source"] != "stormlog" || m["allocator_stale"] != true {
			t.Errorf("GPU 1 metadata = %v", m)
		}
		if m := g2["metadata"].(map[string]any); m["allocator_source"] != "none" || g2["allocator_allocated_bytes"] != 0 || g2["allocator_active_bytes"] != nil {
			t.Errorf("GPU 2 without figures: metadata %v, fields %v", m, g2)
		}
		if g0["session_id"] != "stream-abc" {
			t.Errorf("GPU 0 session = %v", g0["session_id"])
		}
		own := g1["session_id"].(string)
		if own == "" || own != g2["session_id"] {
			t.Errorf("default sessions %q and %q, want one non-empty per-run id", own, g2["session_id"])
		}
		h.after(time.Second)
		if later := byGPU(h.rec.take(TypeMemory)); later[nvml.SimUUID(2)]["session_id"] != own {
			t.Errorf("default session changed between ticks: %v then %v", own, later[nvml.SimUUID(2)]["session_id"])
		}
	})
}

func TestLostGPUReportedAndRecovered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{})
		defer h.stop()
		lostID := nvml.SimUUID(3)
		h.rec.all()
		h.sim.SetLost(3, true)
		h.after(time.Second)
		evs := h.rec.all()
		var mem, lost []map[string]any
		for _, e := range evs {
			switch e.typ {
			case TypeMemory:
				mem = append(mem, e.data)
			case TypeLost:
				lost = append(lost, e.data)
			}
		}
		if len(mem) != 7 || byGPU(mem)[lostID] != nil {
			t.Errorf("%d memory samples while GPU 3 is lost (GPU 3 present: %v), want the 7 others", len(mem), byGPU(mem)[lostID] != nil)
		}
		if len(lost) != 1 || lost[0]["gpu_id"] != lostID || lost[0]["device_id"] != 3 || !strings.Contains(lost[0]["error"].(string), "GPU_IS_LOST") {
			t.Fatalf("lost events = %v", lost)
		}
		if _, ok := h.s.Latest(lostID, -1); ok {
			t.Error("Latest answers for a lost GPU")
		}
		if got := gaugeValue(t, h.s, "edgerelay_gpu_lost", lostID); got != 1 {
			t.Errorf("edgerelay_gpu_lost = %v, want 1", got)
		}
		if got := counterValue(t, h.s, "edgerelay_gpu_samples_skipped_total", "lost"); got != 1 {
			t.Errorf("skipped{lost} = %v, want 1", got)
		}

		// Lost for a while: one lost event only, no memory samples.
		h.after(4 * time.Second)
		for _, e := range h.rec.all() {
			if e.typ == TypeLost || (e.typ == TypeMemory && e.data["gpu_id"] == lostID) || e.typ == TypeRecovered {
				t.Errorf("while lost: %s %v", e.typ, e.data)
			}
		}

		h.sim.SetLost(3, false)
		var recovered map[string]any
		for range 10 { // the backoff decides the tick; within 8 s at these settings
			h.after(time.Second)
			for _, e := range h.rec.all() {
				if e.typ == TypeRecovered {
					recovered = e.data
				}
				if e.typ == TypeMemory && e.data["gpu_id"] == lostID && recovered == nil {
					t.Error("memory sample of GPU 3 before its recovery event")
				}
			}
			if recovered != nil {
				break
			}
		}
		if recovered == nil || recovered["gpu_id"] != lostID || recovered["lost_for_ms"].(int64) < 5000 {
			t.Fatalf("recovered event = %v", recovered)
		}
		h.after(time.Second)
		if mem := h.rec.take(TypeMemory); len(mem) != 8 {
			t.Errorf("after recovery %d samples per tick, want 8", len(mem))
		}
		if got := gaugeValue(t, h.s, "edgerelay_gpu_lost", lostID); got != 0 {
			t.Errorf("edgerelay_gpu_lost after recovery = %v", got)
		}
	})
}

func TestUnsupportedFieldsAbsent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{}, func(s *nvml.Sim) {
			s.SetUnsupported(2, nvml.FieldPower, true)
			s.SetUnsupported(5, nvml.FieldECCVolatileUncorrected|nvml.FieldECCVolatileCorrected|nvml.FieldECCAggregateUncorrected|nvml.FieldRemappedRows, true)
		})
		defer h.stop()
		got := byGPU(h.rec.take(TypeMemory))
		if _, ok := got[nvml.SimUUID(2)]["power_mw"]; ok {
			t.Errorf("GPU 2 reports power_mw = %v; its power is unsupported", got[nvml.SimUUID(2)]["power_mw"])
		}
		if _, ok := got[nvml.SimUUID(1)]["power_mw"]; !ok {
			t.Error("GPU 1 lacks power_mw")
		}
		for _, k := range []string{"ecc_volatile_uncorrected", "remapped_rows_pending"} {
			if _, ok := got[nvml.SimUUID(5)][k]; ok {
				t.Errorf("GPU 5 reports %s; ECC is unsupported", k)
			}
		}
		// The first tick runs before the first ECC read; the next carries it.
		h.after(time.Second)
		got = byGPU(h.rec.take(TypeMemory))
		if got[nvml.SimUUID(0)]["remapped_rows_pending"] != false || got[nvml.SimUUID(0)]["ecc_volatile_uncorrected"] != uint64(0) {
			t.Errorf("GPU 0 ECC extras: %v", got[nvml.SimUUID(0)])
		}
		if _, ok := got[nvml.SimUUID(5)]["ecc_aggregate_uncorrected"]; ok {
			t.Error("GPU 5 reports ECC after the ECC read")
		}
		if n := seriesCount(t, h.s, "edgerelay_gpu_power_watts"); n != 7 {
			t.Errorf("%d power series, want 7 (none for GPU 2)", n)
		}
	})
}

func TestProcessSamplesAndAttribution(t *testing.T) {
	cid := strings.Repeat("0123456789abcdef", 4)
	root := t.TempDir()
	mk := func(pid int, files map[string]string) {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk(10000, map[string]string{"cgroup": "0::/system.slice/docker-" + cid + ".scope\n", "environ": "PIPELINE=live-video-to-video\x00MODEL_ID=streamdiffusion\x00", "comm": "python3\n"})
	mk(10001, map[string]string{"cgroup": "0::/system.slice/edgerelay-test.service\n", "comm": "worker\n"})
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{ProcRoot: root, ProcessInterval: 5 * time.Second})
		defer h.stop()
		procs := byGPU(h.rec.take(TypeProcess))
		if len(procs) != 8 {
			t.Fatalf("%d process samples, want one per GPU", len(procs))
		}
		p0 := procs[nvml.SimUUID(0)]
		want := map[string]any{"gpu_id": nvml.SimUUID(0), "device_id": 0, "pid": 10000, "process_name": "/usr/bin/python3",
			"container_id": cid, "cgroup": "/system.slice/docker-" + cid + ".scope", "pipeline": "live-video-to-video", "model_id": "streamdiffusion"}
		for k, v := range want {
			if p0[k] != v {
				t.Errorf("GPU 0 process %s = %v, want %v", k, p0[k], v)
			}
		}
		if _, ok := p0["used_gpu_memory_bytes"].(uint64); !ok {
			t.Errorf("used_gpu_memory_bytes = %v", p0["used_gpu_memory_bytes"])
		}
		p1 := procs[nvml.SimUUID(1)]
		for _, k := range []string{"container_id", "pipeline", "model_id"} {
			if _, ok := p1[k]; ok {
				t.Errorf("GPU 1 host process has %s = %v", k, p1[k])
			}
		}
		if p1["cgroup"] != "/system.slice/edgerelay-test.service" {
			t.Errorf("GPU 1 cgroup = %v", p1["cgroup"])
		}
		if _, ok := procs[nvml.SimUUID(2)]["cgroup"]; ok { // pid 10002 has no /proc entry
			t.Errorf("GPU 2 process without /proc entry has a cgroup")
		}
		fig, ok := h.s.Latest(nvml.SimUUID(0), -1)
		if !ok || fig.ProcessUsed[10000] == 0 || fig.Total != 80<<30 || fig.Index != 0 {
			t.Errorf("Latest = %+v %v", fig, ok)
		}
		if byIndex, ok := h.s.Latest("", 0); !ok || byIndex.UUID != nvml.SimUUID(0) {
			t.Errorf("Latest by index = %+v %v", byIndex, ok)
		}
		if id, ok := h.s.UUIDOf(4); !ok || id != nvml.SimUUID(4) {
			t.Errorf("UUIDOf(4) = %q %v", id, ok)
		}

		// Not before the process interval; then again, with GPU 1 idle and
		// a second process on GPU 0 whose memory the driver cannot see.
		h.sim.SetProcesses(1, []nvml.Process{})
		h.sim.SetProcesses(0, []nvml.Process{{PID: 10000, UsedBytes: 1 << 30, HasUsed: true}, {PID: 20000}})
		h.after(4 * time.Second)
		if n := len(h.rec.take(TypeProcess)); n != 0 {
			t.Errorf("%d process samples before the process interval", n)
		}
		h.after(time.Second)
		var gpu0, gpu1 int
		for _, d := range h.rec.take(TypeProcess) {
			switch d["gpu_id"] {
			case nvml.SimUUID(0):
				gpu0++
				if d["pid"] == 20000 {
					if _, ok := d["used_gpu_memory_bytes"]; ok {
						t.Error("unknown per-process memory reported")
					}
				}
			case nvml.SimUUID(1):
				gpu1++
			}
		}
		if gpu0 != 2 || gpu1 != 0 {
			t.Errorf("second interval: %d processes on GPU 0, %d on GPU 1; want 2 and 0", gpu0, gpu1)
		}
	})
}

func TestXidEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{})
		defer h.stop()
		h.sim.InjectXid(4, 79)
		h.after(time.Second)
		xids := h.rec.take(TypeXid)
		if len(xids) != 1 || xids[0]["gpu_id"] != nvml.SimUUID(4) || xids[0]["xid"] != uint64(79) || xids[0]["device_id"] != 4 {
			t.Errorf("xid events = %v", xids)
		}
	})
}

func TestPrometheusGauges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{})
		defer h.stop()
		reg := prometheus.NewPedanticRegistry()
		if err := reg.Register(h.s.Collector()); err != nil {
			t.Fatal(err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]*dto.MetricFamily{}
		for _, mf := range mfs {
			names[mf.GetName()] = mf
		}
		for _, n := range []string{"edgerelay_gpu_memory_used_bytes", "edgerelay_gpu_memory_free_bytes", "edgerelay_gpu_memory_total_bytes",
			"edgerelay_gpu_memory_reserved_bytes", "edgerelay_gpu_utilization_ratio", "edgerelay_gpu_memory_utilization_ratio",
			"edgerelay_gpu_temperature_celsius", "edgerelay_gpu_power_watts", "edgerelay_gpu_sm_clock_hz", "edgerelay_gpu_lost"} {
			mf := names[n]
			if mf == nil || len(mf.GetMetric()) != 8 {
				t.Errorf("%s: %v series, want 8", n, mf)
				continue
			}
			var labels []string
			for _, l := range mf.GetMetric()[0].GetLabel() {
				labels = append(labels, l.GetName())
			}
			sort.Strings(labels)
			if !slices.Equal(labels, []string{"index", "name", "uuid"}) {
				t.Errorf("%s labels = %v", n, labels)
			}
		}
		// Base units: the gauge matches the sample it came from.
		d := byGPU(h.rec.take(TypeMemory))[nvml.SimUUID(6)]
		if got, want := gaugeValue(t, h.s, "edgerelay_gpu_power_watts", nvml.SimUUID(6)), float64(d["power_mw"].(uint32))/1000; got != want {
			t.Errorf("power_watts = %v, want %v", got, want)
		}
		if got, want := gaugeValue(t, h.s, "edgerelay_gpu_sm_clock_hz", nvml.SimUUID(6)), float64(d["sm_clock_mhz"].(uint32))*1e6; got != want {
			t.Errorf("sm_clock_hz = %v, want %v", got, want)
		}
		if got, want := gaugeValue(t, h.s, "edgerelay_gpu_memory_used_bytes", nvml.SimUUID(6)), float64(d["device_used_bytes"].(uint64)); got != want {
			t.Errorf("memory_used_bytes = %v, want %v", got, want)
		}
	})
}

// gather returns the sampler's metric family called name.
func gather(t *testing.T, s *Sampler, name string) *dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(s.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	return nil
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func gaugeValue(t *testing.T, s *Sampler, name, gpuUUID string) float64 {
	t.Helper()
	if mf := gather(t, s, name); mf != nil {
		for _, m := range mf.GetMetric() {
			if labelValue(m, "uuid") == gpuUUID {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s for %s", name, gpuUUID)
	return 0
}

func counterValue(t *testing.T, s *Sampler, name, reason string) float64 {
	t.Helper()
	if mf := gather(t, s, name); mf != nil {
		for _, m := range mf.GetMetric() {
			if labelValue(m, "reason") == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{reason=%q}", name, reason)
	return 0
}

func seriesCount(t *testing.T, s *Sampler, name string) int {
	t.Helper()
	if mf := gather(t, s, name); mf != nil {
		return len(mf.GetMetric())
	}
	return 0
}

// cpuNow is the process's CPU time (user + system, every thread, GC
// included). Benchmarks report it per op besides wall time because the
// shared CI and development machines are often loaded, which inflates wall
// time but not CPU time.
func cpuNow(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs f b.N times and reports cpu-ns/op.
func loop(b *testing.B, f func()) {
	b.ReportAllocs()
	start := cpuNow(b)
	for b.Loop() {
		f()
	}
	b.ReportMetric(float64(cpuNow(b)-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkTick measures one sampling tick for 8 simulated GPUs. The
// baseline is the bare NVML part of a tick (8 Backend.Sample calls on the
// same simulation), so the ratio tick/baseline is what building the
// records costs on top of reading the GPUs; "tick+json" adds the
// json.Marshal the caller does when it stamps each envelope.
func BenchmarkTick(b *testing.B) {
	backend, _, err := nvml.OpenSim(nvml.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer backend.Close()
	b.Run("baseline-nvml-only", func(b *testing.B) {
		var smp nvml.Sample
		loop(b, func() {
			for i := range backend.Count() {
				if err := backend.Sample(i, &smp); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	run := func(b *testing.B, emit func(string, map[string]any)) {
		s, err := New(Options{GPUs: backend, Emit: emit, Host: "bench", Logger: quietLogger(), ProcRoot: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		loop(b, func() { s.tick(time.Now()) })
	}
	b.Run("tick", func(b *testing.B) {
		n := 0
		run(b, func(string, map[string]any) { n++ })
		if n%8 != 0 {
			b.Fatalf("%d records, not 8 per tick", n)
		}
	})
	b.Run("tick+json", func(b *testing.B) {
		run(b, func(_ string, d map[string]any) {
			if _, err := json.Marshal(d); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// An NVML call that hangs in the driver holds neither the cadence nor
// shutdown: the round is abandoned after CallTimeout, Stalled tells the
// watchdog, later ticks are skipped and counted, Run returns at once when
// asked, and sampling resumes when the call returns.
func TestHungNVMLCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{CallTimeout: 5 * time.Second})
		defer h.stop()
		h.rec.take(TypeMemory)
		release := make(chan struct{})
		released := false
		defer func() {
			if !released {
				close(release)
			}
		}()
		h.sim.SetHang(3, release)
		h.after(time.Second) // the tick reaches GPU 3 and hangs there
		if h.s.Stalled(time.Now(), 2*time.Second) {
			t.Fatal("stalled before the limit")
		}
		if n := len(h.rec.take(TypeMemory)); n != 3 {
			t.Fatalf("%d samples before the hung GPU, want 3", n)
		}
		h.after(6 * time.Second) // past CallTimeout
		if !h.s.Stalled(time.Now(), 5*time.Second) {
			t.Fatal("not Stalled with a call hung for 6 s")
		}
		before := h.s.skipped[skipStalled].Load()
		h.after(3 * time.Second)
		if got := h.s.skipped[skipStalled].Load() - before; got < 3*8 || got%8 != 0 {
			t.Fatalf("skipped as stalled in 3 s: %d, want every tick's 8 GPUs (at least 24)", got)
		}
		if n := len(h.rec.take(TypeMemory)); n != 0 {
			t.Fatalf("%d samples while stalled", n)
		}
		released = true
		close(release)
		synctest.Wait()
		if h.s.Stalled(time.Now(), time.Second) {
			t.Fatal("still Stalled after the call returned")
		}
		if n := len(h.rec.take(TypeMemory)); n != 5 {
			t.Fatalf("%d samples as the hung round ends, want the other 5", n)
		}
		h.after(time.Second)
		if n := len(h.rec.take(TypeMemory)); n != 8 {
			t.Fatalf("%d samples on the next tick, want 8", n)
		}
	})
}

// Shutdown waits for a call that hangs no longer than its deadline.
func TestHungNVMLCallShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{CallTimeout: 5 * time.Second})
		release := make(chan struct{})
		defer func() {
			close(release) // let the abandoned call end before the bubble does
			synctest.Wait()
			h.stop()
		}()
		h.sim.SetHang(0, release)
		h.after(time.Second) // the round began at +1 s: its deadline is +6 s
		h.after(2 * time.Second)
		began := time.Now()
		h.cancel()
		h.wg.Wait() // Run returned
		if took := time.Since(began); took != 3*time.Second {
			t.Fatalf("Run took %s to return with a hung call, want the 3 s left to its deadline", took)
		}
	})
}
