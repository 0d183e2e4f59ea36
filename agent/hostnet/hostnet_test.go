package hostnet

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const header = "Inter-|   Receive                                                |  Transmit\n" +
	" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"

// line formats one interface as the kernel does.
func line(name string, rxBytes, rxPackets, txBytes, txPackets uint64) string {
	return strings.Join([]string{
		"  " + name + ":",
		u(rxBytes), u(rxPackets), "1", "2", "0", "0", "0", "0",
		u(txBytes), u(txPackets), "3", "4", "0", "0", "0", "0",
	}, " ") + "\n"
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

func writeDev(t *testing.T, root, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "net", "dev"), []byte(header+body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDelta(t *testing.T) {
	for _, tc := range []struct {
		name            string
		prev, cur, want uint64
	}{
		{"grows", 100, 250, 150},
		{"same", 7, 7, 0},
		{"32-bit wrap", math.MaxUint32 - 99, 50, 150},
		{"32-bit wrap at the edge", math.MaxUint32, 0, 1},
		{"32-bit reset", 2_000_000_000, 10, 10},
		{"64-bit wrap", math.MaxUint64 - 9, 5, 15},
		{"64-bit reset", 5_000_000_000_000, 1000, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Delta(tc.prev, tc.cur); got != tc.want {
				t.Errorf("Delta(%d, %d) = %d, want %d", tc.prev, tc.cur, got, tc.want)
			}
		})
	}
}

func TestMonitorRatesWrapAndChurn(t *testing.T) {
	root := t.TempDir()
	m := New(root)
	t0 := time.Unix(1_700_000_000, 0)

	writeDev(t, root, line("lo", 999, 9, 999, 9)+line("eth0", 1000, 10, 2000, 20)+line("wg0", math.MaxUint32-999, 5, 0, 0))
	rs, err := m.Sample(t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Interface != "eth0" || rs[1].Interface != "wg0" {
		t.Fatalf("first readings = %+v, want eth0 and wg0 (no lo)", rs)
	}
	for _, r := range rs {
		if r.HasRate {
			t.Errorf("%s: rate on the first reading", r.Interface)
		}
		if _, ok := r.Data()["rx_bytes_per_s"]; ok {
			t.Errorf("%s: rate key in the first reading's data", r.Interface)
		}
	}
	want := Counters{Interface: "eth0", RxBytes: 1000, RxPackets: 10, RxErrors: 1, RxDropped: 2, TxBytes: 2000, TxPackets: 20, TxErrors: 3, TxDropped: 4}
	if rs[0].Counters != want {
		t.Errorf("eth0 counters = %+v, want %+v", rs[0].Counters, want)
	}

	// 2 s later: eth0 grew, wg0's 32-bit rx counter wrapped, docker0 appeared.
	writeDev(t, root, line("eth0", 5000, 30, 2000, 20)+line("wg0", 1000, 6, 0, 0)+line("docker0", 1, 1, 1, 1))
	rs, err = m.Sample(t0.Add(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Reading{}
	for _, r := range rs {
		got[r.Interface] = r
	}
	if r := got["eth0"]; !r.HasRate || r.RxBytesPerS != 2000 || r.TxBytesPerS != 0 {
		t.Errorf("eth0 = %+v, want 2000 B/s in, 0 out", r)
	}
	if r := got["wg0"]; !r.HasRate || r.RxBytesPerS != 1000 { // (999+1000+1)/2
		t.Errorf("wg0 after a 32-bit wrap = %+v, want 1000 B/s", r)
	}
	if r := got["docker0"]; r.HasRate {
		t.Errorf("new interface docker0 has a rate: %+v", r)
	}
	d := got["eth0"].Data()
	for _, k := range []string{"interface", "rx_bytes_per_s", "tx_bytes_per_s", "rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors", "rx_dropped", "tx_dropped"} {
		if _, ok := d[k]; !ok {
			t.Errorf("data lacks %s: %v", k, d)
		}
	}

	// wg0 disappears, then comes back with new counters: no rate, no
	// bogus delta against the counters it had before.
	writeDev(t, root, line("eth0", 6000, 31, 2000, 20))
	if rs, err = m.Sample(t0.Add(3 * time.Second)); err != nil || len(rs) != 1 {
		t.Fatalf("after wg0 went: %+v %v", rs, err)
	}
	writeDev(t, root, line("eth0", 7000, 32, 2000, 20)+line("wg0", 10, 1, 10, 1))
	rs, _ = m.Sample(t0.Add(4 * time.Second))
	for _, r := range rs {
		if r.Interface == "wg0" && r.HasRate {
			t.Errorf("wg0 came back with a rate: %+v", r)
		}
		if r.Interface == "eth0" && r.RxBytesPerS != 1000 {
			t.Errorf("eth0 = %+v, want 1000 B/s", r)
		}
	}

	// A clock that did not advance gives no rate rather than +Inf.
	rs, _ = m.Sample(t0.Add(4 * time.Second))
	for _, r := range rs {
		if r.HasRate {
			t.Errorf("%s: rate over zero time", r.Interface)
		}
	}
}

func TestMonitorErrors(t *testing.T) {
	if _, err := New(t.TempDir()).Sample(time.Now()); err == nil {
		t.Error("missing file: no error")
	}
	root := t.TempDir()
	writeDev(t, root, "eth0: 1 2 3\n")
	if _, err := New(root).Sample(time.Now()); err == nil || !strings.Contains(err.Error(), "eth0") {
		t.Errorf("short line: %v", err)
	}
}

func TestParseNetDevOldKernel(t *testing.T) {
	// Kernels before 2.6.x wrote large counters against the colon.
	cs, err := ParseNetDev([]byte(header + "  eth0:123456789 10 0 0 0 0 0 0 987654321 20 0 0 0 0 0 0\n"))
	if err != nil || len(cs) != 1 || cs[0].RxBytes != 123456789 || cs[0].TxBytes != 987654321 {
		t.Errorf("ParseNetDev = %+v, %v", cs, err)
	}
}

func FuzzParseNetDev(f *testing.F) {
	f.Add([]byte(header + line("eth0", 1, 2, 3, 4) + line("lo", 5, 6, 7, 8)))
	f.Add([]byte(header + "  eth0:1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cs, err := ParseNetDev(data)
		if err != nil {
			return
		}
		for _, c := range cs {
			if c.Interface == "" || strings.ContainsAny(c.Interface, ": \t\n") {
				t.Fatalf("bad interface name %q", c.Interface)
			}
		}
	})
}
