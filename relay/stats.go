package relay

import (
	"maps"
	"sync"
	"time"
)

// Stats counts one sink's outcomes. It is safe for concurrent use.
//
// Settle acknowledges the cursor and counts the outcome under one lock, and
// Snapshot reads the store's accounting under the same lock, so a snapshot
// always satisfies received = delivered + dropped + pending exactly.
type Stats struct {
	mu          sync.Mutex        // guards the fields below; taken before any store lock
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

// Settle runs ack (which moves the sink's cursor) and, if it succeeds, counts
// delivered and dropped records, all under the stats lock.
func (s *Stats) Settle(delivered int, drops []Drop, ack func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ack(); err != nil {
		return err
	}
	s.delivered += uint64(max(delivered, 0))
	for _, d := range drops {
		s.dropped[d.Reason]++
	}
	if delivered > 0 {
		s.lastSuccess = time.Now()
	}
	return nil
}

// SettleRange acknowledges the contiguous records first..last through ack,
// which returns the cursor position before the ack, and counts their
// outcome under the stats lock. Records at or before that position were
// evicted by the spool while they were in flight; the spool counts them
// (spool_full), so they are counted here neither as delivered nor as
// dropped, and the identity received = delivered + dropped + pending stays
// exact.
func (s *Stats) SettleRange(first, last uint64, drops []Drop, ack func() (prev uint64, err error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, err := ack()
	if err != nil {
		return err
	}
	lo := max(first, prev+1)
	if last < lo {
		return nil
	}
	n := last - lo + 1
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
	return nil
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

// AddDropped counts records dropped outside a Settle (for example a session
// sink removed with records it can no longer send).
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
// records (an empty keep-alive segment, a probe).
func (s *Stats) MarkSuccess() {
	s.mu.Lock()
	s.lastSuccess = time.Now()
	s.mu.Unlock()
}

// Snapshot copies the stats. If read is not nil it runs under the same lock,
// so what it reads from the store is consistent with the counts.
func (s *Stats) Snapshot(read func()) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if read != nil {
		read()
	}
	return Snapshot{
		Delivered:   s.delivered,
		Dropped:     maps.Clone(s.dropped),
		Requests:    maps.Clone(s.requests),
		Retries:     maps.Clone(s.retries),
		Paused:      s.paused,
		LastSuccess: s.lastSuccess,
	}
}
