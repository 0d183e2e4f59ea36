package agent

import (
	"maps"
	"sort"
	"strings"
	"sync"

	"github.com/livepeer/edgerelay/relay"
)

// countVec is a set of counters by label value. Safe for concurrent use.
type countVec struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (c *countVec) add(k string, n uint64) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]uint64)
	}
	c.m[k] += n
	c.mu.Unlock()
}

func (c *countVec) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

// counters are the agent's own counts (the sinks count in relay.Stats).
type counters struct {
	received countVec // by source
	rejected countVec // by source: items refused at ingest, never accepted
	dropped  countVec // by "stage/reason", for drops outside the sinks and the spool
}

func newCounters() *counters { return &counters{} }

// SinkReport is one sink's accounting in /v1/stats and agent_status.
type SinkReport = relay.SinkReport

// Report is the agent's state, served by /v1/stats and carried in
// agent_status envelopes.
type Report struct {
	State       string                       `json:"state"`
	Durable     bool                         `json:"durable"`
	MemoryOnly  bool                         `json:"memory_only"`
	Degraded    bool                         `json:"spool_degraded"`
	Received    map[string]uint64            `json:"received"`
	Rejected    map[string]uint64            `json:"rejected"`
	Dropped     map[string]map[string]uint64 `json:"dropped"` // stage -> reason -> events
	RingEvents  int                          `json:"ring_events"`
	RingBytes   int64                        `json:"ring_bytes"`
	SpoolEvents uint64                       `json:"spool_events"`
	SpoolBytes  int64                        `json:"spool_bytes"`
	Quarantined int                          `json:"spool_quarantined"`
	Sessions    int                          `json:"sessions"`
	TailDropped uint64                       `json:"tail_dropped"`
	Sinks       map[string]SinkReport        `json:"sinks"`
}

// Report returns a consistent view of the counters.
func (a *Agent) Report() Report {
	r := Report{
		State:       stateName(a.state.Load()),
		Received:    orEmpty(a.counters.received.snapshot()),
		Rejected:    orEmpty(a.counters.rejected.snapshot()),
		Dropped:     map[string]map[string]uint64{},
		Sessions:    a.sessions.count(),
		TailDropped: a.tail.dropped.Load(),
		Sinks:       map[string]SinkReport{},
	}
	r.RingEvents, r.RingBytes = a.ring.Len()
	addDrop := func(stage, reason string, n uint64) {
		if n == 0 {
			return
		}
		if r.Dropped[stage] == nil {
			r.Dropped[stage] = map[string]uint64{}
		}
		r.Dropped[stage][reason] += n
	}
	addDrop("ring", "ring_full", a.ring.Dropped())
	for k, n := range a.counters.dropped.snapshot() {
		stage, reason, _ := strings.Cut(k, "/")
		addDrop(stage, reason, n)
	}
	if a.store != nil {
		st := a.store.Stat()
		r.Durable = a.durable() && !st.Degraded
		r.MemoryOnly = !a.durable()
		r.Degraded = st.Degraded
		r.SpoolEvents, r.SpoolBytes, r.Quarantined = st.Records, st.Bytes, st.Quarantined
	}
	for _, h := range a.sinkList() {
		snap := h.stats.Snapshot() // before the spool's stat: see relay.Account
		ss, _ := h.st.SinkStat(h.name)
		sr := relay.Account(h.kind, snap, ss)
		r.Sinks[h.name] = sr
		for reason, n := range sr.Dropped {
			stage := "sink"
			if reason == "spool_full" {
				stage = "spool"
			}
			addDrop(stage, reason, n)
		}
	}
	for name, sr := range a.finishedSinks() {
		r.Sinks[name] = sr
	}
	return r
}

func orEmpty(m map[string]uint64) map[string]uint64 {
	if m == nil {
		return map[string]uint64{}
	}
	return m
}

// statusData is the payload of an agent_status envelope.
func (a *Agent) statusData(reason string) map[string]any {
	r := a.Report()
	delivered := map[string]uint64{}
	pending := map[string]uint64{}
	paused := []string{}
	for name, s := range r.Sinks {
		delivered[name] = s.Delivered
		pending[name] = s.Pending
		if s.Paused != "" {
			paused = append(paused, name+":"+s.Paused)
		}
	}
	sort.Strings(paused)
	return map[string]any{
		"reason":      reason,
		"state":       r.State,
		"durable":     r.Durable,
		"received":    r.Received,
		"rejected":    r.Rejected,
		"delivered":   delivered,
		"dropped":     r.Dropped,
		"pending":     pending,
		"ring_events": r.RingEvents,
		"spool_bytes": r.SpoolBytes,
		"paused":      paused,
		"sinks":       r.Sinks,
	}
}
