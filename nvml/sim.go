//go:build linux && cgo

package nvml

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// SimUUID is the fixed UUID of simulated GPU i (same for every model).
func SimUUID(i int) string { return fmt.Sprintf("GPU-5e1d0000-0000-4000-8000-%012d", i) }

// PCI buses of the GPUs of real DGX servers, so that simulated bus ids look
// like the real ones.
var simBuses = map[string][]int{
	SimDGXH100: {0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb},
	SimDGXA100: {0x07, 0x0f, 0x47, 0x4e, 0x87, 0x90, 0xb7, 0xbd},
}

// simBoard is what a model's script needs beyond the mock's configuration.
type simBoard struct {
	maxPowerMW uint32
	maxClock   uint32
}

var simBoards = map[string]simBoard{
	SimDGXH100: {maxPowerMW: 700_000, maxClock: 1980},
	SimDGXA100: {maxPowerMW: 400_000, maxClock: 1410},
}

// simReserved is the driver-reserved memory the simulation reports (v2).
const simReserved = 512 << 20

// Sim is the control panel of a simulated server: fault injection and
// scripted processes for tests and demos. Readings follow a fixed script
// of the time since OpenSim (slow sine waves, different phase per GPU), so
// they vary over time, stay consistent (used + free + reserved = total) and
// are reproducible under testing/synctest's clock.
//
// Sim is safe for concurrent use.
type Sim struct {
	model string
	board simBoard
	start time.Time
	srv   *simServer
	devs  []*simDevice
	xid   chan simXid // injected Xid events, read by the event set's Wait

	mu          sync.RWMutex // guards everything below
	missing     map[string]bool
	lost        []bool
	unsupported []Field
	procs       [][]Process       // nil entry: the default script
	hang        []<-chan struct{} // memory readings block until closed; nil when none
}

type simXid struct {
	dev  int
	code uint64
}

// OpenSim opens a simulated server (opts.Sim says which) and returns its
// Backend with the control panel. It does not touch the real NVML library.
func OpenSim(opts Options) (*Backend, *Sim, error) {
	if err := opts.Validate(); err != nil {
		return nil, nil, err
	}
	opts = opts.withDefaults()
	var base *server.Server
	switch opts.Sim.Model {
	case SimDGXA100:
		base = dgxa100.New()
	default:
		base = dgxh100.New()
	}
	s := &Sim{
		model:   opts.Sim.Model,
		board:   simBoards[opts.Sim.Model],
		start:   time.Now(),
		xid:     make(chan simXid, 64),
		missing: make(map[string]bool),
	}
	for _, name := range opts.Sim.MissingSymbols {
		s.missing[name] = true
	}
	s.srv = &simServer{Server: base, sim: s}
	buses := simBuses[opts.Sim.Model]
	for i, d := range base.Devices {
		md := d.(*server.Device)
		md.UUID = SimUUID(i)
		md.PciBusID = fmt.Sprintf("00000000:%02X:00.0", buses[i%len(buses)])
		s.devs = append(s.devs, &simDevice{Device: md, sim: s, i: i})
	}
	n := len(s.devs)
	s.lost = make([]bool, n)
	s.unsupported = make([]Field, n)
	s.procs = make([][]Process, n)
	if ret := s.srv.Init(); ret != gonvml.SUCCESS {
		return nil, nil, &UnavailableError{Reason: "simulated init failed", Code: int(ret)}
	}
	b, err := newBackend(s.srv, opts, "sim", "", s, nil)
	if err != nil {
		return nil, nil, err
	}
	return b, s, nil
}

// Sim returns the control panel of a simulated backend, nil for a real one.
func (b *Backend) Sim() *Sim { return b.sim }

// Len is the number of simulated GPUs.
func (s *Sim) Len() int { return len(s.devs) }

// SetLost makes every call on GPU i answer ERROR_GPU_IS_LOST (lost true)
// until it is cleared (lost false).
func (s *Sim) SetLost(i int, lost bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lost[i] = lost
}

// SetUnsupported makes the readings f of GPU i answer ERROR_NOT_SUPPORTED
// (on true) or work again (on false; the Backend asks again only after it
// inventories the device anew).
func (s *Sim) SetUnsupported(i int, f Field, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.unsupported[i] |= f
	} else {
		s.unsupported[i] &^= f
	}
}

// SetProcesses scripts the compute processes of GPU i: nil restores the
// default (one process, pid 10000+i, using most of the memory), an empty
// slice means none.
func (s *Sim) SetProcesses(i int, procs []Process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if procs == nil {
		s.procs[i] = nil
		return
	}
	s.procs[i] = append([]Process{}, procs...)
}

// SetHang makes the memory readings of GPU i block until release is closed,
// as a driver call that hangs does; nil clears it.
func (s *Sim) SetHang(i int, release <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hang == nil {
		s.hang = make([]<-chan struct{}, len(s.devs))
	}
	s.hang[i] = release
}

// wait blocks while GPU i is set to hang.
func (s *Sim) wait(i int) {
	s.mu.RLock()
	var release <-chan struct{}
	if s.hang != nil {
		release = s.hang[i]
	}
	s.mu.RUnlock()
	if release != nil {
		<-release
	}
}

// InjectXid queues a critical Xid error on GPU i for the event set. It
// reports false when the queue (64 events) is full.
func (s *Sim) InjectXid(i int, xid uint64) bool {
	select {
	case s.xid <- simXid{dev: i, code: xid}:
		return true
	default:
		return false
	}
}

// state returns the fault state of GPU i.
func (s *Sim) state(i int) (lost bool, unsupported Field) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lost[i], s.unsupported[i]
}

// fault is the return code of a reading f of GPU i under the injected faults.
func (s *Sim) fault(i int, f Field) gonvml.Return {
	lost, unsup := s.state(i)
	switch {
	case lost:
		return gonvml.ERROR_GPU_IS_LOST
	case unsup&f != 0:
		return gonvml.ERROR_NOT_SUPPORTED
	}
	return gonvml.SUCCESS
}

// load is the script: a slow wave in [0.1, 0.9] per GPU.
func (s *Sim) load(i int, period float64) float64 {
	t := time.Since(s.start).Seconds()
	return 0.5 + 0.4*math.Sin(2*math.Pi*t/period+0.7*float64(i))
}

// memory returns the scripted v2 figures of GPU i.
func (s *Sim) memory(i int) gonvml.Memory_v2 {
	total := s.devs[i].Config.MemoryMB << 20
	usable := total - simReserved
	used := uint64(float64(usable) * (0.15 + 0.7*s.load(i, 300)))
	return gonvml.Memory_v2{Total: total, Reserved: simReserved, Used: used, Free: usable - used}
}

// simServer is go-nvml's mock server with what the script needs on top.
type simServer struct {
	*server.Server
	sim *Sim
}

func (v *simServer) Extensions() gonvml.ExtendedInterface { return v }

// LookupSymbol reports the symbols listed in SimOptions.MissingSymbols as
// absent, every other as present.
func (v *simServer) LookupSymbol(name string) error {
	v.sim.mu.RLock()
	defer v.sim.mu.RUnlock()
	if v.sim.missing[name] {
		return fmt.Errorf("symbol %q not found (simulated old driver)", name)
	}
	return nil
}

// DeviceGetHandleByIndex answers like a driver with a lost GPU: the handle
// is given, its calls fail.
func (v *simServer) DeviceGetHandleByIndex(i int) (gonvml.Device, gonvml.Return) {
	if i < 0 || i >= len(v.sim.devs) {
		return nil, gonvml.ERROR_INVALID_ARGUMENT
	}
	return v.sim.devs[i], gonvml.SUCCESS
}

func (v *simServer) SystemGetProcessName(pid int) (string, gonvml.Return) {
	return "/usr/bin/python3", gonvml.SUCCESS
}

func (v *simServer) EventSetCreate() (gonvml.EventSet, gonvml.Return) {
	return &simEventSet{sim: v.sim}, gonvml.SUCCESS
}

// simEventSet delivers injected Xid events.
type simEventSet struct {
	mock.EventSet // every method this package does not use panics
	sim           *Sim
}

func (e *simEventSet) Wait(timeoutMs uint32) (gonvml.EventData, gonvml.Return) {
	t := time.NewTimer(time.Duration(timeoutMs) * time.Millisecond)
	defer t.Stop()
	select {
	case x := <-e.sim.xid:
		var dev gonvml.Device
		if x.dev >= 0 && x.dev < len(e.sim.devs) {
			dev = e.sim.devs[x.dev]
		}
		return gonvml.EventData{Device: dev, EventType: gonvml.EventTypeXidCriticalError, EventData: x.code}, gonvml.SUCCESS
	case <-t.C:
		return gonvml.EventData{}, gonvml.ERROR_TIMEOUT
	}
}

func (e *simEventSet) Free() gonvml.Return { return gonvml.SUCCESS }

// simDevice is one mock device (name, memory size, PCI id and MIG profiles
// from go-nvml's DGX configuration) whose readings follow the script.
// The readings are methods here rather than the mock's ...Func fields
// because the generated mock records the arguments of every call forever,
// which a demo running for days cannot afford.
type simDevice struct {
	*server.Device
	sim *Sim
	i   int
}

func (d *simDevice) GetUUID() (string, gonvml.Return) {
	if lost, _ := d.sim.state(d.i); lost {
		return "", gonvml.ERROR_GPU_IS_LOST
	}
	return d.UUID, gonvml.SUCCESS
}

func (d *simDevice) GetName() (string, gonvml.Return) { return d.Config.Name, gonvml.SUCCESS }

func (d *simDevice) GetIndex() (int, gonvml.Return) { return d.Index, gonvml.SUCCESS }

func (d *simDevice) GetPciInfo() (gonvml.PciInfo, gonvml.Return) {
	p := gonvml.PciInfo{PciDeviceId: d.Config.PciDeviceId}
	for i := 0; i < len(d.PciBusID) && i < len(p.BusId)-1; i++ {
		p.BusId[i] = int8(d.PciBusID[i])
	}
	return p, gonvml.SUCCESS
}

func (d *simDevice) GetMemoryInfo_v2() (gonvml.Memory_v2, gonvml.Return) {
	d.sim.wait(d.i)
	if ret := d.sim.fault(d.i, FieldMemory); ret != gonvml.SUCCESS {
		return gonvml.Memory_v2{}, ret
	}
	return d.sim.memory(d.i), gonvml.SUCCESS
}

// GetMemoryInfo is the v1 call: its "used" includes the reserved memory.
func (d *simDevice) GetMemoryInfo() (gonvml.Memory, gonvml.Return) {
	d.sim.wait(d.i)
	if ret := d.sim.fault(d.i, FieldMemory); ret != gonvml.SUCCESS {
		return gonvml.Memory{}, ret
	}
	m := d.sim.memory(d.i)
	return gonvml.Memory{Total: m.Total, Used: m.Used + m.Reserved, Free: m.Free}, gonvml.SUCCESS
}

func (d *simDevice) GetUtilizationRates() (gonvml.Utilization, gonvml.Return) {
	if ret := d.sim.fault(d.i, FieldUtilization); ret != gonvml.SUCCESS {
		return gonvml.Utilization{}, ret
	}
	l := d.sim.load(d.i, 60)
	return gonvml.Utilization{Gpu: uint32(100 * l), Memory: uint32(60 * l)}, gonvml.SUCCESS
}

func (d *simDevice) GetTemperature(gonvml.TemperatureSensors) (uint32, gonvml.Return) {
	if ret := d.sim.fault(d.i, FieldTemperature); ret != gonvml.SUCCESS {
		return 0, ret
	}
	return 30 + uint32(45*d.sim.load(d.i, 60)), gonvml.SUCCESS
}

func (d *simDevice) GetPowerUsage() (uint32, gonvml.Return) {
	if ret := d.sim.fault(d.i, FieldPower); ret != gonvml.SUCCESS {
		return 0, ret
	}
	return d.sim.board.maxPowerMW/10 + uint32(0.85*float64(d.sim.board.maxPowerMW)*d.sim.load(d.i, 60)), gonvml.SUCCESS
}

func (d *simDevice) GetClockInfo(gonvml.ClockType) (uint32, gonvml.Return) {
	if ret := d.sim.fault(d.i, FieldSMClock); ret != gonvml.SUCCESS {
		return 0, ret
	}
	if d.sim.load(d.i, 60) < 0.15 {
		return 345, gonvml.SUCCESS // idle clock
	}
	return d.sim.board.maxClock, gonvml.SUCCESS
}

func (d *simDevice) GetComputeRunningProcesses() ([]gonvml.ProcessInfo, gonvml.Return) {
	if lost, _ := d.sim.state(d.i); lost {
		return nil, gonvml.ERROR_GPU_IS_LOST
	}
	d.sim.mu.RLock()
	script := slices.Clone(d.sim.procs[d.i])
	d.sim.mu.RUnlock()
	if script == nil {
		m := d.sim.memory(d.i)
		script = []Process{{PID: 10000 + d.i, UsedBytes: m.Used - m.Used/10, HasUsed: true}}
	}
	out := make([]gonvml.ProcessInfo, 0, len(script))
	for _, p := range script {
		used := valueNotAvailable
		if p.HasUsed {
			used = p.UsedBytes
		}
		out = append(out, gonvml.ProcessInfo{Pid: uint32(p.PID), UsedGpuMemory: used, GpuInstanceId: 0xFFFFFFFF, ComputeInstanceId: 0xFFFFFFFF})
	}
	return out, gonvml.SUCCESS
}

func (d *simDevice) GetTotalEccErrors(gonvml.MemoryErrorType, gonvml.EccCounterType) (uint64, gonvml.Return) {
	if ret := d.sim.fault(d.i, FieldECCVolatileUncorrected|FieldECCVolatileCorrected|FieldECCAggregateUncorrected); ret != gonvml.SUCCESS {
		return 0, ret
	}
	return 0, gonvml.SUCCESS
}

func (d *simDevice) GetRemappedRows() (int, int, bool, bool, gonvml.Return) {
	if ret := d.sim.fault(d.i, FieldRemappedRows); ret != gonvml.SUCCESS {
		return 0, 0, false, false, ret
	}
	return 0, 0, false, false, gonvml.SUCCESS
}

func (d *simDevice) GetSupportedEventTypes() (uint64, gonvml.Return) {
	return gonvml.EventTypeXidCriticalError, gonvml.SUCCESS
}

func (d *simDevice) RegisterEvents(uint64, gonvml.EventSet) gonvml.Return { return gonvml.SUCCESS }
