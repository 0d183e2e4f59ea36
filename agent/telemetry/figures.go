package telemetry

import "time"

// AllocatorFigures are the latest PyTorch caching-allocator figures known for
// one GPU, as pushed by a runner (POST /v1/allocator, /v1/telemetry) or read
// from a stormlog sink directory. The GPU sampler joins them into its
// gpu_memory_sample records (spec/stormlog.md, "Where allocator numbers come
// from").
type AllocatorFigures struct {
	PID       int       // runner process (host pid), -1 when unknown
	Allocated int64     // allocated_bytes.all.current
	Reserved  int64     // reserved_bytes.all.current
	Active    *int64    // active_bytes.all.current; nil when not reported
	Inactive  *int64    // inactive_split_bytes.all.current; nil when not reported
	Change    int64     // allocated change against the previous snapshot of the same (pid, GPU)
	Source    string    // "push" or "stormlog"
	At        time.Time // when the snapshot arrived
	Stale     bool      // no snapshot for 3 sampling intervals
}

// DeviceFigures are the latest NVML figures of one GPU, for joining into an
// allocator record. Zero Total means NVML did not report the device.
type DeviceFigures struct {
	UUID  string
	Index int
	Used  uint64
	Free  uint64
	Total uint64
	// ProcessUsed is NVML's per-process memory on this GPU by host pid, from
	// the last process sample (may be nil).
	ProcessUsed map[int]uint64
	At          time.Time
}
