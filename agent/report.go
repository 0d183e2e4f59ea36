package agent

import (
	"maps"
	"slices"
	"sort"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/httpsink"
)

// SinkReport is one sink's accounting in /v1/stats and agent_status.
type SinkReport = relay.SinkReport

// Report is the agent's state, served by /v1/stats and carried in
// agent_status envelopes.
type Report struct {
	Version     string                       `json:"version"`
	Revision    string                       `json:"revision"`
	State       string                       `json:"state"`
	Durable     bool                         `json:"durable"`
	MemoryOnly  bool                         `json:"memory_only"`
	Degraded    bool                         `json:"spool_degraded"`
	Received    map[string]uint64            `json:"received"`
	Rejected    map[string]uint64            `json:"rejected"`
	Refused     map[string]map[string]uint64 `json:"refused"` // source -> reason -> items refused when overloaded (429/503)
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

// DropSeries is one stage and reason of edgerelay_events_dropped_total.
type DropSeries struct{ Stage, Reason string }

// dropSeries is the one table of every place an event can be lost, as
// edgerelay_events_dropped_total{stage,reason} names it. Every series
// exists at 0 from start, so that the first drop is an increase that
// rate() and increase() see. ARCHITECTURE.md's table of losses lists the
// same pairs (a test keeps them in step).
var dropSeries = []DropSeries{
	{"ring", "ring_full"},
	{"ring", "stopping"},
	{"spool", relay.DropSpoolFull},
	{"spool", relay.DropMemoryFull},
	{"spool", "write_failed"},
	{"spool", "sink_removed"},
	{"sink", relay.DropRejected},
	{"sink", relay.DropOversize},
	{"sink", httpsink.DropNotAccepted},
	{"sink", relay.DropChannelClosed},
	{"sink", dropShutdown},
	{"session", relay.DropChannelClosed},
	{"stamp", "invalid"},
	{"stormlog", "invalid_record"},
}

// dropShutdown is the drop reason of what a session channel still held at
// shutdown (stage "sink").
const dropShutdown = "shutdown"

// DropSeriesTable returns every stage and reason of
// edgerelay_events_dropped_total, for documentation and tests.
func DropSeriesTable() []DropSeries { return slices.Clone(dropSeries) }

// sources are the sources of edgerelay_events_received_total and
// edgerelay_events_rejected_total: the local API's endpoints (api,
// telemetry, allocator) and the agent's own sources.
var sources = []string{"api", "telemetry", "allocator", "agent", "gpu", "hostnet", "trickle", "stormlog"}

// sinkDropReasons are the edgerelay_sink_dropped_total reasons every sink
// shows from start; channel sinks (trickle, session) add channelDropReasons.
var (
	sinkDropReasons    = []string{relay.DropSpoolFull, relay.DropMemoryFull, relay.DropRejected, relay.DropOversize}
	channelDropReasons = []string{relay.DropChannelClosed, dropShutdown}
	// retryReasons are the edgerelay_sink_retries_total reasons: the
	// forwarder's waiting classes.
	retryReasons = []string{relay.ClassTransient.String(), relay.ClassThrottled.String(), relay.ClassPaused.String()}
)

// zeroFill gives every counter of a known label set its series at 0.
func (r *Report) zeroFill() {
	for _, d := range dropSeries {
		if r.Dropped[d.Stage] == nil {
			r.Dropped[d.Stage] = map[string]uint64{}
		}
		r.Dropped[d.Stage][d.Reason] += 0
	}
	for _, src := range sources {
		r.Received[src] += 0
		r.Rejected[src] += 0
	}
	for name, s := range r.Sinks {
		// Copies: a retired sink's maps are shared by every reader.
		s.Dropped = orEmpty(maps.Clone(s.Dropped))
		s.Retries = orEmpty(maps.Clone(s.Retries))
		reasons := sinkDropReasons
		if s.Kind == "trickle" || s.Kind == "session" {
			reasons = slices.Concat(reasons, channelDropReasons)
		}
		if s.Kind == "http" {
			reasons = slices.Concat(reasons, []string{httpsink.DropNotAccepted})
		}
		for _, reason := range reasons {
			s.Dropped[reason] += 0
		}
		for _, reason := range retryReasons {
			s.Retries[reason] += 0
		}
		r.Sinks[name] = s
	}
}

// Report returns the agent's counters: the pipeline's, the spool's and
// every sink's (retired ones included, and what earlier runs counted),
// without waiting on any I/O. While the agent starts, the ring and the
// spool are not in it yet.
func (a *Agent) Report() Report {
	started := a.state.Load() != stateStarting // a.pipe and a.spool are set
	received, rejected, dropped := a.counters.Snapshot()
	r := Report{
		Version:     a.build.Version,
		Revision:    a.build.Revision,
		State:       stateName(a.state.Load()),
		Received:    received,
		Rejected:    rejected,
		Refused:     a.counters.Refused(),
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
	r.zeroFill()
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
