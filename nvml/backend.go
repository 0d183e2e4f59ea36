//go:build linux && cgo

package nvml

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/livepeer/edgerelay/internal/logthrottle"
)

// xidWait is how long one event-set wait blocks in the driver; it bounds how
// long WatchXid takes to notice that its context ended.
const xidWait = 500 * time.Millisecond

// warnEvery throttles repeated warnings about the same device.
const warnEvery = time.Minute

// Backend is an open NVML library, real or simulated, and the cached
// inventory of its devices (one slot per NVML index).
//
// Sample, Processes and ECC may be called from any goroutine; they take the
// backend's lock for their whole call, so NVML calls never overlap (the
// driver serialises them anyway, spec/nvml.md) and the spec's "one sampling
// goroutine" is the caller's cadence, not a requirement for safety.
// WatchXid runs in its own goroutine and blocks in the driver outside the
// lock. Close must be called after WatchXid has returned.
type Backend struct {
	lib     gonvml.Interface
	log     *slog.Logger
	opts    Options
	syms    symSet // fixed at open
	missing Field  // readings whose function the library lacks
	info    Info   // fixed at open
	sim     *Sim   // nil unless ModeSim
	release func() // gives the library back; called once by Close

	mu     sync.Mutex // guards slots and closed, and serialises NVML calls
	slots  []slot
	closed bool
}

// slot is one device index. Fields are guarded by Backend.mu.
type slot struct {
	dev         Device        // UUID empty until an inventory succeeded
	handle      gonvml.Device // nil until an inventory succeeded
	unsupported Field         // answered NOT_SUPPORTED (or symbol missing); not asked again until re-inventory
	memV1       bool          // GetMemoryInfo_v2 missing or refused: use v1
	lost        bool
	lostOp      string // the call that found the device lost
	lostCode    int
	lostAt      time.Time
	retryAt     time.Time             // next inventory attempt while lost
	retryDelay  time.Duration         // current backoff; reset by a whole successful Sample
	warn        *logthrottle.Throttle // transient-error warnings, one per warnEvery
}

// newBackend inventories the devices of an initialised library.
func newBackend(lib gonvml.Interface, opts Options, source, path string, sim *Sim, release func()) (*Backend, error) {
	b := &Backend{lib: lib, log: opts.Logger, opts: opts, sim: sim, release: release}
	var seen map[string]bool
	b.syms, seen = lookupSymbols(lib.Extensions().LookupSymbol)
	b.missing = b.syms.missingFields()
	b.info = Info{Source: source, LibraryPath: path, Symbols: seen}
	if b.syms.has(symDriverVersion) {
		if v, ret := lib.SystemGetDriverVersion(); ret == gonvml.SUCCESS {
			b.info.DriverVersion = v
		}
	}
	if b.syms.has(symNVMLVersion) {
		if v, ret := lib.SystemGetNVMLVersion(); ret == gonvml.SUCCESS {
			b.info.NVMLVersion = v
		}
	}
	if !b.syms.has(symCount, symHandleByIndex, symUUID) {
		return nil, &UnavailableError{Reason: "the NVML library lacks device enumeration (nvmlDeviceGetCount, nvmlDeviceGetHandleByIndex, nvmlDeviceGetUUID)"}
	}
	n, ret := lib.DeviceGetCount()
	if ret != gonvml.SUCCESS {
		return nil, &UnavailableError{Reason: "cannot count GPUs: " + codeName(int(ret)), Code: int(ret)}
	}
	b.info.Devices = n
	b.slots = make([]slot, n)
	now := time.Now()
	for i := range b.slots {
		sl := &b.slots[i]
		sl.dev.Index = i
		sl.warn = logthrottle.New(warnEvery, 1)
		if err := b.inventoryLocked(i, sl); err != nil {
			// Known by index only; retried with backoff by Sample.
			b.markLostLocked(i, sl, err.Op, err.Code, now)
			b.log.Warn("gpu inventory failed; will retry", "index", i, "call", err.Op, "error", codeName(err.Code), "retry_in", sl.retryDelay)
		}
	}
	return b, nil
}

// Info describes the library and what it offers.
func (b *Backend) Info() Info { return b.info }

// Count is the number of device slots (NVML indices), fixed at open. A nil
// Backend has none, so a caller that stored a failed Open's nil in an
// interface samples nothing rather than crashing.
func (b *Backend) Count() int {
	if b == nil {
		return 0
	}
	return len(b.slots)
}

// Devices is a copy of the inventory: the devices whose identity is known.
func (b *Backend) Devices() []Device {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Device, 0, len(b.slots))
	for i := range b.slots {
		if b.slots[i].dev.UUID != "" {
			out = append(out, b.slots[i].dev)
		}
	}
	return out
}

// inventoryLocked (re)reads a slot's identity and resets what was learnt
// about the device. A failure leaves the slot as it was.
func (b *Backend) inventoryLocked(i int, sl *slot) *DeviceError {
	fail := func(op string, ret gonvml.Return) *DeviceError {
		return &DeviceError{Index: i, UUID: sl.dev.UUID, Op: op, Code: int(ret)}
	}
	h, ret := b.lib.DeviceGetHandleByIndex(i)
	if ret != gonvml.SUCCESS {
		return fail("DeviceGetHandleByIndex", ret)
	}
	uuid, ret := h.GetUUID()
	if ret != gonvml.SUCCESS {
		return fail("GetUUID", ret)
	}
	if uuid == "" {
		return fail("GetUUID", codeUnknown)
	}
	d := Device{Index: i, UUID: uuid}
	if b.syms.has(symIndex) {
		if idx, ret := h.GetIndex(); ret == gonvml.SUCCESS {
			d.Index = idx
		}
	}
	if b.syms.has(symName) {
		if name, ret := h.GetName(); ret == gonvml.SUCCESS {
			d.Name = name
		}
	}
	if b.syms.has(symPCI) {
		if pci, ret := h.GetPciInfo(); ret == gonvml.SUCCESS {
			d.PCIBusID = busID(pci)
		}
	}
	if sl.dev.UUID != "" && sl.dev.UUID != uuid {
		b.log.Warn("gpu at this index changed identity", "index", i, "old_uuid", sl.dev.UUID, "uuid", uuid)
	}
	sl.dev = d
	sl.handle = h
	sl.unsupported = b.missing
	sl.memV1 = !b.syms.has(symMemV2)
	return nil
}

// busID returns the PCI bus id: the v2/v3 field when filled, else the
// legacy one (nvmlDeviceGetPciInfo v1 writes only the first 16 bytes).
func busID(p gonvml.PciInfo) string {
	if s := cstr(p.BusId[:]); s != "" {
		return s
	}
	return cstr(p.BusIdLegacy[:])
}

func cstr(b []int8) string {
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	buf := make([]byte, n)
	for i := range n {
		buf[i] = byte(b[i])
	}
	return string(buf)
}

// markLostLocked marks a slot lost and schedules its next inventory; the
// backoff keeps growing across a recovery that fails again at once, and is
// reset only by a whole successful Sample.
func (b *Backend) markLostLocked(i int, sl *slot, op string, code int, now time.Time) *DeviceError {
	if !sl.lost {
		sl.lost = true
		sl.lostAt = now
	}
	sl.lostOp, sl.lostCode = op, code
	switch {
	case sl.retryDelay == 0:
		sl.retryDelay = b.opts.LostRetryMin
	default:
		sl.retryDelay = min(2*sl.retryDelay, b.opts.LostRetryMax)
	}
	sl.retryAt = now.Add(sl.retryDelay)
	return &DeviceError{Index: i, UUID: sl.dev.UUID, Op: op, Code: code, Lost: true}
}

// lostErrorLocked is the error of a call on a slot that is still lost.
func lostErrorLocked(i int, sl *slot) *DeviceError {
	return &DeviceError{Index: i, UUID: sl.dev.UUID, Op: sl.lostOp, Code: sl.lostCode, Lost: true}
}

// slotLocked checks the backend and the index, and gives a lost device
// another inventory when its backoff has passed.
func (b *Backend) slotLocked(i int, now time.Time) (*slot, error) {
	if b.closed {
		return nil, ErrClosed
	}
	if i < 0 || i >= len(b.slots) {
		return nil, fmt.Errorf("nvml: no device slot %d (have %d)", i, len(b.slots))
	}
	sl := &b.slots[i]
	if !sl.lost {
		return sl, nil
	}
	if now.Before(sl.retryAt) {
		return sl, lostErrorLocked(i, sl)
	}
	if err := b.inventoryLocked(i, sl); err != nil {
		lerr := b.markLostLocked(i, sl, err.Op, err.Code, now)
		b.log.Debug("gpu still lost", "index", i, "uuid", sl.dev.UUID, "error", codeName(err.Code), "retry_in", sl.retryDelay)
		return sl, lerr
	}
	b.log.Info("gpu answers again after being lost; sampling it", "index", i, "uuid", sl.dev.UUID, "lost_for", now.Sub(sl.lostAt).Round(time.Millisecond))
	sl.lost = false
	return sl, nil
}

// check sorts one call's return code: true when the value is good; an error
// when the device is lost (the slot is marked); otherwise the field is
// omitted: for good when unsupported, this once for other errors.
func (b *Backend) check(i int, sl *slot, op string, f Field, ret gonvml.Return, now time.Time) (bool, error) {
	c := int(ret)
	switch {
	case c == codeSuccess:
		return true, nil
	case isLostCode(c):
		err := b.markLostLocked(i, sl, op, c, now)
		b.log.Warn("gpu lost; will inventory it again", "index", i, "uuid", sl.dev.UUID, "call", op, "error", codeName(c), "retry_in", sl.retryDelay)
		return false, err
	case isUnsupportedCode(c):
		sl.unsupported |= f
		b.log.Debug("gpu reading not supported; omitting it", "index", i, "uuid", sl.dev.UUID, "call", op)
		return false, nil
	default:
		if sl.warn.AllowAt(now) {
			b.log.Warn("gpu reading failed; omitting it this time", "index", i, "uuid", sl.dev.UUID, "call", op, "error", codeName(c), "next_warning_after", warnEvery)
		}
		return false, nil
	}
}

// Sample reads one device: memory, utilization, temperature, power and SM
// clock, omitting the readings the device does not support. s.Device is
// filled whenever the device's identity is known, also on error. An error
// matching ErrLost means the device is lost; the slot is inventoried again
// with backoff by later calls, and Sample succeeds again once it answers.
func (b *Backend) Sample(i int, s *Sample) error {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	*s = Sample{}
	sl, err := b.slotLocked(i, now)
	if sl != nil {
		s.Device = sl.dev
	}
	if err != nil {
		return err
	}
	h := sl.handle
	var ok bool

	if sl.unsupported&FieldMemory == 0 {
		if !sl.memV1 {
			m, ret := h.GetMemoryInfo_v2()
			switch int(ret) {
			case codeNotSupported, codeFunctionNotFound, codeArgVersionMismatch:
				// Some drivers export the symbol but refuse the struct version.
				sl.memV1 = true
				sl.unsupported |= FieldMemReserved
			default:
				if ok, err = b.check(i, sl, "GetMemoryInfo_v2", FieldMemory, ret, now); err != nil {
					return err
				}
				if ok {
					s.MemTotal, s.MemFree, s.MemUsed, s.MemReserved = m.Total, m.Free, m.Used, m.Reserved
					s.MemoryInfoVersion = "v2"
					s.Fields |= FieldMemory | FieldMemReserved
				}
			}
		}
		if sl.memV1 {
			if !b.syms.has(symMemV1) {
				sl.unsupported |= FieldMemory
			} else {
				m, ret := h.GetMemoryInfo()
				if ok, err = b.check(i, sl, "GetMemoryInfo", FieldMemory, ret, now); err != nil {
					return err
				}
				if ok {
					s.MemTotal, s.MemFree, s.MemUsed = m.Total, m.Free, m.Used
					s.MemoryInfoVersion = "v1"
					s.Fields |= FieldMemory
				}
			}
		}
	}
	if sl.unsupported&FieldUtilization == 0 {
		u, ret := h.GetUtilizationRates()
		if ok, err = b.check(i, sl, "GetUtilizationRates", FieldUtilization, ret, now); err != nil {
			return err
		}
		if ok {
			s.UtilGPU, s.UtilMem = u.Gpu, u.Memory
			s.Fields |= FieldUtilization
		}
	}
	if sl.unsupported&FieldTemperature == 0 {
		t, ret := h.GetTemperature(gonvml.TEMPERATURE_GPU)
		if ok, err = b.check(i, sl, "GetTemperature", FieldTemperature, ret, now); err != nil {
			return err
		}
		if ok {
			s.TempC = t
			s.Fields |= FieldTemperature
		}
	}
	if sl.unsupported&FieldPower == 0 {
		p, ret := h.GetPowerUsage()
		if ok, err = b.check(i, sl, "GetPowerUsage", FieldPower, ret, now); err != nil {
			return err
		}
		if ok {
			s.PowerMW = p
			s.Fields |= FieldPower
		}
	}
	if sl.unsupported&FieldSMClock == 0 {
		c, ret := h.GetClockInfo(gonvml.CLOCK_SM)
		if ok, err = b.check(i, sl, "GetClockInfo", FieldSMClock, ret, now); err != nil {
			return err
		}
		if ok {
			s.SMClockMHz = c
			s.Fields |= FieldSMClock
		}
	}
	sl.retryDelay = 0 // a whole reading: the next loss starts the backoff afresh
	return nil
}

// valueNotAvailable is NVML_VALUE_NOT_AVAILABLE, written for per-process
// memory the driver cannot see (for example without permission).
const valueNotAvailable = ^uint64(0)

// Processes appends the compute processes of one device to buf[:0] and
// returns it. PIDs are host pids. It costs milliseconds on real hardware:
// call it at the process cadence, not every tick.
func (b *Backend) Processes(i int, buf []Process) ([]Process, error) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	buf = buf[:0]
	sl, err := b.slotLocked(i, now)
	if err != nil {
		return buf, err
	}
	if !b.syms.has(symProcs) {
		return buf, &DeviceError{Index: i, UUID: sl.dev.UUID, Op: "GetComputeRunningProcesses", Code: codeFunctionNotFound}
	}
	procs, ret := sl.handle.GetComputeRunningProcesses()
	if ret != gonvml.SUCCESS {
		c := int(ret)
		if isLostCode(c) {
			return buf, b.markLostLocked(i, sl, "GetComputeRunningProcesses", c, now)
		}
		return buf, &DeviceError{Index: i, UUID: sl.dev.UUID, Op: "GetComputeRunningProcesses", Code: c}
	}
	for _, p := range procs {
		q := Process{PID: int(p.Pid)}
		if p.UsedGpuMemory != valueNotAvailable {
			q.UsedBytes, q.HasUsed = p.UsedGpuMemory, true
		}
		if b.syms.has(symProcName) {
			if name, ret := b.lib.SystemGetProcessName(q.PID); ret == gonvml.SUCCESS {
				q.Name = name
			}
		}
		buf = append(buf, q)
	}
	return buf, nil
}

// ECC reads a device's slow health counters into e: ECC error totals and
// remapped rows, each omitted when unsupported (consumer GPUs, ECC off).
// Call it every 30 to 60 s.
func (b *Backend) ECC(i int, e *ECC) error {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	*e = ECC{}
	sl, err := b.slotLocked(i, now)
	if err != nil {
		return err
	}
	h := sl.handle
	counters := []struct {
		f   Field
		typ gonvml.MemoryErrorType
		ctr gonvml.EccCounterType
		dst *uint64
	}{
		{FieldECCVolatileUncorrected, gonvml.MEMORY_ERROR_TYPE_UNCORRECTED, gonvml.VOLATILE_ECC, &e.VolatileUncorrected},
		{FieldECCVolatileCorrected, gonvml.MEMORY_ERROR_TYPE_CORRECTED, gonvml.VOLATILE_ECC, &e.VolatileCorrected},
		{FieldECCAggregateUncorrected, gonvml.MEMORY_ERROR_TYPE_UNCORRECTED, gonvml.AGGREGATE_ECC, &e.AggregateUncorrected},
	}
	for _, c := range counters {
		if sl.unsupported&c.f != 0 {
			continue
		}
		v, ret := h.GetTotalEccErrors(c.typ, c.ctr)
		ok, err := b.check(i, sl, "GetTotalEccErrors", c.f, ret, now)
		if err != nil {
			return err
		}
		if ok {
			*c.dst = v
			e.Fields |= c.f
		}
	}
	if sl.unsupported&FieldRemappedRows == 0 {
		corr, unc, pending, failed, ret := h.GetRemappedRows()
		ok, err := b.check(i, sl, "GetRemappedRows", FieldRemappedRows, ret, now)
		if err != nil {
			return err
		}
		if ok {
			e.RemappedCorrectable, e.RemappedUncorrectable = corr, unc
			e.RemapPending, e.RemapFailure = pending, failed
			e.Fields |= FieldRemappedRows
		}
	}
	return nil
}

// WatchXid registers every device for critical Xid errors and calls fn for
// each one until ctx ends. It blocks; run it in a goroutine the caller owns.
// fn is called from that goroutine only. It returns an error matching
// ErrNotSupported when the driver or no device supports Xid events, nil
// when ctx ended. Each driver wait lasts at most 500 ms, which bounds how
// long WatchXid takes to return after ctx ends. Devices are registered once,
// at the start: one that is lost then, or recovers later with a new handle,
// reports no Xid events until WatchXid is started again.
func (b *Backend) WatchXid(ctx context.Context, fn func(XidEvent)) error {
	if !b.syms.has(symEventSetCreate, symRegisterEvents, symEventSetWait, symEventSetFree) {
		return fmt.Errorf("xid events: driver lacks event sets: %w", ErrNotSupported)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	set, ret := b.lib.EventSetCreate()
	if ret != gonvml.SUCCESS {
		b.mu.Unlock()
		return fmt.Errorf("xid events: EventSetCreate: %s", codeName(int(ret)))
	}
	registered := 0
	for i := range b.slots {
		sl := &b.slots[i]
		if sl.handle == nil || sl.lost {
			continue
		}
		if b.syms.has(symSupportedEvents) {
			types, ret := sl.handle.GetSupportedEventTypes()
			if ret == gonvml.SUCCESS && types&gonvml.EventTypeXidCriticalError == 0 {
				continue
			}
		}
		if ret := sl.handle.RegisterEvents(gonvml.EventTypeXidCriticalError, set); ret == gonvml.SUCCESS {
			registered++
		} else {
			b.log.Info("gpu cannot report xid events; not watching it", "index", i, "uuid", sl.dev.UUID, "error", codeName(int(ret)))
		}
	}
	b.mu.Unlock()
	defer set.Free()
	if registered == 0 {
		return fmt.Errorf("xid events: no device accepts them: %w", ErrNotSupported)
	}

	warn := logthrottle.New(warnEvery, 1)
	for ctx.Err() == nil {
		data, ret := set.Wait(uint32(xidWait / time.Millisecond))
		switch int(ret) {
		case codeSuccess:
			if data.EventType&gonvml.EventTypeXidCriticalError != 0 {
				fn(XidEvent{Device: b.deviceOf(data.Device), Xid: data.EventData, At: time.Now()})
			}
		case codeTimeout:
		default:
			if warn.Allow() {
				b.log.Warn("xid event wait failed; waiting 1s and going on", "error", codeName(int(ret)), "next_warning_after", warnEvery)
			}
			t := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
	return nil
}

// deviceOf finds the inventory entry of an event's device handle.
func (b *Backend) deviceOf(h gonvml.Device) Device {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h != nil {
		for i := range b.slots {
			if b.slots[i].handle == h {
				return b.slots[i].dev
			}
		}
	}
	return Device{Index: -1}
}

// Close gives the library back (NVML Shutdown once the last Backend of the
// process closes). It is idempotent; every other method returns ErrClosed
// afterwards. Call it after WatchXid has returned.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.release != nil {
		b.release()
	}
	return nil
}
