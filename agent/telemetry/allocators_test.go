package telemetry

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeSampler is the GPU sampler's test double: latest figures per GPU.
type fakeSampler struct {
	mu    sync.Mutex
	gpus  []DeviceFigures
	calls int
}

func (s *fakeSampler) Devices(uuid string, index int) (DeviceFigures, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	for _, g := range s.gpus {
		if (uuid != "" && g.UUID == uuid) || (uuid == "" && g.Index == index) {
			return g, true
		}
	}
	return DeviceFigures{}, false
}

func (s *fakeSampler) Resolve(index int) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.gpus {
		if g.Index == index {
			return g.UUID, true
		}
	}
	return "", false
}

func snap(pid int64, uuid string, index int64, allocated, reserved int64, extra ...string) Snapshot {
	s := Snapshot{GPUUUID: uuid, Stats: map[string]json.Number{
		StatAllocated: num(allocated), StatReserved: num(reserved),
	}}
	if pid != 0 {
		s.PID = &pid
	}
	if index >= 0 {
		s.DeviceIndex = &index
	}
	for i := 0; i+1 < len(extra); i += 2 {
		s.Stats[extra[i]] = json.Number(extra[i+1])
	}
	return s
}

func field(t *testing.T, r Record, f string) string { t.Helper(); return mustJSON(t, r[f]) }

func newTestAllocators(t *testing.T, clock *fakeClock, sampler *fakeSampler) *Allocators {
	t.Helper()
	opts := AllocatorsOptions{Host: "node-a", Interval: time.Second, Now: clock.Now}
	if sampler != nil {
		opts.Devices, opts.Resolve = sampler.Devices, sampler.Resolve
	}
	a, err := NewAllocators(opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Two processes on two GPUs: change values per (pid, GPU), NVML join with
// the process's own memory or the device's, records valid.
func TestAllocatorsTwoProcessesTwoGPUs(t *testing.T) {
	t0 := time.Unix(1767908945, 0)
	clock := &fakeClock{now: t0}
	sampler := &fakeSampler{gpus: []DeviceFigures{
		{UUID: "GPU-A", Index: 0, Used: 30 << 30, Free: 50 << 30, Total: 80 << 30, ProcessUsed: map[int]uint64{100: 12 << 30}, At: t0.Add(-200 * time.Millisecond)},
		{UUID: "GPU-B", Index: 1, Used: 7 << 30, Free: 73 << 30, Total: 80 << 30, At: t0},
	}}
	a := newTestAllocators(t, clock, sampler)

	type step struct {
		name     string
		s        Snapshot
		fallback int
		advance  time.Duration
		want     map[string]string
		meta     map[string]string
		gpu      string
	}
	steps := []step{
		{name: "p100 on A first", s: snap(100, "GPU-A", -1, 1000, 4096, StatActive, "900", StatInactive, "96"),
			want: map[string]string{"pid": "100", "device_id": "0", "allocator_change_bytes": "0", "sampling_interval_ms": "0",
				"allocator_allocated_bytes": "1000", "allocator_reserved_bytes": "4096", "allocator_active_bytes": "900", "allocator_inactive_bytes": "96",
				"device_used_bytes": fmt.Sprint(12 << 30), "device_free_bytes": fmt.Sprint(50 << 30), "device_total_bytes": fmt.Sprint(80 << 30),
				"event_type": `"allocator_snapshot"`, "collector": `"edgerelay.allocator_push"`, "host": `"node-a"`, "context": "null"},
			meta: map[string]string{"allocator_source": `"push"`, "device_source": `"nvml_process"`, "device_figures_age_ms": "200"}, gpu: "GPU-A"},
		{name: "p200 on B by index, pid from the socket", s: snap(0, "", 1, 5000, 8192), fallback: 200,
			want: map[string]string{"pid": "200", "device_id": "1", "allocator_change_bytes": "0", "allocator_active_bytes": "null",
				"device_used_bytes": fmt.Sprint(7 << 30), "device_total_bytes": fmt.Sprint(80 << 30)},
			meta: map[string]string{"device_source": `"nvml_device"`}, gpu: "GPU-B"},
		{name: "p100 on A grows", s: snap(100, "GPU-A", 0, 1500, 4096), advance: 250 * time.Millisecond,
			want: map[string]string{"allocator_change_bytes": "500", "sampling_interval_ms": "250"}, gpu: "GPU-A"},
		{name: "p200 on B shrinks", s: snap(200, "GPU-B", 1, 4000, 8192), advance: time.Second,
			want: map[string]string{"allocator_change_bytes": "-1000", "sampling_interval_ms": "1250"}, gpu: "GPU-B"},
		{name: "p100 on B is its own series", s: snap(100, "", 1, 10, 20),
			want: map[string]string{"pid": "100", "device_id": "1", "allocator_change_bytes": "0"},
			meta: map[string]string{"device_source": `"nvml_device"`}, gpu: "GPU-B"},
		{name: "p100 on A again", s: snap(100, "GPU-A", -1, 1400, 4096),
			want: map[string]string{"allocator_change_bytes": "-100"}, gpu: "GPU-A"},
	}
	sessions := map[int64]string{}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Advance(st.advance)
			rec, id, err := a.Apply(st.s, st.fallback)
			if err != nil {
				t.Fatal(err)
			}
			revalidate(t, rec)
			for f, want := range st.want {
				if got := field(t, rec, f); got != want {
					t.Errorf("%s = %s, want %s", f, got, want)
				}
			}
			meta := rec["metadata"].(map[string]any)
			for k, want := range st.meta {
				if got := mustJSON(t, meta[k]); got != want {
					t.Errorf("metadata.%s = %s, want %s", k, got, want)
				}
			}
			if id.GPU != st.gpu {
				t.Errorf("identity GPU %q, want %q", id.GPU, st.gpu)
			}
			if ts := rec.TimestampNS(); ts != clock.Now().UnixNano() {
				t.Errorf("timestamp_ns %d", ts)
			}
			pid := rec.PID()
			if prev, ok := sessions[pid]; ok && prev != rec.SessionID() {
				t.Errorf("pid %d changed session %s -> %s", pid, prev, rec.SessionID())
			}
			sessions[pid] = rec.SessionID()
		})
	}
	if sessions[100] == sessions[200] || sessions[100] == "" {
		t.Fatalf("sessions %v", sessions)
	}
}

func TestAllocatorsWithoutSampler(t *testing.T) {
	clock := &fakeClock{now: time.Unix(100, 0)}
	a := newTestAllocators(t, clock, nil)
	rec, id, err := a.Apply(snap(7, "GPU-X", 2, 100, 300), 0)
	if err != nil {
		t.Fatal(err)
	}
	revalidate(t, rec)
	for f, want := range map[string]string{"device_used_bytes": "300", "device_free_bytes": "null", "device_total_bytes": "null", "device_id": "2"} {
		if got := field(t, rec, f); got != want {
			t.Errorf("%s = %s, want %s", f, got, want)
		}
	}
	if got := rec["metadata"].(map[string]any)["device_source"]; got != "allocator_reserved" {
		t.Errorf("device_source %v", got)
	}
	if id.GPU != "GPU-X" {
		t.Errorf("gpu %q", id.GPU)
	}
	// Without a sampler a UUID alone gives no device index.
	if _, _, err := a.Apply(snap(7, "GPU-X", -1, 100, 300), 0); err == nil ||
		err.Error() != `device_index: required: the GPU sampler does not know gpu_uuid "GPU-X"` {
		t.Fatalf("err = %v", err)
	}
	// No pid at all: -1.
	rec, _, err = a.Apply(snap(0, "", 0, 1, 1), 0)
	if err != nil || rec.PID() != -1 {
		t.Fatalf("pid %d err %v", rec.PID(), err)
	}
}

// NVML readings taken apart can disagree; the record stays valid.
func TestAllocatorsClampsRacyNVML(t *testing.T) {
	clock := &fakeClock{now: time.Unix(100, 0)}
	sampler := &fakeSampler{gpus: []DeviceFigures{{UUID: "G", Index: 0, Used: 90, Free: 120, Total: 100, ProcessUsed: map[int]uint64{5: 150}}}}
	a := newTestAllocators(t, clock, sampler)
	rec, _, err := a.Apply(snap(5, "G", 0, 1, 1), 0)
	if err != nil {
		t.Fatal(err)
	}
	if field(t, rec, "device_used_bytes") != "100" || field(t, rec, "device_free_bytes") != "100" {
		t.Fatalf("%v", rec)
	}
}

func TestAllocatorsIdentityFromEnv(t *testing.T) {
	clock := &fakeClock{now: time.Unix(100, 0)}
	a := newTestAllocators(t, clock, nil)
	s := snap(9, "G", 0, 1, 1)
	s.Env = map[string]string{"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "job-9",
		"PIPELINE": "live-video-to-video", "MODEL_ID": "streamdiffusion", "SECRET_TOKEN": "x"}
	s.SessionID = "sess-9"
	rec, id, err := a.Apply(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{"rank": "1", "local_rank": "1", "world_size": "2", "job_id": `"job-9"`, "session_id": `"sess-9"`} {
		if got := field(t, rec, f); got != want {
			t.Errorf("%s = %s, want %s", f, got, want)
		}
	}
	if id.Pipeline != "live-video-to-video" || id.ModelID != "streamdiffusion" {
		t.Errorf("identity %+v", id)
	}
	out, _ := json.Marshal(rec)
	if strings.Contains(string(out), "SECRET") || strings.Contains(string(out), "PIPELINE") {
		t.Errorf("record leaks env: %s", out)
	}
	s.Env = map[string]string{"RANK": "2", "WORLD_SIZE": "2"}
	if _, _, err := a.Apply(s, 0); err == nil || err.Error() != "rank: 2 must be < world_size 2; local_rank: 2 must be < world_size 2" {
		t.Fatalf("err = %v", err)
	}
}

// Latest for the sampler: fresh figures, the stale mark after 3 intervals,
// the sum of several processes, forgetting.
func TestAllocatorsLatestAndStale(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	sampler := &fakeSampler{gpus: []DeviceFigures{{UUID: "GPU-A", Index: 0, Total: 100, Free: 50, Used: 50}}}
	a := newTestAllocators(t, clock, sampler)

	if _, ok := a.Latest("GPU-A"); ok {
		t.Fatal("figures before any snapshot")
	}
	fields, meta := AllocatorPart(a.Latest("GPU-A"))
	if mustJSON(t, meta) != `{"allocator_source":"none"}` ||
		mustJSON(t, fields) != `{"allocator_active_bytes":null,"allocator_allocated_bytes":0,"allocator_change_bytes":0,"allocator_inactive_bytes":null,"allocator_reserved_bytes":0}` {
		t.Fatalf("none: %s %s", mustJSON(t, fields), mustJSON(t, meta))
	}

	if _, _, err := a.Apply(snap(100, "GPU-A", 0, 1000, 2000, StatActive, "10"), 0); err != nil {
		t.Fatal(err)
	}
	clock.Advance(500 * time.Millisecond)
	if _, _, err := a.Apply(snap(100, "GPU-A", 0, 1200, 2000, StatActive, "12"), 0); err != nil {
		t.Fatal(err)
	}
	f, ok := a.Latest("GPU-A")
	if !ok || f.Stale || f.PID != 100 || f.Allocated != 1200 || f.Change != 200 || f.Source != SourcePush || *f.Active != 12 || f.Inactive != nil {
		t.Fatalf("latest %+v", f)
	}

	// Just under 3 intervals: fresh; at 3 intervals: stale.
	clock.Advance(3*time.Second - time.Millisecond)
	if f, _ := a.Latest("GPU-A"); f.Stale {
		t.Fatal("stale before 3 intervals")
	}
	clock.Advance(time.Millisecond)
	f, ok = a.Latest("GPU-A")
	if !ok || !f.Stale || f.Allocated != 1200 {
		t.Fatalf("want stale figures, got %+v", f)
	}
	_, meta = AllocatorPart(f, ok)
	if mustJSON(t, meta) != `{"allocator_pid":100,"allocator_source":"push","allocator_stale":true}` {
		t.Fatalf("stale metadata %s", mustJSON(t, meta))
	}

	// Two fresh processes on the GPU: summed; the stale one is left out.
	if _, _, err := a.Apply(snap(200, "GPU-A", 0, 10, 20, StatActive, "5"), 0); err != nil {
		t.Fatal(err)
	}
	if f, _ := a.Latest("GPU-A"); f.PID != 200 || f.Allocated != 10 || f.Stale {
		t.Fatalf("only p200 fresh: %+v", f)
	}
	if _, _, err := a.Apply(snap(100, "GPU-A", 0, 1300, 2000, StatActive, "13"), 0); err != nil {
		t.Fatal(err)
	}
	f, _ = a.Latest("GPU-A")
	if f.PID != -1 || f.Allocated != 1310 || f.Reserved != 2020 || f.Change != 100 || *f.Active != 18 || f.Stale {
		t.Fatalf("sum %+v", f)
	}
	fields, meta = AllocatorPart(f, true)
	if mustJSON(t, fields["allocator_allocated_bytes"]) != "1310" || mustJSON(t, meta) != `{"allocator_source":"push","allocator_stale":false}` {
		t.Fatalf("sum part %v %v", fields, meta)
	}

	// Forgotten after Forget (default 10 minutes at 1 s intervals).
	clock.Advance(10*time.Minute + time.Second)
	if _, ok := a.Latest("GPU-A"); ok {
		t.Fatal("figures not forgotten")
	}
	// A new snapshot after forgetting starts a new series (change 0).
	rec, _, err := a.Apply(snap(100, "GPU-A", 0, 5000, 6000), 0)
	if err != nil || field(t, rec, "allocator_change_bytes") != "0" {
		t.Fatalf("after forget: %v %v", rec, err)
	}
}

// Observe feeds records from /v1/telemetry and the stormlog tail.
func TestAllocatorsObserve(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	sampler := &fakeSampler{gpus: []DeviceFigures{{UUID: "GPU-A", Index: 0, Total: 100}}}
	a := newTestAllocators(t, clock, sampler)

	rec, err := Validate(edit(t, baseV3, map[string]string{"pid": "300", "device_id": "0", "allocator_allocated_bytes": "700",
		"timestamp_ns": fmt.Sprint(time.Unix(999, 500e6).UnixNano()), "device_total_bytes": "null"}))
	if err != nil {
		t.Fatal(err)
	}
	a.Observe(rec, "", SourceStormlog)
	f, ok := a.Latest("GPU-A")
	if !ok || f.Source != SourceStormlog || f.PID != 300 || f.Allocated != 700 || f.Change != -4096 ||
		!f.At.Equal(time.Unix(999, 500e6)) || *f.Active != 1048576 {
		t.Fatalf("observed %+v", f)
	}
	// An older record does not replace a newer one.
	older, _ := Validate(edit(t, baseV3, map[string]string{"pid": "300", "allocator_allocated_bytes": "1", "timestamp_ns": "5"}))
	a.Observe(older, "GPU-A", SourceStormlog)
	if f, _ := a.Latest("GPU-A"); f.Allocated != 700 {
		t.Fatalf("older record won: %+v", f)
	}
	// The next push of the same (pid, GPU) changes against the observed one.
	r, _, err := a.Apply(snap(300, "GPU-A", 0, 1000, 1000), 0)
	if err != nil || field(t, r, "allocator_change_bytes") != "300" {
		t.Fatalf("change after observe: %v %v", r, err)
	}
	// A CPU record is ignored.
	cpu, _ := Validate(edit(t, baseV3, map[string]string{"pid": "301", "device_id": "-1"}))
	a.Observe(cpu, "", SourcePush)
	if f, _ := a.Latest("GPU-A"); f.PID == 301 {
		t.Fatal("cpu record observed")
	}
	// A backlog record older than 3 intervals reads as stale.
	a2 := newTestAllocators(t, clock, sampler)
	old, _ := Validate(edit(t, baseV3, map[string]string{"pid": "5", "timestamp_ns": fmt.Sprint(time.Unix(990, 0).UnixNano())}))
	a2.Observe(old, "GPU-A", SourceStormlog)
	if f, ok := a2.Latest("GPU-A"); !ok || !f.Stale {
		t.Fatalf("backlog not stale: %+v", f)
	}
}

// Apply, Observe and Latest from many goroutines (run with -race); the
// sampler's callbacks are never called under the Allocators' lock (they
// call Latest themselves here, which would deadlock).
func TestAllocatorsConcurrent(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	var a *Allocators
	sampler := &fakeSampler{gpus: []DeviceFigures{{UUID: "GPU-A", Index: 0, Total: 1 << 40, Free: 1 << 39, Used: 1 << 39}}}
	opts := AllocatorsOptions{Host: "h", Now: clock.Now,
		Devices: func(uuid string, index int) (DeviceFigures, bool) {
			a.Latest("GPU-A")
			return sampler.Devices(uuid, index)
		},
		Resolve: sampler.Resolve,
	}
	a, err := NewAllocators(opts)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last int64
			for i := range 200 {
				alloc := int64(i * 10)
				rec, _, err := a.Apply(snap(int64(100+p), "GPU-A", 0, alloc, alloc+1), 0)
				if err != nil {
					t.Error(err)
					return
				}
				if ch, _ := rec.Int("allocator_change_bytes"); i > 0 && ch != alloc-last {
					t.Errorf("p%d i%d change %d", p, i, ch)
				}
				last = alloc
				a.Latest("GPU-A")
			}
		}()
	}
	wg.Wait()
	f, _ := a.Latest("GPU-A")
	if f.Allocated != 4*1990 {
		t.Fatalf("sum %+v", f)
	}
}

func TestAllocatorsOptionsValidate(t *testing.T) {
	err := AllocatorsOptions{Interval: 10 * time.Millisecond, Forget: time.Millisecond}.Validate()
	if err == nil || err.Error() != "Interval: 10ms is below the 100ms minimum\nForget: 1ms is shorter than 3 intervals (30ms)" {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewAllocators(AllocatorsOptions{Interval: -1}); err == nil {
		t.Fatal("negative interval accepted")
	}
	if err := (AllocatorsOptions{}).Validate(); err != nil {
		t.Fatal(err)
	}
}
