package telemetry

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"time"
)

// Names the allocator records carry.
const (
	CollectorPush          = "edgerelay.allocator_push" // collector of records built by Apply
	EventAllocatorSnapshot = "allocator_snapshot"       // event_type of records built by Apply

	SourcePush     = "push"     // metadata.allocator_source: pushed by a runner
	SourceStormlog = "stormlog" // metadata.allocator_source: read from a stormlog sink directory
	SourceNone     = "none"     // metadata.allocator_source: no allocator figures known
)

// staleIntervals: the allocator part is stale when no snapshot came for this
// many sampling intervals.
const staleIntervals = 3

// AllocatorsOptions configures NewAllocators. Zero values take the documented
// defaults.
type AllocatorsOptions struct {
	// Host is written into records; "" means os.Hostname(), else "unknown".
	Host string
	// Interval is the GPU sampling interval; figures are stale after 3
	// intervals without a snapshot. 0 means 1 s; otherwise at least 100 ms.
	Interval time.Duration
	// Forget drops a process's figures after this long without a snapshot
	// (the runner is gone). 0 means max(100 intervals, 10 minutes); otherwise
	// at least 3 intervals.
	Forget time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Devices returns the latest NVML figures of a GPU by UUID, or by index
	// when uuid is "" (index is -1 when unknown). nil means no GPU sampler
	// runs. It is never called with the Allocators' lock held, so it may take
	// the sampler's own locks.
	Devices func(uuid string, index int) (DeviceFigures, bool)
	// Resolve maps a device index to its GPU UUID; nil means no mapping. Like
	// Devices, it is called without the Allocators' lock.
	Resolve func(index int) (uuid string, ok bool)
}

// Validate reports every bad field at once.
func (o AllocatorsOptions) Validate() error {
	var errs []error
	if o.Interval != 0 && o.Interval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("Interval: %v is below the 100ms minimum", o.Interval))
	}
	iv := o.Interval
	if iv == 0 {
		iv = time.Second
	}
	if o.Forget != 0 && o.Forget < staleIntervals*iv {
		errs = append(errs, fmt.Errorf("Forget: %v is shorter than %d intervals (%v)", o.Forget, staleIntervals, staleIntervals*iv))
	}
	return errors.Join(errs...)
}

func (o AllocatorsOptions) withDefaults() AllocatorsOptions {
	if o.Host == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			o.Host = h
		} else {
			o.Host = unknownHost
		}
	}
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	if o.Forget == 0 {
		o.Forget = max(100*o.Interval, 10*time.Minute)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Allocators remembers the last allocator snapshot of each (pid, GPU) and
// builds allocator records from runners' pushes. Safe for concurrent use; it
// never calls Devices or Resolve while holding its lock.
type Allocators struct {
	opts AllocatorsOptions // read-only after NewAllocators

	mu    sync.Mutex
	procs map[procKey]*procState // guarded by mu
}

// procKey identifies one process's view of one GPU. gpu is the UUID, or
// "index:N" when no UUID is known.
type procKey struct {
	pid int64
	gpu string
}

type procState struct {
	uuid      string
	fig       AllocatorFigures
	firstSeen time.Time
	session   string
}

// NewAllocators returns an empty registry; opts must pass Validate.
func NewAllocators(opts AllocatorsOptions) (*Allocators, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Allocators{opts: opts.withDefaults(), procs: map[procKey]*procState{}}, nil
}

// Identity is what an allocator record says about where it came from,
// besides the record's fields; the caller puts it into the envelope's
// identity (spec/envelope.md): GPU as gpu_id, Pipeline, ModelID.
type Identity struct {
	GPU      string // GPU UUID; "" when unknown
	Pipeline string // env PIPELINE
	ModelID  string // env MODEL_ID
}

// Apply builds the v3 allocator record of a snapshot (for an allocator_sample
// envelope) and remembers it for Latest:
//
//   - pid: the snapshot's, else fallbackPID (the socket peer's, when > 0),
//     else -1.
//   - GPU: the snapshot's UUID, else Resolve(device_index); device_id: the
//     snapshot's index, else the sampler's index for the UUID. A snapshot
//     whose index cannot be learnt is rejected.
//   - allocator_change_bytes: allocated minus the previous snapshot's of the
//     same (pid, GPU); 0 for the first. sampling_interval_ms: the time since
//     that snapshot; 0 for the first.
//   - device figures: with a sampler, NVML's total and free of that GPU, and
//     as used the process's own NVML memory when known, else the device's
//     (metadata.device_source "nvml_process" / "nvml_device"). Without one,
//     used is the allocator's reserved bytes, the least the process holds on
//     the device, and total and free are null (device_source
//     "allocator_reserved").
//   - metadata.allocator_source "push"; rank, local_rank, world_size and
//     job_id resolved from the snapshot's env as the spec resolves an
//     environment; PIPELINE and MODEL_ID returned in Identity.
//   - session_id: the snapshot's, else the one this process had, else an id
//     derived from (first snapshot time, host, pid).
func (a *Allocators) Apply(s Snapshot, fallbackPID int) (Record, Identity, error) {
	for _, k := range []string{StatAllocated, StatReserved} {
		if _, ok := s.Stats[k]; !ok {
			return nil, Identity{}, fmt.Errorf("stats.%s: required", k)
		}
	}
	stat := func(k string) (*int64, error) {
		v, ok := s.Stats[k]
		if !ok {
			return nil, nil
		}
		n, prob := intValue(v)
		if prob != "" {
			return nil, fmt.Errorf("stats.%s: must be an integer, %s", k, prob)
		}
		if n < 0 {
			return nil, fmt.Errorf("stats.%s: must be >= 0, got %d", k, n)
		}
		return &n, nil
	}
	var figs [4]*int64
	for i, k := range []string{StatAllocated, StatReserved, StatActive, StatInactive} {
		var err error
		if figs[i], err = stat(k); err != nil {
			return nil, Identity{}, err
		}
	}
	allocated, reserved, active, inactive := *figs[0], *figs[1], figs[2], figs[3]

	pid := int64(-1)
	switch {
	case s.PID != nil:
		pid = *s.PID
	case fallbackPID > 0:
		pid = int64(fallbackPID)
	}

	env := func(k string) string { return s.Env[k] }
	id, probs := resolveIdentity(nil, nil, env)
	if len(probs) > 0 {
		return nil, Identity{}, &Error{Problems: probs}
	}

	// Outside the lock: these call into the sampler.
	uuid, index := s.GPUUUID, int64(-1)
	if s.DeviceIndex != nil {
		index = *s.DeviceIndex
	}
	if uuid == "" && index >= 0 && a.opts.Resolve != nil {
		if u, ok := a.opts.Resolve(int(index)); ok {
			uuid = u
		}
	}
	var dev DeviceFigures
	haveDev := false
	if a.opts.Devices != nil {
		dev, haveDev = a.opts.Devices(uuid, int(index))
		haveDev = haveDev && dev.Total > 0
	}
	if haveDev {
		if index < 0 {
			index = int64(dev.Index)
		}
		if uuid == "" {
			uuid = dev.UUID
		}
	}
	if index < 0 {
		return nil, Identity{}, fmt.Errorf("device_index: required: the GPU sampler does not know gpu_uuid %q", s.GPUUUID)
	}

	key := procKey{pid: pid, gpu: gpuKey(uuid, index)}
	a.mu.Lock()
	now := a.opts.Now()
	a.pruneLocked(now)
	st := a.procs[key]
	var change, gapMS int64
	if st == nil {
		st = &procState{uuid: uuid, firstSeen: now, session: a.sessionOfLocked(pid)}
		a.procs[key] = st
	} else {
		change = allocated - st.fig.Allocated
		gapMS = max(now.Sub(st.fig.At).Milliseconds(), 0)
	}
	if s.SessionID != "" {
		st.session = s.SessionID
	}
	if st.session == "" {
		st.session = derivedSessionID(st.firstSeen.UnixNano(), a.opts.Host, pid)
	}
	st.uuid = uuid
	st.fig = AllocatorFigures{
		PID: int(pid), Allocated: allocated, Reserved: reserved,
		Active: active, Inactive: inactive, Change: change, Source: SourcePush, At: now,
	}
	session := st.session
	a.mu.Unlock()

	meta := map[string]any{"allocator_source": SourcePush}
	rec := Record{
		fieldSchemaVersion:      num(3),
		fieldSessionID:          session,
		fieldTimestampNS:        num(now.UnixNano()),
		fieldEventType:          EventAllocatorSnapshot,
		fieldCollector:          CollectorPush,
		fieldSamplingIntervalMS: num(gapMS),
		fieldPID:                num(pid),
		fieldHost:               a.opts.Host,
		fieldDeviceID:           num(index),
		fieldAllocated:          num(allocated),
		fieldReserved:           num(reserved),
		fieldActive:             nullableNum(active),
		fieldInactive:           nullableNum(inactive),
		fieldChange:             num(change),
		fieldContext:            nil,
		fieldMetadata:           meta,
	}
	if haveDev {
		total := clampInt64(dev.Total)
		used, src := clampInt64(dev.Used), "nvml_device"
		if pu, ok := dev.ProcessUsed[int(pid)]; ok && pid > 0 {
			used, src = clampInt64(pu), "nvml_process"
		}
		// NVML's figures come from separate calls; never let a racy reading
		// make the record invalid.
		rec[fieldDeviceUsed] = num(min(used, total))
		rec[fieldDeviceFree] = num(min(clampInt64(dev.Free), total))
		rec[fieldDeviceTotal] = num(total)
		meta["device_source"] = src
		if !dev.At.IsZero() {
			meta["device_figures_age_ms"] = num(max(now.Sub(dev.At).Milliseconds(), 0))
		}
	} else {
		rec[fieldDeviceUsed] = num(reserved)
		rec[fieldDeviceFree] = nil
		rec[fieldDeviceTotal] = nil
		meta["device_source"] = "allocator_reserved"
	}
	setIdentity(rec, id)
	if err := check(rec); err != nil {
		return nil, Identity{}, err
	}
	return rec, Identity{GPU: uuid, Pipeline: s.Env["PIPELINE"], ModelID: s.Env["MODEL_ID"]}, nil
}

// Observe records the allocator figures of a v3 record that came another way
// (POST /v1/telemetry: source "push"; the stormlog tail: source "stormlog"),
// so Latest reflects them and the next Apply of that (pid, GPU) computes its
// change against them. uuid is the record's GPU; "" means Resolve(device_id).
// Records of the CPU (device_id -1) are ignored. The figures date from the
// record's timestamp, capped at now, so a replayed backlog reads as stale.
func (a *Allocators) Observe(r Record, uuid string, source string) {
	device := r.DeviceID()
	if device < 0 {
		return
	}
	if uuid == "" && a.opts.Resolve != nil {
		if u, ok := a.opts.Resolve(int(device)); ok {
			uuid = u
		}
	}
	allocated, ok1 := r.Int(fieldAllocated)
	reserved, ok2 := r.Int(fieldReserved)
	if !ok1 || !ok2 {
		return
	}
	fig := AllocatorFigures{PID: int(r.PID()), Allocated: allocated, Reserved: reserved, Source: source}
	if v, ok := r.Int(fieldActive); ok {
		fig.Active = &v
	}
	if v, ok := r.Int(fieldInactive); ok {
		fig.Inactive = &v
	}
	fig.Change, _ = r.Int(fieldChange)

	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Now()
	fig.At = now
	if ts := r.TimestampNS(); ts > 0 && ts < now.UnixNano() {
		fig.At = time.Unix(0, ts)
	}
	a.pruneLocked(now)
	key := procKey{pid: r.PID(), gpu: gpuKey(uuid, device)}
	st := a.procs[key]
	if st == nil {
		st = &procState{firstSeen: fig.At, session: r.SessionID()}
		a.procs[key] = st
	} else if fig.At.Before(st.fig.At) {
		return // an older record than the one we hold
	}
	st.uuid = uuid
	st.fig = fig
}

// Latest returns the allocator figures of a GPU for the GPU sampler. With one
// process on the GPU they are its figures; with several fresh ones, their sum
// (PID -1; Active and Inactive only when every process reported them). When
// every process's figures are older than 3 sampling intervals, the most
// recent are returned with Stale set. ok is false when nothing is known (or
// was forgotten).
func (a *Allocators) Latest(gpuUUID string) (AllocatorFigures, bool) {
	if gpuUUID == "" {
		return AllocatorFigures{}, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Now()
	a.pruneLocked(now)
	staleAfter := staleIntervals * a.opts.Interval
	var fresh []AllocatorFigures
	var newest AllocatorFigures
	found := false
	for _, st := range a.procs {
		if st.uuid != gpuUUID {
			continue
		}
		if !found || st.fig.At.After(newest.At) {
			newest = st.fig
		}
		found = true
		if now.Sub(st.fig.At) < staleAfter {
			fresh = append(fresh, st.fig)
		}
	}
	switch {
	case !found:
		return AllocatorFigures{}, false
	case len(fresh) == 0:
		newest.Stale = true
		return copyFigures(newest), true
	case len(fresh) == 1:
		return copyFigures(fresh[0]), true
	}
	sum := AllocatorFigures{PID: -1, Source: fresh[0].Source}
	var active, inactive int64
	allActive, allInactive := true, true
	for _, f := range fresh {
		sum.Allocated += f.Allocated
		sum.Reserved += f.Reserved
		sum.Change += f.Change
		if f.At.After(sum.At) {
			sum.At = f.At
		}
		if f.Source != sum.Source {
			sum.Source = SourcePush // mixed sources: a runner pushes
		}
		if f.Active == nil {
			allActive = false
		} else {
			active += *f.Active
		}
		if f.Inactive == nil {
			allInactive = false
		} else {
			inactive += *f.Inactive
		}
	}
	if allActive {
		sum.Active = &active
	}
	if allInactive {
		sum.Inactive = &inactive
	}
	return sum, true
}

// AllocatorPart gives the v3 allocator fields and metadata entries for a GPU
// sample from Latest's answer: with no figures (ok false) the allocator
// fields are 0 / null and metadata says allocator_source "none", so no
// consumer takes the zeros for a measurement (spec/stormlog.md); stale
// figures are reported with metadata allocator_stale true.
func AllocatorPart(f AllocatorFigures, ok bool) (fields, metadata map[string]any) {
	if !ok {
		return map[string]any{
			fieldAllocated: num(0), fieldReserved: num(0),
			fieldActive: nil, fieldInactive: nil, fieldChange: num(0),
		}, map[string]any{"allocator_source": SourceNone}
	}
	fields = map[string]any{
		fieldAllocated: num(f.Allocated),
		fieldReserved:  num(f.Reserved),
		fieldActive:    nullableNum(f.Active),
		fieldInactive:  nullableNum(f.Inactive),
		fieldChange:    num(f.Change),
	}
	metadata = map[string]any{"allocator_source": f.Source, "allocator_stale": f.Stale}
	if f.PID > 0 {
		metadata["allocator_pid"] = num(int64(f.PID))
	}
	return fields, metadata
}

// pruneLocked forgets processes silent for longer than Forget.
func (a *Allocators) pruneLocked(now time.Time) {
	for k, st := range a.procs {
		if now.Sub(st.fig.At) > a.opts.Forget {
			delete(a.procs, k)
		}
	}
}

// sessionOfLocked returns the session a process already has on another GPU.
func (a *Allocators) sessionOfLocked(pid int64) string {
	if pid <= 0 {
		return ""
	}
	for k, st := range a.procs {
		if k.pid == pid && st.session != "" {
			return st.session
		}
	}
	return ""
}

func gpuKey(uuid string, index int64) string {
	if uuid != "" {
		return uuid
	}
	return fmt.Sprintf("index:%d", index)
}

func copyFigures(f AllocatorFigures) AllocatorFigures {
	if f.Active != nil {
		v := *f.Active
		f.Active = &v
	}
	if f.Inactive != nil {
		v := *f.Inactive
		f.Inactive = &v
	}
	return f
}

func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}
