package sampler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/livepeer/edgerelay/agent/hostnet"
	"github.com/livepeer/edgerelay/agent/telemetry"
	"github.com/livepeer/edgerelay/internal/logthrottle"
	"github.com/livepeer/edgerelay/nvml"
)

// Families the sampler emits (see the package doc for their payloads).
const (
	TypeMemory    = "gpu_memory_sample"
	TypeProcess   = "gpu_process_sample"
	TypeXid       = "gpu_xid_event"
	TypeLost      = "gpu_device_lost"
	TypeRecovered = "gpu_device_recovered"
	TypeHostNet   = "host_network_sample"
	TypeStreamNet = "stream_bandwidth_sample"
)

// Collector is the v3 collector name of gpu_memory_sample records.
const Collector = "edgerelay.nvml"

// MinInterval is the shortest sampling interval accepted (spec/nvml.md).
const MinInterval = 100 * time.Millisecond

// warnEvery throttles repeated warnings from the sampling loop.
const warnEvery = time.Minute

// xidRetry is how long the Xid watcher waits before trying again after it
// failed to start for a reason other than "not supported".
const xidRetry = time.Minute

// GPUs is what the sampler needs of the GPUs: *nvml.Backend (NVML or its
// simulation), which edgerelay bench wraps to time each tick. Its five
// methods are the sampler's whole use of NVML, on purpose in one place:
// Sample, Processes and ECC are called from the sampler's NVML goroutine
// only, WatchXid from a goroutine Run owns.
type GPUs interface {
	Count() int
	Sample(slot int, s *nvml.Sample) error
	Processes(slot int, buf []nvml.Process) ([]nvml.Process, error)
	ECC(slot int, e *nvml.ECC) error
	WatchXid(ctx context.Context, fn func(nvml.XidEvent)) error
}

// Allocators gives the latest allocator figures a runner reported for a
// GPU; *telemetry.Allocators has it. It is called without the sampler's
// locks held.
type Allocators interface {
	Latest(gpuUUID string) (telemetry.AllocatorFigures, bool)
}

// HostNet reads the host's interfaces; *hostnet.Monitor has it.
type HostNet interface {
	Sample(now time.Time) ([]hostnet.Reading, error)
}

// StreamNet reads the traffic of the runners' network namespaces;
// *hostnet.Namespaces has it.
type StreamNet interface {
	Sample(now time.Time, targets []hostnet.Target) []hostnet.NSReading
}

// Options configures New. Zero values take the documented defaults; Emit is
// required.
type Options struct {
	// GPUs to sample; nil when there are none (NVML unavailable in mode
	// auto): the sampler then emits host_network_sample only.
	GPUs GPUs
	// HostNet, when set, is read every tick for host_network_sample.
	HostNet HostNet
	// StreamNet and Runners, when both set, give stream_bandwidth_sample:
	// every ProcessInterval, each runner's bytes up and down since the
	// previous reading. They are read on Run's goroutine, not NVML's.
	StreamNet StreamNet
	Runners   func() []hostnet.Target
	// Emit receives every event (family, data). Required. Never called
	// concurrently; data is the callee's to keep.
	Emit func(typ string, data map[string]any)
	// Host is the v3 host field; default os.Hostname().
	Host string
	// Interval between ticks; default 1s, at least MinInterval.
	Interval time.Duration
	// ProcessInterval between process samples; default 5s, at least Interval.
	ProcessInterval time.Duration
	// ECCInterval between ECC and remapped-row reads; default 60s, at least Interval.
	ECCInterval time.Duration
	// CallTimeout bounds one round of NVML calls (a tick, a process or ECC
	// read). A round still running then is left to finish in the
	// background: ticks are skipped (counted "stalled"), Stalled reports
	// it to the watchdog, and shutdown waits for it no longer than its
	// deadline. Default 5s.
	CallTimeout time.Duration
	// SessionFor names the session that uses a GPU, or "" for none: the
	// one attached to gpuUUID, else the one whose runner is among pids (the
	// GPU's processes and their ancestors, from the last process sample).
	// With gpuUUID "" it names the session of one process (pids is that
	// process and its ancestors). A GPU's samples carry the session's
	// session_id (the agent adds its identity) and gpu_idle false; without
	// a session, gpu_idle true and the sampler's own session_id, fixed for
	// the process's life. nil means no sessions. Called without the
	// sampler's locks held.
	SessionFor func(gpuUUID string, pids []int) string
	// Allocators, when set, supplies the allocator_* fields.
	Allocators Allocators
	// ProcRoot is where process attribution reads <pid>/cgroup,
	// <pid>/environ and <pid>/stat (the parent, to find a process's
	// session); default "/proc".
	ProcRoot string
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Host == "" {
		if h, err := os.Hostname(); err == nil {
			o.Host = h
		}
	}
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	if o.ProcessInterval == 0 {
		o.ProcessInterval = max(5*time.Second, o.Interval)
	}
	if o.ECCInterval == 0 {
		o.ECCInterval = max(time.Minute, o.Interval)
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = 5 * time.Second
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Validate reports every problem of the options (after defaults) at once.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	if o.Emit == nil {
		errs = append(errs, errors.New("sampler: Emit: required"))
	}
	if strings.TrimSpace(o.Host) == "" {
		errs = append(errs, errors.New("sampler: Host: empty, and os.Hostname gave nothing"))
	}
	if o.Interval < MinInterval {
		errs = append(errs, fmt.Errorf("sampler: Interval %s: below the %s minimum", o.Interval, MinInterval))
	}
	if o.ProcessInterval < o.Interval {
		errs = append(errs, fmt.Errorf("sampler: ProcessInterval %s: shorter than Interval %s", o.ProcessInterval, o.Interval))
	}
	if o.ECCInterval < o.Interval {
		errs = append(errs, fmt.Errorf("sampler: ECCInterval %s: shorter than Interval %s", o.ECCInterval, o.Interval))
	}
	return errors.Join(errs...)
}

// Skip reasons: a GPU tick that emitted no gpu_memory_sample
// (edgerelay_gpu_samples_skipped_total{reason}).
const (
	SkipLost     = "lost"      // the GPU is lost
	SkipNoMemory = "no_memory" // the memory reading failed or is unsupported
	SkipError    = "error"     // another error (the GPU's identity is unknown, ...)
	SkipStalled  = "stalled"   // an earlier NVML call has not returned yet
)

// Indices of Sampler.skipped, in the order of skipReasons.
const (
	skipLost = iota
	skipNoMemory
	skipError
	skipStalled
)

var skipReasons = [...]string{skipLost: SkipLost, skipNoMemory: SkipNoMemory, skipError: SkipError, skipStalled: SkipStalled}

// Sampler samples GPUs and host interfaces and keeps the latest GPU figures.
// Run drives it; Latest, UUIDOf and the Prometheus collector may be called
// from any goroutine at any time.
type Sampler struct {
	opts  Options
	log   *slog.Logger
	attr  *nvml.Attributor
	runID string // default session_id
	coll  *collector

	memTemplate map[string]any // read-only after New

	running atomic.Bool
	emitMu  sync.Mutex // serialises Emit (the NVML goroutine and the Xid watcher)

	// calls carries rounds of NVML calls to the NVML goroutine, which runs
	// one at a time; busySince is when the running one began (unix nanos,
	// 0 when idle).
	calls     chan func()
	busySince atomic.Int64

	// Owned by the NVML goroutine (the rounds it runs).
	smp       nvml.Sample
	procBuf   []nvml.Process
	slotUUID  []string           // UUID last seen at each slot
	boxes     []slotBoxes        // per slot
	unsupProc []bool             // slots whose process list is unsupported (logged once)
	warns     *logthrottle.Keyed // one line per key per warnEvery

	mu   sync.RWMutex // guards gpus
	gpus map[string]*gpuState

	skipped [len(skipReasons)]atomic.Uint64

	// Owned by Run's goroutine: the (session, reason) pairs already logged.
	streamSkipLogged map[[2]string]bool
	streamSkipped    [len(hostnet.SkipReasons)]atomic.Uint64
}

// gpuState is the latest known about one GPU; guarded by Sampler.mu.
type gpuState struct {
	dev      nvml.Device
	sample   nvml.Sample // valid when at is not zero
	at       time.Time
	lost     bool
	lostAt   time.Time
	ecc      nvml.ECC
	procUsed map[int]uint64
	pids     []int // the GPU's processes and their ancestors at the last process sample; replaced, never changed
}

// New checks the options and makes a Sampler; Run starts it.
func New(opts Options) (*Sampler, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	s := &Sampler{
		opts:  opts,
		log:   opts.Logger,
		attr:  nvml.NewAttributor(opts.ProcRoot),
		runID: "edgerelay-" + uuid.NewString(),
		gpus:  make(map[string]*gpuState),
		warns: logthrottle.NewKeyed(warnEvery),
	}
	if opts.GPUs != nil {
		n := opts.GPUs.Count()
		s.slotUUID = make([]string, n)
		s.boxes = make([]slotBoxes, n)
		s.unsupProc = make([]bool, n)
	}
	s.memTemplate = s.memoryTemplate()
	s.coll = newCollector(s)
	return s, nil
}

// Run samples until ctx ends, then waits for the Xid watcher and returns
// nil. It takes one immediate sample of everything, then follows the
// cadences. NVML calls run on a goroutine of their own, each round bounded
// by CallTimeout: a call that hangs in the driver delays neither the
// cadence nor shutdown (it is left behind, and Stalled says so). Run may be
// called once.
func (s *Sampler) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("sampler: Run called twice")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if len(s.slotUUID) > 0 {
		wg.Go(func() { s.watchXid(ctx) })
	}
	s.calls = make(chan func())
	nvmlDone := make(chan struct{})
	go s.nvmlLoop(nvmlDone)
	defer func() {
		// Wait for a round in flight until its deadline; one hung past it
		// is left behind (the process exits with it in the driver).
		close(s.calls)
		wait := time.Duration(0)
		if since := s.busySince.Load(); since != 0 {
			wait = max(time.Until(time.Unix(0, since).Add(s.opts.CallTimeout)), 0)
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-nvmlDone:
		case <-t.C:
			if s.busySince.Load() == 0 {
				<-nvmlDone // it finished just now
			}
		}
	}()
	tick := time.NewTicker(s.opts.Interval)
	defer tick.Stop()
	procTick := time.NewTicker(s.opts.ProcessInterval)
	defer procTick.Stop()
	eccTick := time.NewTicker(s.opts.ECCInterval)
	defer eccTick.Stop()

	now := time.Now()
	s.call(ctx, func() { s.tick(now); s.sampleECC(); s.sampleProcesses() })
	s.sampleStreams(now)
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			s.call(ctx, func() { s.tick(now) })
		case now := <-procTick.C:
			s.sampleStreams(now)
			s.call(ctx, s.sampleProcesses)
		case <-eccTick.C:
			s.call(ctx, s.sampleECC)
		}
	}
}

// nvmlLoop runs rounds of NVML calls until calls is closed, on one OS
// thread (a round's CPU time is then the thread's, which edgerelay bench
// reads).
func (s *Sampler) nvmlLoop(done chan<- struct{}) {
	defer close(done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for fn := range s.calls {
		fn()
	}
}

// call runs one round of NVML calls on the NVML goroutine and waits for it
// for at most CallTimeout. While an earlier round is still running (hung in
// the driver) the round is skipped and counted.
func (s *Sampler) call(ctx context.Context, fn func()) {
	if since := s.busySince.Load(); since != 0 {
		s.skipped[skipStalled].Add(uint64(max(len(s.slotUUID), 1)))
		return
	}
	done := make(chan struct{})
	began := time.Now()
	s.busySince.Store(began.UnixNano())
	round := func() {
		fn()
		if took := time.Since(began); took > s.opts.CallTimeout {
			s.log.Info("the NVML call returned; sampling resumes", "took", took.Round(time.Millisecond))
		}
		s.busySince.Store(0) // before done: the next round must not find it busy
		close(done)
	}
	select {
	case s.calls <- round:
	case <-ctx.Done():
		s.busySince.Store(0)
		return
	}
	t := time.NewTimer(s.opts.CallTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-ctx.Done():
	case <-t.C:
		s.log.Error("an NVML call has not returned; sampling pauses until it does",
			"waited", s.opts.CallTimeout, "next", "ticks are skipped (edgerelay_gpu_samples_skipped_total{reason=\"stalled\"}) and the systemd watchdog is withheld")
	}
}

// Stalled reports whether a round of NVML calls has been running for
// longer than limit (a call hung in the driver).
func (s *Sampler) Stalled(now time.Time, limit time.Duration) bool {
	since := s.busySince.Load()
	return since != 0 && now.Sub(time.Unix(0, since)) > limit
}

func (s *Sampler) emit(typ string, data map[string]any) {
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	s.opts.Emit(typ, data)
}

// warn logs at most once per warnEvery per key (the NVML goroutine only).
func (s *Sampler) warn(key, msg string, args ...any) {
	if !s.warns.Allow(key) {
		return
	}
	s.log.Warn(msg, append(args, "next_warning_after", warnEvery)...)
}

// tick samples every GPU and the host interfaces once.
func (s *Sampler) tick(now time.Time) {
	for slot := range s.slotUUID {
		s.sampleGPU(slot, now)
	}
	if s.opts.HostNet != nil {
		rs, err := s.opts.HostNet.Sample(now)
		if err != nil {
			s.warn("hostnet", "host network sample failed; trying again next tick", "error", err)
		}
		for _, r := range rs {
			s.emit(TypeHostNet, r.Data())
		}
	}
}

// sampleGPU reads one GPU and emits its gpu_memory_sample, or the loss or
// recovery of the GPU.
func (s *Sampler) sampleGPU(slot int, now time.Time) {
	smp := &s.smp
	err := s.opts.GPUs.Sample(slot, smp)
	if err != nil {
		if errors.Is(err, nvml.ErrLost) {
			s.skipped[skipLost].Add(1)
			s.markLost(smp.Device, err, now)
			return
		}
		s.skipped[skipError].Add(1)
		s.warn(fmt.Sprintf("sample-%d", slot), "gpu sample failed; trying again next tick", "index", slot, "uuid", smp.UUID, "error", err)
		return
	}
	s.slotUUID[slot] = smp.UUID

	s.mu.Lock()
	st := s.gpus[smp.UUID]
	if st == nil {
		st = &gpuState{}
		s.gpus[smp.UUID] = st
	}
	st.dev, st.sample, st.at = smp.Device, *smp, now
	wasLost, lostAt := st.lost, st.lostAt
	st.lost = false
	ecc, pids := st.ecc, st.pids
	s.mu.Unlock()

	if wasLost {
		s.log.Info("gpu recovered; sampling it again", "uuid", smp.UUID, "index", smp.Index, "lost_for", now.Sub(lostAt).Round(time.Millisecond))
		d := deviceData(smp.Device)
		d["lost_for_ms"] = now.Sub(lostAt).Milliseconds()
		s.emit(TypeRecovered, d)
	}
	if !smp.Has(nvml.FieldMemory) {
		s.skipped[skipNoMemory].Add(1)
		s.warn(fmt.Sprintf("nomem-%d", slot), "gpu memory unreadable; no gpu_memory_sample this tick", "index", slot, "uuid", smp.UUID)
		return
	}
	s.emit(TypeMemory, s.memoryData(smp, &s.boxes[slot], &ecc, s.sessionOf(smp.UUID, pids), now))
}

// slotBoxes keeps a slot's strings boxed in interface values, so that a
// sample does not allocate them anew each tick (BenchmarkTick). An
// interface holding a string is immutable: the maps may share it.
type slotBoxes struct {
	uuid, name, pci, session     string
	vUUID, vName, vPCI, vSession any
}

func box(cached *string, boxed *any, v string) any {
	if *boxed == nil || *cached != v {
		*cached, *boxed = v, v
	}
	return *boxed
}

// Boxed memory_info_version values.
var (
	boxV1 any = "v1"
	boxV2 any = "v2"
)

func boxVersion(v string) any {
	switch v {
	case "v1":
		return boxV1
	case "v2":
		return boxV2
	}
	return v
}

// markLost records a GPU's loss and emits gpu_device_lost once per loss.
func (s *Sampler) markLost(dev nvml.Device, err error, now time.Time) {
	if dev.UUID == "" {
		return // never inventoried: nothing to name; nvml retries it
	}
	s.mu.Lock()
	st := s.gpus[dev.UUID]
	if st == nil {
		st = &gpuState{dev: dev}
		s.gpus[dev.UUID] = st
	}
	first := !st.lost
	if first {
		st.lost, st.lostAt = true, now
	}
	s.mu.Unlock()
	if first {
		d := deviceData(dev)
		d["error"] = err.Error()
		s.emit(TypeLost, d)
	}
}

// deviceData is the identity part of the sampler's own GPU events.
func deviceData(dev nvml.Device) map[string]any {
	d := make(map[string]any, 8)
	if dev.UUID != "" {
		d["gpu_id"] = dev.UUID
	}
	if dev.Index >= 0 {
		d["device_id"] = dev.Index
	}
	if dev.Name != "" {
		d["name"] = dev.Name
	}
	if dev.PCIBusID != "" {
		d["pci_bus_id"] = dev.PCIBusID
	}
	return d
}

// sessionOf names the session using a GPU (gpuUUID "": a process), ""
// when none.
func (s *Sampler) sessionOf(gpuUUID string, pids []int) string {
	if s.opts.SessionFor == nil {
		return ""
	}
	if id := s.opts.SessionFor(gpuUUID, pids); strings.TrimSpace(id) != "" {
		return id
	}
	return ""
}

// memoryFields is the capacity of a gpu_memory_sample map: the 23 v3 fields
// and up to 17 extras, with room so that adding them never grows the map.
const memoryFields = 48

// memoryTemplate holds the fields that are the same in every
// gpu_memory_sample of this sampler. memoryData clones it: copying a map's
// table is cheaper than inserting eleven keys (BenchmarkTick).
func (s *Sampler) memoryTemplate() map[string]any {
	d := make(map[string]any, memoryFields)
	d["schema_version"] = 3
	d["event_type"] = "sample"
	d["collector"] = Collector
	d["sampling_interval_ms"] = s.opts.Interval.Milliseconds()
	d["pid"] = -1
	d["host"] = s.opts.Host
	d["context"] = nil
	d["job_id"] = nil
	d["rank"] = 0
	d["local_rank"] = 0
	d["world_size"] = 1
	return d
}

// memoryData builds a gpu_memory_sample payload: the v3 record fields, then
// the NVML extras (spec/envelope.md), and gpu_idle: false when a session
// uses the GPU (its id is the record's session_id), true otherwise.
func (s *Sampler) memoryData(smp *nvml.Sample, bx *slotBoxes, ecc *nvml.ECC, session string, now time.Time) map[string]any {
	d := maps.Clone(s.memTemplate)
	d["gpu_idle"] = session == ""
	if session == "" {
		session = s.runID
	}
	d["session_id"] = box(&bx.session, &bx.vSession, session)
	d["timestamp_ns"] = now.UnixNano()
	d["device_id"] = smp.Index
	d["device_used_bytes"] = smp.MemUsed
	d["device_free_bytes"] = smp.MemFree
	d["device_total_bytes"] = smp.MemTotal

	var fig telemetry.AllocatorFigures
	var ok bool
	if s.opts.Allocators != nil {
		fig, ok = s.opts.Allocators.Latest(smp.UUID)
	}
	if ok {
		d["allocator_allocated_bytes"] = fig.Allocated
		d["allocator_reserved_bytes"] = fig.Reserved
		d["allocator_active_bytes"] = optional(fig.Active)
		d["allocator_inactive_bytes"] = optional(fig.Inactive)
		d["allocator_change_bytes"] = fig.Change
		meta := map[string]any{"allocator_source": fig.Source, "allocator_stale": fig.Stale}
		if fig.PID > 0 {
			meta["allocator_pid"] = fig.PID
		}
		d["metadata"] = meta
	} else {
		// No runner figures: integers the v3 record needs, flagged so that
		// no consumer takes them for a measurement (spec/stormlog.md).
		d["allocator_allocated_bytes"] = 0
		d["allocator_reserved_bytes"] = 0
		d["allocator_active_bytes"] = nil
		d["allocator_inactive_bytes"] = nil
		d["allocator_change_bytes"] = 0
		d["metadata"] = map[string]any{"allocator_source": "none"}
	}

	d["gpu_id"] = box(&bx.uuid, &bx.vUUID, smp.UUID)
	if smp.Name != "" {
		d["name"] = box(&bx.name, &bx.vName, smp.Name)
	}
	if smp.PCIBusID != "" {
		d["pci_bus_id"] = box(&bx.pci, &bx.vPCI, smp.PCIBusID)
	}
	d["memory_info_version"] = boxVersion(smp.MemoryInfoVersion)
	if smp.Has(nvml.FieldMemReserved) {
		d["memory_reserved_bytes"] = smp.MemReserved
	}
	if smp.Has(nvml.FieldUtilization) {
		d["utilization_gpu_pct"] = smp.UtilGPU
		d["utilization_memory_pct"] = smp.UtilMem
	}
	if smp.Has(nvml.FieldTemperature) {
		d["temperature_c"] = smp.TempC
	}
	if smp.Has(nvml.FieldPower) {
		d["power_mw"] = smp.PowerMW
	}
	if smp.Has(nvml.FieldSMClock) {
		d["sm_clock_mhz"] = smp.SMClockMHz
	}
	if ecc.Has(nvml.FieldECCVolatileUncorrected) {
		d["ecc_volatile_uncorrected"] = ecc.VolatileUncorrected
	}
	if ecc.Has(nvml.FieldECCVolatileCorrected) {
		d["ecc_volatile_corrected"] = ecc.VolatileCorrected
	}
	if ecc.Has(nvml.FieldECCAggregateUncorrected) {
		d["ecc_aggregate_uncorrected"] = ecc.AggregateUncorrected
	}
	if ecc.Has(nvml.FieldRemappedRows) {
		d["remapped_rows_correctable"] = ecc.RemappedCorrectable
		d["remapped_rows_uncorrectable"] = ecc.RemappedUncorrectable
		d["remapped_rows_pending"] = ecc.RemapPending
		d["remapped_rows_failure"] = ecc.RemapFailure
	}
	return d
}

// optional is *v as a JSON value: null when absent.
func optional(v *int64) any {
	if v == nil {
		return nil
	}
	return *v
}

// sampleStreams emits one stream_bandwidth_sample per runner whose
// namespace gives its own figures; the others are counted by reason and
// logged once per session.
func (s *Sampler) sampleStreams(now time.Time) {
	if s.opts.StreamNet == nil || s.opts.Runners == nil {
		return
	}
	targets := s.opts.Runners()
	if len(targets) == 0 && s.streamSkipLogged == nil {
		return
	}
	if s.streamSkipLogged == nil {
		s.streamSkipLogged = map[[2]string]bool{}
	}
	seen := make(map[string]bool, len(targets))
	for _, r := range s.opts.StreamNet.Sample(now, targets) {
		seen[r.Key] = true
		if r.Skip != "" {
			if i := slices.Index(hostnet.SkipReasons[:], r.Skip); i >= 0 {
				s.streamSkipped[i].Add(1)
			}
			if k := [2]string{r.Key, r.Skip}; !s.streamSkipLogged[k] {
				s.streamSkipLogged[k] = true
				s.log.Warn("no stream_bandwidth_sample for a session: its runner's network figures would not be its own",
					"session_id", r.Key, "pid", r.PID, "reason", r.Skip,
					"next", "run the runner in a network namespace of its own and let the agent read /proc/<pid>/ns/net (same user, or CAP_SYS_PTRACE); see docs/NAAP.md")
			}
			continue
		}
		if r.HasDelta {
			s.emit(TypeStreamNet, r.Data())
		}
	}
	for k := range s.streamSkipLogged {
		if !seen[k[0]] {
			delete(s.streamSkipLogged, k) // the session ended
		}
	}
}

// sampleProcesses emits one gpu_process_sample per (GPU, process).
func (s *Sampler) sampleProcesses() {
	var pids []int
	for slot, gpuUUID := range s.slotUUID {
		if gpuUUID == "" {
			continue
		}
		procs, err := s.opts.GPUs.Processes(slot, s.procBuf)
		s.procBuf = procs
		switch {
		case err == nil:
		case errors.Is(err, nvml.ErrLost):
			continue // reported by the tick
		case errors.Is(err, nvml.ErrNotSupported):
			if !s.unsupProc[slot] {
				s.unsupProc[slot] = true
				s.log.Info("gpu cannot list its processes; no gpu_process_sample for it", "uuid", gpuUUID, "index", slot)
			}
			continue
		default:
			s.warn(fmt.Sprintf("procs-%d", slot), "gpu process list failed; trying again next interval", "uuid", gpuUUID, "index", slot, "error", err)
			continue
		}
		used := make(map[int]uint64, len(procs))
		var lineages []int
		for _, p := range procs {
			pids = append(pids, p.PID)
			at, _ := s.attr.Lookup(p.PID)
			d := map[string]any{"gpu_id": gpuUUID, "device_id": slot, "pid": p.PID}
			lin := s.lineage(p.PID)
			lineages = append(lineages, lin...)
			putString(d, "session_id", s.sessionOf("", lin))
			if p.HasUsed {
				d["used_gpu_memory_bytes"] = p.UsedBytes
				used[p.PID] = p.UsedBytes
			}
			name := p.Name
			if name == "" {
				name = at.Comm
			}
			putString(d, "process_name", name)
			putString(d, "container_id", at.ContainerID)
			putString(d, "cgroup", at.Cgroup)
			putString(d, "pipeline", at.Pipeline)
			putString(d, "model_id", at.ModelID)
			s.emit(TypeProcess, d)
		}
		s.mu.Lock()
		if st := s.gpus[gpuUUID]; st != nil {
			st.procUsed, st.pids = used, lineages
		}
		s.mu.Unlock()
	}
	s.attr.Retain(pids)
}

func putString(d map[string]any, key, v string) {
	if v != "" {
		d[key] = v
	}
}

// sampleECC reads the slow counters of every GPU into its state; the next
// gpu_memory_samples carry them.
func (s *Sampler) sampleECC() {
	var e nvml.ECC
	for slot, gpuUUID := range s.slotUUID {
		if gpuUUID == "" {
			continue
		}
		if err := s.opts.GPUs.ECC(slot, &e); err != nil {
			if !errors.Is(err, nvml.ErrLost) {
				s.warn(fmt.Sprintf("ecc-%d", slot), "gpu ECC read failed; trying again next interval", "uuid", gpuUUID, "index", slot, "error", err)
			}
			continue
		}
		s.mu.Lock()
		if st := s.gpus[gpuUUID]; st != nil {
			st.ecc = e
		}
		s.mu.Unlock()
	}
}

// watchXid emits gpu_xid_event until ctx ends.
func (s *Sampler) watchXid(ctx context.Context) {
	for {
		err := s.opts.GPUs.WatchXid(ctx, func(ev nvml.XidEvent) {
			d := deviceData(ev.Device)
			d["xid"] = ev.Xid
			s.log.Warn("gpu xid error", "uuid", ev.UUID, "index", ev.Index, "xid", ev.Xid)
			s.emit(TypeXid, d)
		})
		switch {
		case err == nil || ctx.Err() != nil:
			return
		case errors.Is(err, nvml.ErrNotSupported), errors.Is(err, nvml.ErrClosed):
			s.log.Info("gpu xid events unavailable; not watching them", "reason", err)
			return
		}
		s.log.Warn("gpu xid watch failed; trying again", "error", err, "retry_in", xidRetry)
		t := time.NewTimer(xidRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Latest returns the latest NVML figures of a GPU for the allocator join
// (telemetry.AllocatorsOptions.Devices): by UUID, or by local index when
// gpuUUID is "" (index -1 finds nothing). ok is false when the GPU is
// unknown, lost, or its memory was never read.
func (s *Sampler) Latest(gpuUUID string, index int) (telemetry.DeviceFigures, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.gpus[gpuUUID]
	if gpuUUID == "" && index >= 0 {
		for _, g := range s.gpus {
			if g.dev.Index == index && !g.lost {
				st = g
				break
			}
		}
	}
	if st == nil || st.lost || st.at.IsZero() || !st.sample.Has(nvml.FieldMemory) {
		return telemetry.DeviceFigures{}, false
	}
	return telemetry.DeviceFigures{
		UUID:        st.dev.UUID,
		Index:       st.dev.Index,
		Used:        st.sample.MemUsed,
		Free:        st.sample.MemFree,
		Total:       st.sample.MemTotal,
		ProcessUsed: maps.Clone(st.procUsed),
		At:          st.at,
	}, true
}

// UUIDOf maps a local device index to its GPU UUID
// (telemetry.AllocatorsOptions.Resolve).
func (s *Sampler) UUIDOf(index int) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for id, g := range s.gpus {
		if g.dev.Index == index {
			return id, true
		}
	}
	return "", false
}
