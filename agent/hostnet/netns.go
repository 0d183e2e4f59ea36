package hostnet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Why a target's traffic is not reported (NSReading.Skip).
const (
	// SkipAgentNetns: the process shares the agent's network namespace
	// (under systemd, the host's): its counters are the whole namespace's,
	// not the process's.
	SkipAgentNetns = "agent_netns"
	// SkipSharedNetns: another target is in the same namespace: the bytes
	// cannot be split between them.
	SkipSharedNetns = "netns_shared"
	// SkipUnreadable: the namespace cannot be told (the process is gone, or
	// the agent may not read /proc/<pid>/ns/net, which takes the process's
	// user or CAP_SYS_PTRACE), or its /proc/<pid>/net/dev cannot be read.
	SkipUnreadable = "netns_unreadable"
)

// SkipReasons are the values of NSReading.Skip other than "".
var SkipReasons = [...]string{SkipAgentNetns, SkipSharedNetns, SkipUnreadable}

// Target is a process whose network namespace carries one stream: a
// session's runner.
type Target struct {
	Key string // the session id
	PID int
}

// NSReading is one target's traffic since its previous reading.
type NSReading struct {
	Target
	NetNS    uint64 // the namespace's inode, 0 when unknown
	Skip     string // why there are no figures; "" when there are
	HasDelta bool   // false on the first reading of a target (or of its new namespace)
	// Since the previous reading, over every interface but lo: received
	// (down) and sent (up).
	RxBytes, TxBytes, RxPackets, TxPackets uint64
	Interval                               time.Duration
	Interfaces                             int // interfaces counted
}

// Data is the stream_bandwidth_sample payload of r (HasDelta true, Skip ""):
// session_id, pid, up_bytes, down_bytes, up_packets, down_packets,
// interval_ms, up_bytes_per_s, down_bytes_per_s and interfaces. Up is what
// the runner's namespace sent, down what it received.
func (r NSReading) Data() map[string]any {
	d := map[string]any{
		"session_id":   r.Key,
		"pid":          r.PID,
		"up_bytes":     r.TxBytes,
		"down_bytes":   r.RxBytes,
		"up_packets":   r.TxPackets,
		"down_packets": r.RxPackets,
		"interval_ms":  r.Interval.Milliseconds(),
		"interfaces":   r.Interfaces,
	}
	if s := r.Interval.Seconds(); s > 0 {
		d["up_bytes_per_s"] = float64(r.TxBytes) / s
		d["down_bytes_per_s"] = float64(r.RxBytes) / s
	}
	return d
}

// Namespaces reads the traffic of processes' network namespaces
// (/proc/<pid>/net/dev) between successive Samples: a runner in a container
// of its own has its own namespace, so its interfaces' counters are its
// stream's bytes. It reports a process only when the figures are its own
// (see the Skip reasons). It is safe for concurrent use, but deltas are
// only meaningful with one caller ticking.
type Namespaces struct {
	procRoot string

	mu   sync.Mutex // guards prev
	prev map[string]nsPrev
}

type nsPrev struct {
	pid      int
	ns       uint64
	at       time.Time
	counters []Counters
}

// NewNamespaces reads <procRoot>/<pid>/... ("" means "/proc").
func NewNamespaces(procRoot string) *Namespaces {
	if procRoot == "" {
		procRoot = "/proc"
	}
	return &Namespaces{procRoot: procRoot, prev: map[string]nsPrev{}}
}

// Sample reads every target at now and returns one reading per target, in
// order. Targets not given are forgotten.
func (n *Namespaces) Sample(now time.Time, targets []Target) []NSReading {
	self, _ := n.netns("self")
	out := make([]NSReading, len(targets))
	count := map[uint64]int{}
	for i, t := range targets {
		out[i].Target = t
		ns, err := n.netns(strconv.Itoa(t.PID))
		switch {
		case err != nil || ns == 0:
			out[i].Skip = SkipUnreadable
		case ns == self:
			out[i].NetNS, out[i].Skip = ns, SkipAgentNetns
		default:
			out[i].NetNS = ns
			count[ns]++
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	next := make(map[string]nsPrev, len(targets))
	for i := range out {
		r := &out[i]
		if r.Skip == "" && count[r.NetNS] > 1 {
			r.Skip = SkipSharedNetns
		}
		if r.Skip != "" {
			continue
		}
		cs, err := n.netDev(r.PID)
		if err != nil {
			r.Skip = SkipUnreadable
			continue
		}
		cur := nsPrev{pid: r.PID, ns: r.NetNS, at: now, counters: cs}
		next[r.Key] = cur
		p, ok := n.prev[r.Key]
		if !ok || p.pid != r.PID || p.ns != r.NetNS || !now.After(p.at) {
			continue // a first reading: the baseline
		}
		r.HasDelta, r.Interval = true, now.Sub(p.at)
		for _, c := range cs {
			if c.Interface == "lo" {
				continue
			}
			r.Interfaces++
			var was Counters // an interface that appeared counts from zero
			for _, pc := range p.counters {
				if pc.Interface == c.Interface {
					was = pc
					break
				}
			}
			r.RxBytes += Delta(was.RxBytes, c.RxBytes)
			r.TxBytes += Delta(was.TxBytes, c.TxBytes)
			r.RxPackets += Delta(was.RxPackets, c.RxPackets)
			r.TxPackets += Delta(was.TxPackets, c.TxPackets)
		}
	}
	n.prev = next
	return out
}

// netns returns the inode of <procRoot>/<pid>/ns/net.
func (n *Namespaces) netns(pid string) (uint64, error) {
	link, err := os.Readlink(filepath.Join(n.procRoot, pid, "ns", "net"))
	if err != nil {
		return 0, err
	}
	return ParseNetnsLink(link)
}

func (n *Namespaces) netDev(pid int) ([]Counters, error) {
	path := filepath.Join(n.procRoot, strconv.Itoa(pid), "net", "dev")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cs, err := ParseNetDev(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cs, nil
}

// ParseNetnsLink returns the inode of a network namespace from the target
// of a /proc/<pid>/ns/net link: "net:[4026531840]".
func ParseNetnsLink(link string) (uint64, error) {
	inner, ok := strings.CutPrefix(link, "net:[")
	if !ok || !strings.HasSuffix(inner, "]") {
		return 0, errors.New("not a network namespace link")
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(inner, "]"), 10, 64)
	if err != nil || ino == 0 {
		return 0, errors.New("network namespace link: bad inode")
	}
	return ino, nil
}
