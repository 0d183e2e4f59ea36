//go:build linux && cgo

package nvml

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The fake library's values (testdata/fakenvml.c).
const (
	fakeGiB = uint64(1) << 30
	fakeMiB = uint64(1) << 20
)

func fakeUUID(i int) string { return "GPU-fa4e0000-0000-4000-8000-00000000000" + string(rune('0'+i)) }

// fakeResult is what the child process saw through the adapter.
type fakeResult struct {
	OpenErr     string
	Unavailable bool
	Info        Info
	Samples     []Sample
	SampleErrs  []string
	Procs       [][]Process
	ProcErrs    []string
	ECC         []ECC
	XidErr      string
	Xids        []XidEvent
}

// buildFakeLibrary compiles testdata/fakenvml.c with the variant's flags.
func buildFakeLibrary(t *testing.T, flags ...string) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Fatalf("C compiler %q not found (cgo builds need one): %v", cc, err)
	}
	dir := t.TempDir()
	lib := filepath.Join(dir, "libnvidia-ml.so.1")
	args := append([]string{"-shared", "-fPIC", "-O1", "-Wall", "-o", lib, filepath.Join("testdata", "fakenvml.c")}, flags...)
	if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		t.Fatalf("compile fake library: %v\n%s", err, out)
	}
	return lib
}

// runFakeChild runs TestFakeLibraryChild in a new process of this test
// binary: a wrong NVML call kills that process (exit 127 or the fake's 86),
// which then shows up here as a test failure instead of killing the run.
func runFakeChild(t *testing.T, lib string) fakeResult {
	t.Helper()
	out := filepath.Join(t.TempDir(), "result.json")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFakeLibraryChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EDGERELAY_FAKE_NVML_LIB="+lib, "EDGERELAY_FAKE_NVML_OUT="+out)
	combined, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child process died (%v): the adapter made a call the library could not take\n%s", err, combined)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("child wrote no result: %v\n%s", err, combined)
	}
	var r fakeResult
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("child result: %v", err)
	}
	return r
}

// TestFakeLibraryChild is the child side of the fake-library tests; it does
// nothing unless runFakeChild started it.
func TestFakeLibraryChild(t *testing.T) {
	lib, out := os.Getenv("EDGERELAY_FAKE_NVML_LIB"), os.Getenv("EDGERELAY_FAKE_NVML_OUT")
	if lib == "" || out == "" {
		return // not started by runFakeChild
	}
	var r fakeResult
	b, err := Open(Options{Mode: ModeOn, LibraryPath: lib})
	if err != nil {
		r.OpenErr = err.Error()
		r.Unavailable = errors.Is(err, ErrUnavailable)
		// The agent carries on: a second Open must answer the same without
		// touching the library again.
		if _, err2 := Open(Options{Mode: ModeAuto, LibraryPath: lib}); err2 == nil || err2.Error() != err.Error() {
			t.Errorf("second Open = %v, want the first failure again", err2)
		}
	} else {
		r.Info = b.Info()
		for i := range b.Count() {
			var s Sample
			err := b.Sample(i, &s)
			r.Samples = append(r.Samples, s)
			r.SampleErrs = append(r.SampleErrs, errString(err))
			procs, err := b.Processes(i, nil)
			r.Procs = append(r.Procs, procs)
			r.ProcErrs = append(r.ProcErrs, errString(err))
			var e ECC
			if err := b.ECC(i, &e); err != nil {
				t.Errorf("ECC(%d): %v", i, err)
			}
			r.ECC = append(r.ECC, e)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := b.WatchXid(ctx, func(ev XidEvent) { r.Xids = append(r.Xids, ev) })
		cancel()
		r.XidErr = errString(err)
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(err, ErrNotSupported) {
		return "not supported: " + err.Error()
	}
	return err.Error()
}

func TestFakeLibraryNotFound(t *testing.T) {
	t.Parallel()
	r := runFakeChild(t, filepath.Join(t.TempDir(), "missing", "libnvidia-ml.so.1"))
	if !r.Unavailable || !strings.Contains(r.OpenErr, "library not found") {
		t.Fatalf("Open error = %q (unavailable %v), want an ErrUnavailable saying library not found", r.OpenErr, r.Unavailable)
	}
	if strings.Contains(r.OpenErr, "\n") {
		t.Errorf("reason is not one line: %q", r.OpenErr)
	}
}

func TestFakeLibraryDriverNotLoaded(t *testing.T) {
	t.Parallel()
	r := runFakeChild(t, buildFakeLibrary(t, "-DFAKE_DRIVER_NOT_LOADED"))
	if !r.Unavailable || !strings.Contains(r.OpenErr, "driver not loaded") || !strings.Contains(r.OpenErr, "NVML_ERROR_DRIVER_NOT_LOADED") {
		t.Fatalf("Open error = %q (unavailable %v), want an ErrUnavailable saying driver not loaded", r.OpenErr, r.Unavailable)
	}
}

func TestFakeLibraryOldDriver(t *testing.T) {
	t.Parallel()
	r := runFakeChild(t, buildFakeLibrary(t, "-DFAKE_OLD_DRIVER"))
	if r.OpenErr != "" {
		t.Fatalf("Open: %s", r.OpenErr)
	}
	if r.Info.Symbols["nvmlDeviceGetMemoryInfo_v2"] || !r.Info.Symbols["nvmlDeviceGetMemoryInfo"] {
		t.Errorf("symbols = %v, want v1 memory only", r.Info.Symbols)
	}
	if len(r.Samples) != 2 {
		t.Fatalf("%d samples, want 2", len(r.Samples))
	}
	for i, s := range r.Samples {
		if r.SampleErrs[i] != "" {
			t.Errorf("Sample(%d): %s", i, r.SampleErrs[i])
		}
		want := Sample{
			Device:            Device{Index: i, UUID: fakeUUID(i), Name: "Fake GPU " + string(rune('0'+i))},
			Fields:            FieldMemory,
			MemTotal:          80 * fakeGiB,
			MemUsed:           uint64(10+i)*fakeGiB + 512*fakeMiB,
			MemFree:           80*fakeGiB - uint64(10+i)*fakeGiB - 512*fakeMiB,
			MemoryInfoVersion: "v1",
		}
		if s != want {
			t.Errorf("Sample(%d) =\n%+v, want\n%+v", i, s, want)
		}
		if !strings.HasPrefix(r.ProcErrs[i], "not supported") {
			t.Errorf("Processes(%d) error = %q, want not supported", i, r.ProcErrs[i])
		}
		if r.ECC[i].Fields != 0 {
			t.Errorf("ECC(%d) fields = %b, want none", i, r.ECC[i].Fields)
		}
	}
	if !strings.HasPrefix(r.XidErr, "not supported") {
		t.Errorf("WatchXid = %q, want not supported", r.XidErr)
	}
}

func TestFakeLibraryNormal(t *testing.T) {
	t.Parallel()
	r := runFakeChild(t, buildFakeLibrary(t))
	if r.OpenErr != "" {
		t.Fatalf("Open: %s", r.OpenErr)
	}
	if r.Info.Source != "nvml" || r.Info.DriverVersion != "999.99.01" || r.Info.NVMLVersion != "12.999.99.01" || r.Info.Devices != 2 {
		t.Errorf("info = %+v", r.Info)
	}
	if len(r.Samples) != 2 {
		t.Fatalf("%d samples, want 2", len(r.Samples))
	}
	for i, s := range r.Samples {
		if r.SampleErrs[i] != "" {
			t.Errorf("Sample(%d): %s", i, r.SampleErrs[i])
		}
		want := Sample{
			Device:            Device{Index: i, UUID: fakeUUID(i), Name: "Fake GPU " + string(rune('0'+i)), PCIBusID: []string{"00000000:3B:00.0", "00000000:3C:00.0"}[i]},
			Fields:            FieldMemory | FieldMemReserved | FieldUtilization | FieldTemperature | FieldPower | FieldSMClock,
			MemTotal:          80 * fakeGiB,
			MemReserved:       512 * fakeMiB,
			MemUsed:           uint64(10+i) * fakeGiB,
			MemFree:           80*fakeGiB - 512*fakeMiB - uint64(10+i)*fakeGiB,
			MemoryInfoVersion: "v2",
			UtilGPU:           uint32(42 + i),
			UtilMem:           uint32(17 + i),
			TempC:             uint32(55 + i),
			PowerMW:           123456,
			SMClockMHz:        1980,
		}
		if i == 1 { // the fake's GPU 1 answers NOT_SUPPORTED for power
			want.Fields &^= FieldPower
			want.PowerMW = 0
		}
		if s != want {
			t.Errorf("Sample(%d) =\n%+v, want\n%+v", i, s, want)
		}
		if r.ECC[i].Fields != 0 {
			t.Errorf("ECC(%d) fields = %b, want none (the fake answers NOT_SUPPORTED)", i, r.ECC[i].Fields)
		}
	}
	wantProcs := [][]Process{{{PID: 4242, UsedBytes: fakeGiB, HasUsed: true, Name: "fake-runner-4242"}}, {}}
	for i := range wantProcs {
		if r.ProcErrs[i] != "" {
			t.Errorf("Processes(%d): %s", i, r.ProcErrs[i])
		}
		if len(r.Procs[i]) != len(wantProcs[i]) || (len(wantProcs[i]) > 0 && r.Procs[i][0] != wantProcs[i][0]) {
			t.Errorf("Processes(%d) = %+v, want %+v", i, r.Procs[i], wantProcs[i])
		}
	}
	if r.XidErr != "" {
		t.Errorf("WatchXid: %s", r.XidErr)
	}
	if len(r.Xids) != 1 || r.Xids[0].Xid != 79 || r.Xids[0].UUID != fakeUUID(1) || r.Xids[0].Index != 1 {
		t.Errorf("xid events = %+v, want one Xid 79 on GPU 1", r.Xids)
	}
}
