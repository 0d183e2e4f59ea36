//go:build !linux || !cgo

package nvml

import "context"

// Open reports NVML as unavailable: this build has no cgo (or is not
// Linux), and go-nvml, its mock servers included, needs both. ModeOff
// returns ErrDisabled, every other mode an error matching ErrUnavailable.
func Open(opts Options) (*Backend, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.withDefaults().Mode == ModeOff {
		return nil, ErrDisabled
	}
	return nil, &UnavailableError{Reason: "this edgerelay was built without cgo (or not for Linux); NVML and the simulated GPUs need cgo"}
}

// Backend is never opened in this build; its methods exist so that callers
// compile, and report ErrClosed.
type Backend struct{}

// Info is empty in this build.
func (b *Backend) Info() Info { return Info{} }

// Count is 0 in this build.
func (b *Backend) Count() int { return 0 }

// Devices is empty in this build.
func (b *Backend) Devices() []Device { return nil }

// Sample returns ErrClosed in this build.
func (b *Backend) Sample(int, *Sample) error { return ErrClosed }

// Processes returns ErrClosed in this build.
func (b *Backend) Processes(_ int, buf []Process) ([]Process, error) { return buf[:0], ErrClosed }

// ECC returns ErrClosed in this build.
func (b *Backend) ECC(int, *ECC) error { return ErrClosed }

// WatchXid returns ErrClosed in this build.
func (b *Backend) WatchXid(context.Context, func(XidEvent)) error { return ErrClosed }

// Close does nothing in this build.
func (b *Backend) Close() error { return nil }
