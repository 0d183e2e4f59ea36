//go:build linux && cgo

package nvml

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openSim(t *testing.T, so SimOptions) (*Backend, *Sim) {
	t.Helper()
	b, sim, err := OpenSim(Options{Logger: quietLogger(), Sim: so})
	if err != nil {
		t.Fatalf("OpenSim: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, sim
}

func TestSimInventory(t *testing.T) {
	for _, tc := range []struct {
		model, name string
		total       uint64
		firstBus    string
	}{
		{SimDGXH100, "NVIDIA H100 80GB HBM3", 80 << 30, "00000000:18:00.0"},
		{SimDGXA100, "Mock NVIDIA A100-SXM4-40GB", 40 << 30, "00000000:07:00.0"},
	} {
		t.Run(tc.model, func(t *testing.T) {
			b, _ := openSim(t, SimOptions{Model: tc.model})
			if info := b.Info(); info.Source != "sim" || info.Devices != 8 || info.DriverVersion == "" {
				t.Errorf("info = %+v", info)
			}
			devs := b.Devices()
			if len(devs) != 8 || b.Count() != 8 {
				t.Fatalf("%d devices, count %d, want 8", len(devs), b.Count())
			}
			seenBus := map[string]bool{}
			for i, d := range devs {
				if d.Index != i || d.UUID != SimUUID(i) || d.Name != tc.name {
					t.Errorf("device %d = %+v", i, d)
				}
				seenBus[d.PCIBusID] = true
			}
			if devs[0].PCIBusID != tc.firstBus || len(seenBus) != 8 {
				t.Errorf("bus ids %v, first %q, want 8 distinct starting %q", seenBus, devs[0].PCIBusID, tc.firstBus)
			}
			var s Sample
			if err := b.Sample(0, &s); err != nil {
				t.Fatal(err)
			}
			if s.MemTotal != tc.total {
				t.Errorf("total = %d, want %d", s.MemTotal, tc.total)
			}
		})
	}
}

func TestSimSampleVariesAndAddsUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := openSim(t, SimOptions{})
		all := FieldMemory | FieldMemReserved | FieldUtilization | FieldTemperature | FieldPower | FieldSMClock
		first := make([]Sample, b.Count())
		for i := range first {
			if err := b.Sample(i, &first[i]); err != nil {
				t.Fatal(err)
			}
			s := first[i]
			if s.Fields != all || s.MemoryInfoVersion != "v2" {
				t.Errorf("GPU %d fields %b version %q, want all and v2", i, s.Fields, s.MemoryInfoVersion)
			}
			if s.MemUsed+s.MemFree+s.MemReserved != s.MemTotal {
				t.Errorf("GPU %d: used %d + free %d + reserved %d != total %d", i, s.MemUsed, s.MemFree, s.MemReserved, s.MemTotal)
			}
			if s.UtilGPU > 100 || s.TempC < 30 || s.PowerMW == 0 || s.SMClockMHz == 0 {
				t.Errorf("GPU %d implausible: %+v", i, s)
			}
		}
		if first[0].MemUsed == first[1].MemUsed {
			t.Errorf("GPUs 0 and 1 read the same memory %d; the script gives each its own phase", first[0].MemUsed)
		}
		time.Sleep(40 * time.Second)
		var later Sample
		if err := b.Sample(0, &later); err != nil {
			t.Fatal(err)
		}
		if later.MemUsed == first[0].MemUsed || later.UtilGPU == first[0].UtilGPU {
			t.Errorf("readings did not change over 40 s: %+v then %+v", first[0], later)
		}
	})
}

func TestSimLostAndRecovered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, sim := openSim(t, SimOptions{})
		var s Sample
		sim.SetLost(3, true)
		t0 := time.Now()
		err := b.Sample(3, &s)
		if !errors.Is(err, ErrLost) || s.UUID != SimUUID(3) {
			t.Fatalf("Sample on a lost GPU = %v (uuid %q), want ErrLost with its UUID", err, s.UUID)
		}
		var de *DeviceError
		if !errors.As(err, &de) || de.Code != codeGPUIsLost || !strings.Contains(err.Error(), "NVML_ERROR_GPU_IS_LOST") {
			t.Errorf("error = %v, want a DeviceError naming NVML_ERROR_GPU_IS_LOST", err)
		}
		if err := b.Sample(4, &s); err != nil {
			t.Errorf("GPU 4 is not lost: %v", err)
		}
		// Still lost: retried at +1s, +3s (1+2), +7s (3+4).
		wantRetry := []time.Duration{time.Second, 3 * time.Second, 7 * time.Second}
		var retries []time.Duration
		for time.Since(t0) < 6*time.Second {
			time.Sleep(500 * time.Millisecond)
			before := b.slotRetryAt(3)
			if err := b.Sample(3, &s); !errors.Is(err, ErrLost) {
				t.Fatalf("at %s: %v, want still lost", time.Since(t0), err)
			}
			if after := b.slotRetryAt(3); !after.Equal(before) {
				retries = append(retries, time.Since(t0))
			}
		}
		if len(retries) != 2 || retries[0] != wantRetry[0] || retries[1] != wantRetry[1] {
			t.Errorf("inventory retried at %v, want at %v", retries, wantRetry[:2])
		}
		sim.SetLost(3, false)
		time.Sleep(500 * time.Millisecond) // +6.5s: the next retry is due at +7s
		if err := b.Sample(3, &s); !errors.Is(err, ErrLost) {
			t.Fatalf("before the retry is due: %v, want still lost", err)
		}
		time.Sleep(500 * time.Millisecond)
		if err := b.Sample(3, &s); err != nil {
			t.Fatalf("after recovery at %s: %v", time.Since(t0), err)
		}
		if s.UUID != SimUUID(3) || !s.Has(FieldMemory) {
			t.Errorf("recovered sample = %+v", s)
		}
		// A whole reading resets the backoff: a new loss retries after 1 s.
		sim.SetLost(3, true)
		_ = b.Sample(3, &s)
		if got := b.slotRetryAt(3).Sub(time.Now()); got != time.Second {
			t.Errorf("after a recovery the next loss waits %s, want 1s", got)
		}
	})
}

// slotRetryAt is the next inventory attempt of a lost slot.
func (b *Backend) slotRetryAt(i int) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.slots[i].retryAt
}

func TestSimNotSupportedIsAbsent(t *testing.T) {
	b, sim := openSim(t, SimOptions{})
	sim.SetUnsupported(2, FieldPower|FieldSMClock, true)
	var s Sample
	for range 2 { // the second read must not ask again nor bring the field back
		if err := b.Sample(2, &s); err != nil {
			t.Fatal(err)
		}
		if s.Has(FieldPower) || s.Has(FieldSMClock) || s.PowerMW != 0 || s.SMClockMHz != 0 {
			t.Errorf("unsupported readings present: %+v", s)
		}
		if !s.Has(FieldMemory | FieldTemperature | FieldUtilization) {
			t.Errorf("supported readings missing: fields %b", s.Fields)
		}
	}
	if err := b.Sample(1, &s); err != nil || !s.Has(FieldPower) {
		t.Errorf("GPU 1 lost its power reading: %v %+v", err, s)
	}
}

func TestSimOldDriverSymbols(t *testing.T) {
	b, _ := openSim(t, SimOptions{MissingSymbols: []string{"nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetPowerUsage", "nvmlEventSetCreate"}})
	if b.Info().Symbols["nvmlDeviceGetMemoryInfo_v2"] {
		t.Error("info says the missing symbol is present")
	}
	var s Sample
	if err := b.Sample(0, &s); err != nil {
		t.Fatal(err)
	}
	if s.MemoryInfoVersion != "v1" || s.Has(FieldMemReserved) || s.Has(FieldPower) || !s.Has(FieldMemory) {
		t.Errorf("sample = %+v, want v1 memory, no reserved, no power", s)
	}
	if s.MemUsed+s.MemFree != s.MemTotal {
		t.Errorf("v1: used %d + free %d != total %d", s.MemUsed, s.MemFree, s.MemTotal)
	}
	if err := b.WatchXid(context.Background(), func(XidEvent) {}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("WatchXid without event sets = %v, want ErrNotSupported", err)
	}
}

func TestSimProcessesAndECC(t *testing.T) {
	b, sim := openSim(t, SimOptions{})
	procs, err := b.Processes(5, nil)
	if err != nil || len(procs) != 1 || procs[0].PID != 10005 || !procs[0].HasUsed || procs[0].Name == "" {
		t.Errorf("default processes = %+v, %v", procs, err)
	}
	sim.SetProcesses(5, []Process{{PID: 7, UsedBytes: 1 << 30, HasUsed: true}, {PID: 8}})
	procs, err = b.Processes(5, procs)
	if err != nil || len(procs) != 2 || procs[0].UsedBytes != 1<<30 || procs[1].HasUsed {
		t.Errorf("scripted processes = %+v, %v", procs, err)
	}
	sim.SetProcesses(5, []Process{})
	if procs, err = b.Processes(5, procs); err != nil || len(procs) != 0 {
		t.Errorf("no processes = %+v, %v", procs, err)
	}
	var e ECC
	if err := b.ECC(5, &e); err != nil || !e.Has(FieldECCVolatileUncorrected|FieldECCAggregateUncorrected|FieldRemappedRows) {
		t.Errorf("ECC = %+v, %v", e, err)
	}
	sim.SetUnsupported(6, FieldECCVolatileUncorrected|FieldECCVolatileCorrected|FieldECCAggregateUncorrected, true)
	if err := b.ECC(6, &e); err != nil || e.Fields != FieldRemappedRows {
		t.Errorf("ECC without ECC = %+v, %v; want remapped rows only", e, err)
	}
	sim.SetLost(6, true)
	if _, err := b.Processes(6, nil); !errors.Is(err, ErrLost) {
		t.Errorf("Processes on a lost GPU = %v", err)
	}
}

func TestSimXid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, sim := openSim(t, SimOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		var (
			mu  sync.Mutex
			got []XidEvent
			wg  sync.WaitGroup
			err error
		)
		wg.Go(func() {
			err = b.WatchXid(ctx, func(ev XidEvent) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, ev)
			})
		})
		synctest.Wait()
		sim.InjectXid(5, 48)
		sim.InjectXid(2, 79)
		time.Sleep(2 * time.Second)
		cancel()
		wg.Wait()
		if err != nil {
			t.Errorf("WatchXid: %v", err)
		}
		if len(got) != 2 || got[0].UUID != SimUUID(5) || got[0].Xid != 48 || got[0].Index != 5 || got[1].UUID != SimUUID(2) || got[1].Xid != 79 {
			t.Errorf("events = %+v", got)
		}
	})
}

func TestOpenModesAndClose(t *testing.T) {
	if _, err := Open(Options{Mode: ModeOff}); !errors.Is(err, ErrDisabled) {
		t.Errorf("Open(off) = %v, want ErrDisabled", err)
	}
	err := Options{Mode: "maybe", LostRetryMin: 2 * time.Second, LostRetryMax: time.Second, Sim: SimOptions{Model: "dgx1"}}.Validate()
	for _, field := range []string{"Mode", "LostRetryMax", "Sim.Model"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("Validate = %v, want a problem naming %s", err, field)
		}
	}
	if _, err := Open(Options{Mode: "maybe"}); err == nil {
		t.Error("Open with a bad mode succeeded")
	}
	b, err := Open(Options{Mode: ModeSim, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if b.Sim() == nil || b.Count() != 8 {
		t.Fatalf("sim backend: sim %v, count %d", b.Sim(), b.Count())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	var s Sample
	if err := b.Sample(0, &s); !errors.Is(err, ErrClosed) {
		t.Errorf("Sample after Close = %v, want ErrClosed", err)
	}
	if err := b.Sample(0, &s); err == nil {
		t.Error("no error after close")
	}
}

func TestNilBackendCountsNothing(t *testing.T) {
	var b *Backend
	if b.Count() != 0 {
		t.Error("nil Backend has devices")
	}
}

func TestSampleBadSlot(t *testing.T) {
	b, _ := openSim(t, SimOptions{})
	var s Sample
	if err := b.Sample(8, &s); err == nil {
		t.Error("Sample(8) of 8 devices succeeded")
	}
}
