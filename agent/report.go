package agent

import (
	"sort"

	"github.com/livepeer/edgerelay/relay"
)

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
	Subscribers map[string]SubscriberReport  `json:"subscribers"` // followed trickle channels; session ones under "sessions"
}

// Report returns the agent's counters: the pipeline's, the spool's and
// every sink's (retired ones included, and what earlier runs counted),
// without waiting on any I/O. While the agent starts, the ring and the
// spool are not in it yet.
func (a *Agent) Report() Report {
	started := a.state.Load() != stateStarting // a.pipe and a.spool are set
	received, rejected, dropped := a.counters.Snapshot()
	r := Report{
		State:       stateName(a.state.Load()),
		Received:    received,
		Rejected:    rejected,
		Dropped:     dropped,
		Sessions:    a.sessions.Count(),
		TailDropped: a.tail.Dropped(),
		Sinks:       a.sinkReports(),
		Subscribers: a.subs.reports(),
	}
	addDrop := func(stage, reason string, n uint64) {
		if n == 0 {
			return
		}
		if r.Dropped[stage] == nil {
			r.Dropped[stage] = map[string]uint64{}
		}
		r.Dropped[stage][reason] += n
	}
	if started && a.pipe != nil {
		var ringDropped uint64
		r.RingEvents, r.RingBytes, ringDropped = a.pipe.Ring()
		addDrop("ring", "ring_full", ringDropped)
	}
	if started && a.spool != nil {
		st := a.spool.Stat()
		r.Durable = a.durable && !st.Degraded
		r.MemoryOnly = !a.durable
		r.Degraded = st.Degraded
		r.SpoolEvents, r.SpoolBytes, r.Quarantined = st.Records, st.Bytes, st.Quarantined
	}
	for _, sr := range r.Sinks {
		for reason, n := range sr.Dropped {
			stage := "sink"
			if reason == relay.DropSpoolFull || reason == relay.DropMemoryFull {
				stage = "spool"
			}
			addDrop(stage, reason, n)
		}
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
