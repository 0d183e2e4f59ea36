//go:build linux && cgo

package nvml

import (
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/dl"
	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Open opens the GPUs as opts.Mode says. In ModeAuto and ModeOn a failure to
// load NVML returns an error matching ErrUnavailable whose text is one line
// of reason ("library not found", "driver not loaded", ...): in ModeAuto the
// caller goes on without GPUs, in ModeOn it stops. ModeOff returns
// ErrDisabled. The returned Backend must be closed.
func Open(opts Options) (*Backend, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	switch opts.Mode {
	case ModeOff:
		return nil, ErrDisabled
	case ModeSim:
		b, _, err := OpenSim(opts)
		return b, err
	}
	return openReal(opts)
}

// process holds the state of go-nvml's real library, which is one per
// process: its symbols are bound process-wide, so Init happens once, a
// failed Init is final (any later call would abort the process), and
// Shutdown happens once, when the last Backend closes.
var process struct {
	mu   sync.Mutex // guards everything below
	lib  gonvml.Interface
	path string
	refs int   // open Backends on lib
	err  error // the failure of the first Init; returned by every later Open
	shut bool  // Shutdown was called: NVML is not initialised again in this process
}

func openReal(opts Options) (*Backend, error) {
	process.mu.Lock()
	defer process.mu.Unlock()
	switch {
	case process.err != nil:
		return nil, process.err
	case process.shut:
		return nil, &UnavailableError{Reason: "NVML was shut down earlier in this process and is not initialised twice"}
	case process.lib != nil && process.path != opts.LibraryPath:
		return nil, fmt.Errorf("nvml: library %s already initialised in this process; cannot also open %s", process.path, opts.LibraryPath)
	case process.lib == nil:
		if err := initProcess(opts.LibraryPath); err != nil {
			process.err = err
			return nil, err
		}
	}
	b, err := newBackend(process.lib, opts, "nvml", opts.LibraryPath, nil, releaseProcess)
	if err != nil {
		if process.refs == 0 {
			shutdownLocked()
		}
		return nil, err
	}
	process.refs++
	return b, nil
}

// initProcess loads and initialises the library. Before Init it opens the
// file itself to learn why a load fails (go-nvml hides the loader's message)
// and to make sure the file exports nvmlInit: calling Init of a file that
// lacks it would abort the process.
func initProcess(path string) error {
	pre := dl.New(path, dl.RTLD_LAZY|dl.RTLD_GLOBAL)
	if err := pre.Open(); err != nil {
		return &UnavailableError{Reason: fmt.Sprintf("library not found (%s: %v)", path, err), Code: codeLibraryNotFound}
	}
	// Keep our handle until Init has its own, so the file is not unloaded
	// and loaded again in between.
	defer func() { _ = pre.Close() }()
	if pre.Lookup("nvmlInit_v2") != nil && pre.Lookup("nvmlInit") != nil {
		return &UnavailableError{Reason: fmt.Sprintf("%s is not an NVML library (no nvmlInit)", path)}
	}
	lib := gonvml.New(gonvml.WithLibraryPath(path))
	if ret := lib.Init(); ret != gonvml.SUCCESS {
		return &UnavailableError{Reason: initReason(int(ret)), Code: int(ret)}
	}
	process.lib, process.path = lib, path
	return nil
}

func releaseProcess() {
	process.mu.Lock()
	defer process.mu.Unlock()
	process.refs--
	if process.refs == 0 {
		shutdownLocked()
	}
}

func shutdownLocked() {
	if process.lib == nil {
		return
	}
	if process.lib.Extensions().LookupSymbol("nvmlShutdown") == nil {
		_ = process.lib.Shutdown()
	}
	process.lib = nil
	process.shut = true
}
