package relay

import (
	"maps"
	"sync"
	"time"

	"github.com/livepeer/edgerelay/spool"
)

// Stats counts one sink's outcomes. It is safe for concurrent use; its lock
// is never held across I/O, so status readers (/metrics, /v1/stats, the
// watchdog) never wait on the disk or the network.
type Stats struct {
	mu          sync.Mutex        // guards the fields below
	delivered   uint64            // records the peer accepted
	dropped     map[string]uint64 // by reason, records the sink gave up on
	requests    map[string]uint64 // by outcome code ("200", "429", "error", ...)
	retries     map[string]uint64 // by class ("transient", "throttled", "paused")
	paused      string            // pause reason, "" when running
	lastSuccess time.Time
}

// NewStats returns zeroed stats.
func NewStats() *Stats {
	return &Stats{
		dropped:  make(map[string]uint64),
		requests: make(map[string]uint64),
		retries:  make(map[string]uint64),
	}
}

// Snapshot is a copy of Stats at one moment.
type Snapshot struct {
	Delivered   uint64
	Dropped     map[string]uint64
	Requests    map[string]uint64
	Retries     map[string]uint64
	Paused      string
	LastSuccess time.Time
}

// DroppedTotal sums Dropped over reasons.
func (s Snapshot) DroppedTotal() uint64 {
	var n uint64
	for _, v := range s.Dropped {
		n += v
	}
	return n
}

// Settle counts the outcome of the contiguous records first..last once
// their acknowledgement moved the cursor from prev. Records at or before
// prev were evicted by the spool while they were in flight; the spool counts
// them (spool_full), so they are counted here neither as delivered nor as
// dropped, and each record is counted exactly once.
func (s *Stats) Settle(first, last, prev uint64, drops []Drop) {
	lo := max(first, prev+1)
	if last < lo {
		return
	}
	n := last - lo + 1
	s.mu.Lock()
	defer s.mu.Unlock()
	var dropped uint64
	for _, d := range drops {
		if d.Seq >= lo && d.Seq <= last {
			s.dropped[d.Reason]++
			dropped++
		}
	}
	s.delivered += n - dropped
	if n > dropped {
		s.lastSuccess = time.Now()
	}
}

// AddRequest counts one request to the peer by outcome code: an HTTP status
// ("200"), or a short word for requests without one ("error", "timeout").
func (s *Stats) AddRequest(code string) {
	s.mu.Lock()
	s.requests[code]++
	s.mu.Unlock()
}

// AddRetry counts one wait before a retry, by class name.
func (s *Stats) AddRetry(reason string) {
	s.mu.Lock()
	s.retries[reason]++
	s.mu.Unlock()
}

// AddDropped counts records dropped outside a Settle (a sink retired with
// records it can no longer send).
func (s *Stats) AddDropped(reason string, n uint64) {
	s.mu.Lock()
	s.dropped[reason] += n
	s.mu.Unlock()
}

// SetPaused records the pause reason ("" when running).
func (s *Stats) SetPaused(reason string) {
	s.mu.Lock()
	s.paused = reason
	s.mu.Unlock()
}

// MarkSuccess records a successful exchange with the peer that delivered no
// records (a keep-alive, a probe).
func (s *Stats) MarkSuccess() {
	s.mu.Lock()
	s.lastSuccess = time.Now()
	s.mu.Unlock()
}

// Snapshot copies the stats.
func (s *Stats) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Snapshot{
		Delivered:   s.delivered,
		Dropped:     maps.Clone(s.dropped),
		Requests:    maps.Clone(s.requests),
		Retries:     maps.Clone(s.retries),
		Paused:      s.paused,
		LastSuccess: s.lastSuccess,
	}
}

// DropSpoolFull is the drop reason of records the spool evicted over its
// cap before the sink delivered them (stage "spool").
const DropSpoolFull = "spool_full"

// DropMemoryFull is the drop reason of records the spool dropped over its
// memory budget while its disk could not be written, before the sink
// delivered them (stage "spool").
const DropMemoryFull = "memory_full"

// SinkReport is one sink's accounting, as /v1/stats, /metrics and
// agent_status show it. Received = Delivered + DroppedTotal + Pending holds
// exactly (Balanced).
type SinkReport struct {
	Kind         string            `json:"kind"`
	Received     uint64            `json:"received"`
	Delivered    uint64            `json:"delivered"`
	Dropped      map[string]uint64 `json:"dropped"`
	DroppedTotal uint64            `json:"dropped_total"`
	Pending      uint64            `json:"pending"`
	Balanced     bool              `json:"balanced"`
	Paused       string            `json:"paused,omitempty"`
	Requests     map[string]uint64 `json:"requests,omitempty"`
	Retries      map[string]uint64 `json:"retries,omitempty"`
	LastSuccess  *time.Time        `json:"last_success,omitempty"`
}

// Account builds a sink's report from its stats and its spool accounting.
// snap must be taken before ss: then every record the stats count was
// received by the time ss was read. Pending is what was received and is
// neither delivered nor dropped (evictions included), so the identity holds
// by construction even while an acknowledgement is between the spool and
// the stats; at rest it equals the spool's own count (tests check both).
func Account(kind string, snap Snapshot, ss spool.SinkStat) SinkReport {
	dropped := maps.Clone(snap.Dropped)
	if dropped == nil {
		dropped = map[string]uint64{}
	}
	if ss.Evicted > 0 {
		dropped[DropSpoolFull] += ss.Evicted
	}
	if ss.MemoryEvicted > 0 {
		dropped[DropMemoryFull] += ss.MemoryEvicted
	}
	r := SinkReport{
		Kind:      kind,
		Received:  ss.Received,
		Delivered: snap.Delivered,
		Dropped:   dropped,
		Paused:    snap.Paused,
		Requests:  snap.Requests,
		Retries:   snap.Retries,
	}
	for _, n := range dropped {
		r.DroppedTotal += n
	}
	if settled := r.Delivered + r.DroppedTotal; settled <= r.Received {
		r.Pending = r.Received - settled
	}
	r.Balanced = r.Received == r.Delivered+r.DroppedTotal+r.Pending
	if !snap.LastSuccess.IsZero() {
		t := snap.LastSuccess.UTC()
		r.LastSuccess = &t
	}
	return r
}
