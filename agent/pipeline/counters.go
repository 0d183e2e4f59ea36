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
	if n == 0 {
		return
	}
	c.mu.Lock()
	if c.refused == nil {
		c.refused = map[[2]string]uint64{}
	}
	c.refused[[2]string{source, reason}] += n
	c.mu.Unlock()
}

// Refused copies the refusal counts, keyed by source, then reason.
func (c *Counters) Refused() map[string]map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]map[string]uint64{}
	for k, n := range c.refused {
		if out[k[0]] == nil {
			out[k[0]] = map[string]uint64{}
		}
		out[k[0]][k[1]] = n
	}
	return out
}

// AddReceived counts events accepted into the pipeline from source.
func (c *Counters) AddReceived(source string, n uint64) { c.add(&c.received, source, n) }

// AddRejected counts items refused at ingest (never accepted) from source.
func (c *Counters) AddRejected(source string, n uint64) { c.add(&c.rejected, source, n) }

// AddDropped counts events lost at stage for reason.
func (c *Counters) AddDropped(stage, reason string, n uint64) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	if c.dropped == nil {
		c.dropped = map[[2]string]uint64{}
	}
	c.dropped[[2]string{stage, reason}] += n
	c.mu.Unlock()
}

func (c *Counters) add(m *map[string]uint64, k string, n uint64) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	if *m == nil {
		*m = map[string]uint64{}
	}
	(*m)[k] += n
	c.mu.Unlock()
}

// Snapshot copies the counts; dropped is keyed by stage, then reason.
func (c *Counters) Snapshot() (received, rejected map[string]uint64, dropped map[string]map[string]uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	received, rejected = maps.Clone(c.received), maps.Clone(c.rejected)
	dropped = map[string]map[string]uint64{}
	for k, n := range c.dropped {
		if dropped[k[0]] == nil {
			dropped[k[0]] = map[string]uint64{}
		}
		dropped[k[0]][k[1]] = n
	}
	if received == nil {
		received = map[string]uint64{}
	}
	if rejected == nil {
		rejected = map[string]uint64{}
	}
	return received, rejected, dropped
}
