//go:build linux

package hostnet_test

import (
	"math"
	"os"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/agent/hostnet"
	"github.com/livepeer/edgerelay/agent/hostnet/netnstest"
)

// TestNamespacesRealTraffic: two real network namespaces, each with a
// process in it and a veth to a peer namespace, carry known traffic; each
// one's figures are within 5% of what was sent and received, and the
// agent's own process is refused (its namespace is the agent's).
func TestNamespacesRealTraffic(t *testing.T) {
	a, b := netnstest.New(t, 1), netnstest.New(t, 2)
	n := hostnet.NewNamespaces("")
	targets := []hostnet.Target{{Key: "sess-a", PID: a.PID}, {Key: "sess-b", PID: b.PID}, {Key: "agent", PID: os.Getpid()}}
	t0 := time.Now()
	for _, r := range n.Sample(t0, targets) {
		want := ""
		if r.Key == "agent" {
			want = hostnet.SkipAgentNetns
		}
		if r.Skip != want || r.HasDelta {
			t.Fatalf("baseline %s: %+v", r.Key, r)
		}
	}
	const mb = 1 << 20
	a.Exchange(t, 6*mb, 2*mb)
	b.Exchange(t, 1*mb, 5*mb)
	rs := n.Sample(t0.Add(time.Second), targets)
	for _, tc := range []struct {
		r        hostnet.NSReading
		up, down float64
	}{{rs[0], 6 * mb, 2 * mb}, {rs[1], 1 * mb, 5 * mb}} {
		r := tc.r
		if !r.HasDelta || r.Skip != "" {
			t.Fatalf("%s: %+v", r.Key, r)
		}
		t.Logf("%s: up %d bytes (sent %.0f), down %d bytes (sent %.0f), %d interface(s)", r.Key, r.TxBytes, tc.up, r.RxBytes, tc.down, r.Interfaces)
		if e := math.Abs(float64(r.TxBytes)-tc.up) / tc.up; e > 0.05 {
			t.Errorf("%s: up %d bytes for %.0f sent: %.1f%% off", r.Key, r.TxBytes, tc.up, 100*e)
		}
		if e := math.Abs(float64(r.RxBytes)-tc.down) / tc.down; e > 0.05 {
			t.Errorf("%s: down %d bytes for %.0f sent: %.1f%% off", r.Key, r.RxBytes, tc.down, 100*e)
		}
	}
	if rs[2].Skip != hostnet.SkipAgentNetns {
		t.Errorf("the agent's own process: %+v", rs[2])
	}
}
