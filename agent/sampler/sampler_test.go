package sampler

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/livepeer/edgerelay/agent/hostnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// event is one Emit call.
type event struct {
	typ  string
	data map[string]any
}

// recorder collects emitted events.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) emit(typ string, data map[string]any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{typ, data})
}

// take returns the events of one family recorded since the last take of
// any family, and forgets all events.
func (r *recorder) take(typ string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, e := range r.events {
		if e.typ == typ {
			out = append(out, e.data)
		}
	}
	r.events = nil
	return out
}

// all returns every recorded event and forgets them.
func (r *recorder) all() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

func TestOptionsValidate(t *testing.T) {
	err := Options{Interval: 50 * time.Millisecond, ProcessInterval: 10 * time.Millisecond, ECCInterval: 20 * time.Millisecond}.Validate()
	for _, field := range []string{"Emit", "Interval", "ProcessInterval", "ECCInterval"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("Validate = %v, want a problem naming %s", err, field)
		}
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without Emit succeeded")
	}
	o := Options{Emit: func(string, map[string]any) {}}.withDefaults()
	if o.Interval != time.Second || o.ProcessInterval != 5*time.Second || o.ECCInterval != time.Minute || o.ProcRoot != "/proc" || o.Host == "" {
		t.Errorf("defaults = %+v", o)
	}
	if err := (Options{Emit: func(string, map[string]any) {}}).Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

// TestHostNetWithoutGPUs is the agent without NVML (mode auto on a machine
// without a driver): the sampler still emits host_network_sample each tick.
func TestHostNetWithoutGPUs(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(rx string) {
		body := "Inter-| Receive | Transmit\n face |bytes packets|bytes packets\n" +
			"    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n" +
			"  eth0: " + rx + " 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n"
		if err := os.WriteFile(filepath.Join(root, "net", "dev"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("1000")
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		s, err := New(Options{Emit: rec.emit, HostNet: hostnet.New(root), Logger: quietLogger(), Host: "h"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { _ = s.Run(ctx) })
		synctest.Wait()
		first := rec.take(TypeHostNet)
		if len(first) != 1 || first[0]["interface"] != "eth0" {
			t.Fatalf("first tick = %v, want eth0 only", first)
		}
		if _, ok := first[0]["rx_bytes_per_s"]; ok {
			t.Error("rate on the first reading")
		}
		write("3000")
		time.Sleep(time.Second)
		synctest.Wait()
		second := rec.take(TypeHostNet)
		if len(second) != 1 || second[0]["rx_bytes_per_s"] != 2000.0 {
			t.Errorf("second tick = %v, want 2000 B/s", second)
		}
		cancel()
		wg.Wait()
		if err := s.Run(context.Background()); err == nil {
			t.Error("second Run succeeded")
		}
	})
}

// FuzzParsePPID: any /proc/<pid>/stat content gives a parent pid >= 0 or
// an error, never a panic. Seeds are in testdata/fuzz/FuzzParsePPID.
func FuzzParsePPID(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ppid, err := ParsePPID(b)
		if err == nil && ppid < 0 {
			t.Fatalf("%q: ppid %d", b, ppid)
		}
	})
}
