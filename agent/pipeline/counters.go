package pipeline

import (
	"maps"
	"sync"
)

// Counters are the agent's counts outside the sinks (which count in
// relay.Stats): events received by source, items rejected at ingest by
// source, and events dropped by stage and reason before they reached the
// spool or outside any sink. Counters never go down. Safe for concurrent
// use.
type Counters struct {
	mu       sync.Mutex
	received map[string]uint64
	rejected map[string]uint64
	dropped  map[[2]string]uint64 // {stage, reason}
	refused  map[[2]string]uint64 // {source, reason}
}

// AddRefused counts items an overloaded agent refused as a whole (answered
// 429 or 503 with Retry-After; never accepted), by source and reason.
func (c *Counters) AddRefused(source, reason string, n uint64) {
	add(c, &c.refused, [2]string{source, reason}, n)
}

// Refused copies the refusal counts, keyed by source, then reason.
func (c *Counters) Refused() map[string]map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return nest(c.refused)
}

// AddReceived counts events accepted into the pipeline from source.
func (c *Counters) AddReceived(source string, n uint64) { add(c, &c.received, source, n) }

// AddRejected counts items refused at ingest (never accepted) from source.
func (c *Counters) AddRejected(source string, n uint64) { add(c, &c.rejected, source, n) }

// AddDropped counts events lost at stage for reason.
func (c *Counters) AddDropped(stage, reason string, n uint64) {
	add(c, &c.dropped, [2]string{stage, reason}, n)
}

// add counts n under k in *m, making the map on first use.
func add[K comparable](c *Counters, m *map[K]uint64, k K, n uint64) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	if *m == nil {
		*m = map[K]uint64{}
	}
	(*m)[k] += n
	c.mu.Unlock()
}

// nest copies m keyed by its pairs' first, then second string.
func nest(m map[[2]string]uint64) map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for k, n := range m {
		if out[k[0]] == nil {
			out[k[0]] = map[string]uint64{}
		}
		out[k[0]][k[1]] = n
	}
	return out
}

// Snapshot copies the counts; dropped is keyed by stage, then reason.
func (c *Counters) Snapshot() (received, rejected map[string]uint64, dropped map[string]map[string]uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	received, rejected = maps.Clone(c.received), maps.Clone(c.rejected)
	dropped = nest(c.dropped)
	if received == nil {
		received = map[string]uint64{}
	}
	if rejected == nil {
		rejected = map[string]uint64{}
	}
	return received, rejected, dropped
}
