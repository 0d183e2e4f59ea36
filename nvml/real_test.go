//go:build linux && cgo

package nvml

import (
	"context"
	"os"
	"sort"
	"testing"
	"time"
)

// TestRealDriver runs against the machine's own NVML when
// EDGERELAY_TEST_REAL_NVML=1 (on a GPU machine; CI has none) and prints
// what the driver reported.
func TestRealDriver(t *testing.T) {
	if os.Getenv("EDGERELAY_TEST_REAL_NVML") != "1" {
		t.Skip("set EDGERELAY_TEST_REAL_NVML=1 on a GPU machine")
	}
	b, err := Open(Options{Mode: ModeOn, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	info := b.Info()
	t.Logf("driver %q, NVML %q, library %s, %d devices", info.DriverVersion, info.NVMLVersion, info.LibraryPath, info.Devices)
	var present, missing []string
	for name, ok := range info.Symbols {
		if ok {
			present = append(present, name)
		} else {
			missing = append(missing, name)
		}
	}
	sort.Strings(present)
	sort.Strings(missing)
	t.Logf("symbols present: %v", present)
	t.Logf("symbols missing: %v", missing)
	if info.Devices == 0 {
		t.Fatal("no GPUs")
	}
	for i := range b.Count() {
		var s Sample
		start := time.Now()
		err := b.Sample(i, &s)
		took := time.Since(start)
		if err != nil {
			t.Errorf("Sample(%d): %v", i, err)
			continue
		}
		t.Logf("GPU %d %s %q bus %s: memory %s used %d free %d total %d reserved %d; util %d%%/%d%%; %d°C; %d mW; SM %d MHz; fields %b; one sample took %s",
			s.Index, s.UUID, s.Name, s.PCIBusID, s.MemoryInfoVersion, s.MemUsed, s.MemFree, s.MemTotal, s.MemReserved,
			s.UtilGPU, s.UtilMem, s.TempC, s.PowerMW, s.SMClockMHz, s.Fields, took)
		if !s.Has(FieldMemory) || s.MemTotal == 0 || s.UUID == "" {
			t.Errorf("GPU %d: no memory figures or UUID", i)
		}
		start = time.Now()
		procs, err := b.Processes(i, nil)
		t.Logf("GPU %d processes (%s): %+v err %v", i, time.Since(start), procs, err)
		var e ECC
		err = b.ECC(i, &e)
		t.Logf("GPU %d ECC: %+v err %v", i, e, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err = b.WatchXid(ctx, func(ev XidEvent) { t.Logf("xid event: %+v", ev) })
	t.Logf("WatchXid for 1s: %v", err)
}
