package hostnet

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// fakeProc is a /proc with namespaces and net/dev files made by the test.
type fakeProc struct {
	t    *testing.T
	root string
}

func (p fakeProc) ns(pid string, ino uint64) {
	dir := filepath.Join(p.root, pid, "ns")
	os.MkdirAll(dir, 0o755)
	os.Remove(filepath.Join(dir, "net"))
	if err := os.Symlink(fmt.Sprintf("net:[%d]", ino), filepath.Join(dir, "net")); err != nil {
		p.t.Fatal(err)
	}
}

func (p fakeProc) dev(pid int, rows ...string) {
	dir := filepath.Join(p.root, strconv.Itoa(pid), "net")
	os.MkdirAll(dir, 0o755)
	body := "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
	for _, r := range rows {
		body += r + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "dev"), []byte(body), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func row(name string, rx, rxp, tx, txp uint64) string {
	return fmt.Sprintf("%6s: %d %d 0 0 0 0 0 0 %d %d 0 0 0 0 0 0", name, rx, rxp, tx, txp)
}

// TestNamespacesRules: deltas per target over every interface but lo,
// from the second reading; a namespace shared with the agent or another
// target, or one that cannot be read, gives no figures and says why.
func TestNamespacesRules(t *testing.T) {
	p := fakeProc{t, t.TempDir()}
	p.ns("self", 1)
	p.ns("100", 2) // session a: its own namespace
	p.ns("200", 1) // session b: the agent's
	p.ns("300", 3) // sessions c and d share one
	p.ns("301", 3)
	p.dev(100, row("lo", 999, 9, 999, 9), row("eth0", 1000, 10, 5000, 50))
	p.dev(300, row("eth0", 1, 1, 1, 1))
	p.dev(301, row("eth0", 1, 1, 1, 1))
	n := NewNamespaces(p.root)
	targets := []Target{{"a", 100}, {"b", 200}, {"c", 300}, {"d", 301}, {"gone", 400}}
	t0 := time.Unix(1000, 0)
	first := n.Sample(t0, targets)
	wantSkip := []string{"", SkipAgentNetns, SkipSharedNetns, SkipSharedNetns, SkipUnreadable}
	for i, r := range first {
		if r.Skip != wantSkip[i] || r.HasDelta {
			t.Errorf("first reading of %s: skip %q delta %v, want skip %q and no delta", r.Key, r.Skip, r.HasDelta, wantSkip[i])
		}
	}
	// eth0 grows; a new interface appears (counted from zero); lo is not counted.
	p.dev(100, row("lo", 5000, 50, 5000, 50), row("eth0", 3000, 30, 9000, 90), row("eth1", 100, 1, 200, 2))
	r := n.Sample(t0.Add(2*time.Second), targets)[0]
	if !r.HasDelta || r.RxBytes != 2100 || r.TxBytes != 4200 || r.RxPackets != 21 || r.TxPackets != 42 || r.Interval != 2*time.Second || r.Interfaces != 2 {
		t.Fatalf("second reading: %+v", r)
	}
	d := r.Data()
	if d["session_id"] != "a" || d["up_bytes"] != uint64(4200) || d["down_bytes"] != uint64(2100) || d["up_bytes_per_s"] != 2100.0 || d["interval_ms"] != int64(2000) {
		t.Errorf("data: %v", d)
	}
	// The runner restarts in a new namespace: a new baseline.
	p.ns("100", 9)
	if r := n.Sample(t0.Add(3*time.Second), targets)[0]; r.HasDelta || r.Skip != "" {
		t.Errorf("new namespace: %+v", r)
	}
	// A target no longer given is forgotten: coming back, it starts again.
	n.Sample(t0.Add(4*time.Second), nil)
	if r := n.Sample(t0.Add(5*time.Second), targets[:1])[0]; r.HasDelta {
		t.Errorf("forgotten target came back with a delta: %+v", r)
	}
}

func TestParseNetnsLink(t *testing.T) {
	for _, tc := range []struct {
		link string
		ino  uint64
	}{
		{"net:[4026531840]", 4026531840},
		{"net:[0]", 0},
		{"mnt:[4026531840]", 0},
		{"net:[12", 0},
		{"net:[-1]", 0},
		{"", 0},
	} {
		ino, err := ParseNetnsLink(tc.link)
		if ino != tc.ino || (err == nil) != (tc.ino != 0) {
			t.Errorf("%q: %d %v, want %d", tc.link, ino, err, tc.ino)
		}
	}
}

// FuzzParseNetnsLink: any link target gives an inode or an error. Seeds are
// in testdata/fuzz/FuzzParseNetnsLink.
func FuzzParseNetnsLink(f *testing.F) {
	f.Fuzz(func(t *testing.T, link string) {
		ino, err := ParseNetnsLink(link)
		if (err == nil) != (ino != 0) {
			t.Fatalf("%q: %d %v", link, ino, err)
		}
	})
}
