package nvml

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Modes of Open, the values of EDGERELAY_NVML.
const (
	ModeAuto = "auto" // use NVML when it loads; the caller goes on without GPUs when it does not
	ModeOn   = "on"   // NVML is required; the caller stops when Open fails
	ModeOff  = "off"  // never touch NVML
	ModeSim  = "sim"  // simulated GPUs (needs cgo, like NVML)
)

// Simulated server models (SimOptions.Model).
const (
	SimDGXH100 = "dgxh100" // 8 × NVIDIA H100 80GB HBM3
	SimDGXA100 = "dgxa100" // 8 × A100-SXM4-40GB
)

// DefaultLibrary is the NVML library file opened when Options.LibraryPath is empty.
const DefaultLibrary = "libnvidia-ml.so.1"

// Options configures Open. The zero value is valid: mode auto, the system's
// libnvidia-ml.so.1, slog.Default, lost devices retried from 1 s to 1 min.
type Options struct {
	Mode         string        // ModeAuto (default), ModeOn, ModeOff or ModeSim
	LibraryPath  string        // default DefaultLibrary (found by the dynamic loader)
	Logger       *slog.Logger  // default slog.Default()
	LostRetryMin time.Duration // first wait before a lost device is inventoried again; default 1s
	LostRetryMax time.Duration // the wait doubles up to this; default 1m
	Sim          SimOptions    // used in ModeSim
}

// SimOptions configures the simulated server. The zero value is a DGX H100.
type SimOptions struct {
	Model string // SimDGXH100 (default) or SimDGXA100
	// MissingSymbols are NVML functions the simulated driver lacks, as an
	// old driver would (for example "nvmlDeviceGetMemoryInfo_v2").
	MissingSymbols []string
}

func (o Options) withDefaults() Options {
	if o.Mode == "" {
		o.Mode = ModeAuto
	}
	if o.LibraryPath == "" {
		o.LibraryPath = DefaultLibrary
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.LostRetryMin == 0 {
		o.LostRetryMin = time.Second
	}
	if o.LostRetryMax == 0 {
		o.LostRetryMax = time.Minute
	}
	if o.Sim.Model == "" {
		o.Sim.Model = SimDGXH100
	}
	return o
}

// Validate reports every problem of the options (after defaults) at once.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	switch o.Mode {
	case ModeAuto, ModeOn, ModeOff, ModeSim:
	default:
		errs = append(errs, fmt.Errorf("nvml: Mode %q: want auto, on, off or sim", o.Mode))
	}
	if o.LostRetryMin < 0 {
		errs = append(errs, fmt.Errorf("nvml: LostRetryMin %s: must not be negative", o.LostRetryMin))
	}
	if o.LostRetryMax < o.LostRetryMin {
		errs = append(errs, fmt.Errorf("nvml: LostRetryMax %s: must be at least LostRetryMin %s", o.LostRetryMax, o.LostRetryMin))
	}
	switch o.Sim.Model {
	case SimDGXH100, SimDGXA100:
	default:
		errs = append(errs, fmt.Errorf("nvml: Sim.Model %q: want %s or %s", o.Sim.Model, SimDGXH100, SimDGXA100))
	}
	return errors.Join(errs...)
}

// Device is one GPU of the inventory. UUID is the GPU's identity; Index is
// NVML's index on this host, meaningful only locally (spec/nvml.md,
// Attribution).
type Device struct {
	Index    int
	UUID     string
	Name     string
	PCIBusID string // as NVML writes it, e.g. "00000000:18:00.0"; empty when unknown
}

// Field is a set of readings, used to say which ones a Sample or ECC holds.
// A reading the device does not support is absent, never zero.
type Field uint32

// Readings of Sample (every tick) and ECC (slow cadence).
const (
	FieldMemory      Field = 1 << iota // MemUsed, MemFree, MemTotal, MemoryInfoVersion
	FieldMemReserved                   // MemReserved (GetMemoryInfo_v2 only)
	FieldUtilization                   // UtilGPU, UtilMem
	FieldTemperature                   // TempC
	FieldPower                         // PowerMW
	FieldSMClock                       // SMClockMHz

	FieldECCVolatileUncorrected  // ECC.VolatileUncorrected
	FieldECCVolatileCorrected    // ECC.VolatileCorrected
	FieldECCAggregateUncorrected // ECC.AggregateUncorrected
	FieldRemappedRows            // ECC.Remapped*
)

// Sample is one reading of one device. Fields says which readings it holds;
// the others are zero and must not be reported.
type Sample struct {
	Device
	Fields Field

	MemUsed     uint64 // bytes; from GetMemoryInfo (v1) it includes driver-reserved memory
	MemFree     uint64 // bytes
	MemTotal    uint64 // bytes
	MemReserved uint64 // bytes reserved by the driver (v2 only)
	// MemoryInfoVersion is "v2" when GetMemoryInfo_v2 answered, "v1" when
	// the driver lacks it or refused it.
	MemoryInfoVersion string

	UtilGPU    uint32 // percent of time a kernel ran, last sample period
	UtilMem    uint32 // percent of time device memory was read or written
	TempC      uint32 // GPU core temperature, °C
	PowerMW    uint32 // board power draw, milliwatts
	SMClockMHz uint32 // current SM clock, MHz
}

// Has reports whether every reading in f is present.
func (s *Sample) Has(f Field) bool { return s.Fields&f == f }

// Process is a compute process using a GPU. PID is a host pid.
type Process struct {
	PID       int
	UsedBytes uint64 // valid when HasUsed
	HasUsed   bool   // false when the driver does not report per-process memory
	Name      string // as NVML names it (often a path); empty when unknown
}

// ECC holds a device's slow health counters. Fields says which are present.
type ECC struct {
	Fields                Field
	VolatileUncorrected   uint64 // uncorrected ECC errors since the driver loaded
	VolatileCorrected     uint64 // corrected ECC errors since the driver loaded
	AggregateUncorrected  uint64 // uncorrected ECC errors over the device's life
	RemappedCorrectable   int    // rows remapped for correctable errors
	RemappedUncorrectable int    // rows remapped for uncorrectable errors
	RemapPending          bool   // a remap waits for a GPU reset
	RemapFailure          bool   // a remap failed
}

// Has reports whether every counter in f is present.
func (e *ECC) Has(f Field) bool { return e.Fields&f == f }

// XidEvent is a critical Xid error reported by the driver. Device is the
// inventory entry of the GPU it came from (Index -1 and empty UUID when the
// driver did not say which).
type XidEvent struct {
	Device
	Xid uint64
	At  time.Time
}

// Info describes what Open found.
type Info struct {
	Source        string          // "nvml" or "sim"
	LibraryPath   string          // the NVML file opened ("" for sim)
	DriverVersion string          // empty when unknown
	NVMLVersion   string          // empty when unknown
	Devices       int             // device slots
	Symbols       map[string]bool // every NVML function this package may call, and whether the driver has it
}

// ErrUnavailable matches every error of Open that means NVML cannot be used
// on this machine (no library, no driver, a build without cgo). With
// EDGERELAY_NVML=auto the caller goes on without GPUs.
var ErrUnavailable = errors.New("nvml: unavailable")

// ErrDisabled is returned by Open in ModeOff.
var ErrDisabled = errors.New("nvml: disabled")

// ErrLost matches the errors of a device that the driver reports lost
// (ERROR_GPU_IS_LOST and friends).
var ErrLost = errors.New("nvml: device lost")

// ErrNotSupported matches the errors of a call that the device or the
// installed driver does not support.
var ErrNotSupported = errors.New("nvml: not supported")

// ErrClosed is returned by every Backend method after Close.
var ErrClosed = errors.New("nvml: backend closed")

// UnavailableError says why NVML cannot be used, in one line.
type UnavailableError struct {
	Reason string // e.g. "driver not loaded (NVML_ERROR_DRIVER_NOT_LOADED)"
	Code   int    // the NVML return code, 0 when none
}

func (e *UnavailableError) Error() string { return "nvml unavailable: " + e.Reason }

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// DeviceError is an NVML call on one device that failed.
type DeviceError struct {
	Index int    // device slot
	UUID  string // empty when the device was never inventoried
	Op    string // the NVML function, e.g. "GetMemoryInfo_v2"
	Code  int    // NVML return code
	Lost  bool   // the device is marked lost (also when Code alone would not say so)
}

func (e *DeviceError) Error() string {
	if e.UUID == "" {
		return fmt.Sprintf("nvml: device %d: %s: %s", e.Index, e.Op, codeName(e.Code))
	}
	return fmt.Sprintf("nvml: device %d (%s): %s: %s", e.Index, e.UUID, e.Op, codeName(e.Code))
}

// Is makes errors.Is match ErrLost or ErrNotSupported by the code.
func (e *DeviceError) Is(target error) bool {
	switch target {
	case ErrLost:
		return e.Lost || isLostCode(e.Code)
	case ErrNotSupported:
		return isUnsupportedCode(e.Code)
	}
	return false
}
