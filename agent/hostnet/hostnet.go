// Package hostnet samples the host's network interfaces from /proc/net/dev
// for host_network_sample events: per interface (loopback excluded) the
// kernel's counters and the receive and transmit rates since the previous
// reading.
//
// /proc/net/dev describes the network namespace of the reading process: the
// agent needs the host's namespace (--network=host, or systemd on the host)
// to report the host's interfaces.
//
// Rates need two readings: an interface's first reading (the first Sample,
// or the first after the interface appeared) carries its counters without
// rates. Counters that go backwards are taken as a wrap of a 32-bit or
// 64-bit counter when that gives a plausible increase (under half the
// counter's range), otherwise as a reset (the interface was re-created or
// its driver reloaded), in which case the delta is the new value.
package hostnet

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Counters are one interface's totals as the kernel reports them.
type Counters struct {
	Interface string
	RxBytes   uint64
	RxPackets uint64
	RxErrors  uint64
	RxDropped uint64
	TxBytes   uint64
	TxPackets uint64
	TxErrors  uint64
	TxDropped uint64
}

// Reading is one interface's counters and, from the second reading on, its
// byte rates.
type Reading struct {
	Counters
	HasRate     bool    // false on an interface's first reading
	RxBytesPerS float64 // bytes per second received since the previous reading
	TxBytesPerS float64 // bytes per second sent since the previous reading
}

// Data is the host_network_sample payload of r: interface, rx_bytes_per_s
// and tx_bytes_per_s (absent on a first reading), and the counters
// rx_bytes, tx_bytes, rx_packets, tx_packets, rx_errors, tx_errors,
// rx_dropped, tx_dropped.
func (r Reading) Data() map[string]any {
	d := map[string]any{
		"interface":  r.Interface,
		"rx_bytes":   r.RxBytes,
		"tx_bytes":   r.TxBytes,
		"rx_packets": r.RxPackets,
		"tx_packets": r.TxPackets,
		"rx_errors":  r.RxErrors,
		"tx_errors":  r.TxErrors,
		"rx_dropped": r.RxDropped,
		"tx_dropped": r.TxDropped,
	}
	if r.HasRate {
		d["rx_bytes_per_s"] = r.RxBytesPerS
		d["tx_bytes_per_s"] = r.TxBytesPerS
	}
	return d
}

// Monitor computes readings between successive Samples. It is safe for
// concurrent use, but rates are only meaningful with one caller ticking.
type Monitor struct {
	path string

	mu     sync.Mutex // guards prev and prevAt
	prev   map[string]Counters
	prevAt time.Time
}

// New reads <procRoot>/net/dev ("" means "/proc").
func New(procRoot string) *Monitor {
	if procRoot == "" {
		procRoot = "/proc"
	}
	return &Monitor{path: filepath.Join(procRoot, "net", "dev"), prev: make(map[string]Counters)}
}

// Sample reads the counters at now and returns one Reading per interface
// except lo, in the file's order. Interfaces that disappeared are forgotten;
// one that comes back starts again without a rate.
func (m *Monitor) Sample(now time.Time) ([]Reading, error) {
	data, err := os.ReadFile(m.path)
	if err != nil {
		return nil, err
	}
	cs, err := ParseNetDev(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.path, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	dt := now.Sub(m.prevAt).Seconds()
	next := make(map[string]Counters, len(cs))
	out := make([]Reading, 0, len(cs))
	for _, c := range cs {
		if c.Interface == "lo" {
			continue
		}
		next[c.Interface] = c
		r := Reading{Counters: c}
		if p, ok := m.prev[c.Interface]; ok && dt > 0 {
			r.HasRate = true
			r.RxBytesPerS = float64(Delta(p.RxBytes, c.RxBytes)) / dt
			r.TxBytesPerS = float64(Delta(p.TxBytes, c.TxBytes)) / dt
		}
		out = append(out, r)
	}
	m.prev, m.prevAt = next, now
	return out, nil
}

// Delta is how much a counter grew from prev to cur, allowing for a wrap of
// a 32-bit or 64-bit counter, or a reset to zero (see the package doc).
func Delta(prev, cur uint64) uint64 {
	if cur >= prev {
		return cur - prev
	}
	if prev <= math.MaxUint32 && cur <= math.MaxUint32 {
		if d := (math.MaxUint32 - prev) + cur + 1; d < 1<<31 {
			return d // 32-bit counter wrapped
		}
		return cur // reset
	}
	if d := cur - prev; d < 1<<63 { // modular arithmetic: the 64-bit wrap
		return d
	}
	return cur // reset
}

// ParseNetDev parses the contents of /proc/net/dev: two header lines, then
// "name: 16 numbers" per interface (receive bytes, packets, errs, drop, fifo,
// frame, compressed, multicast; transmit bytes, packets, errs, drop, fifo,
// colls, carrier, compressed). Old kernels wrote no space after the colon.
func ParseNetDev(data []byte) ([]Counters, error) {
	var out []Counters
	n := 0
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		n++
		if n <= 2 || len(bytes.TrimSpace(line)) == 0 {
			continue // headers, trailing newline
		}
		name, rest, ok := bytes.Cut(line, []byte{':'})
		name = bytes.TrimSpace(name)
		if !ok || len(name) == 0 || bytes.ContainsAny(name, " \t\r") {
			return nil, fmt.Errorf("line %d: no interface name", n)
		}
		f := bytes.Fields(rest)
		if len(f) < 16 {
			return nil, fmt.Errorf("line %d (%s): %d fields, want 16", n, name, len(f))
		}
		var v [16]uint64
		for i := range v {
			x, err := strconv.ParseUint(string(f[i]), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d (%s): field %d: %w", n, name, i+1, err)
			}
			v[i] = x
		}
		out = append(out, Counters{
			Interface: string(name),
			RxBytes:   v[0], RxPackets: v[1], RxErrors: v[2], RxDropped: v[3],
			TxBytes: v[8], TxPackets: v[9], TxErrors: v[10], TxDropped: v[11],
		})
	}
	return out, nil
}
