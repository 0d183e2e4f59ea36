//go:build !linux || !cgo

package nvml

import (
	"errors"
	"strings"
	"testing"
)

func TestOpenWithoutCgo(t *testing.T) {
	for _, mode := range []string{"", ModeAuto, ModeOn, ModeSim} {
		b, err := Open(Options{Mode: mode})
		if b != nil || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "cgo") {
			t.Errorf("Open(%q) = %v, %v; want unavailable naming cgo", mode, b, err)
		}
	}
	if _, err := Open(Options{Mode: ModeOff}); !errors.Is(err, ErrDisabled) {
		t.Errorf("Open(off) = %v", err)
	}
}
