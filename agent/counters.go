package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"time"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// Counters that survive a restart.
//
// The accounting counters (events received by source, rejected by source,
// dropped by stage and reason, and per sink received, delivered and
// dropped by reason) are written into the spool file with every commit
// (spool.Options.Counters, meta key "counters"): in the same transaction
// as the records, cursors and evictions they account for. So a drop made
// in a commit, and a ring drop before it, is on disk when that commit's
// producers are answered; a drop made outside a commit (a sink refusing an
// event) is written by the next commit, or by saveCountersLoop within
// counterSaveEvery. At start the counters resume from what the file holds
// (Prometheus counters restart at the persisted values, not at 0);
// counters of requests, retries and the like start again at 0.
//
// Per sink, the identity received = delivered + dropped + pending still
// holds: the backlog found in the file is this run's pending (and
// received), and what earlier runs settled is carried as a base. What a
// sink had acknowledged in the instant between the last write and a
// kill -9 (its cursor moved, its delivery not yet counted) is counted as
// delivered; what a session channel held in memory when the process died
// is counted as dropped, reason shutdown, as at a clean stop.

// counterSaveEvery is how often saveCountersLoop looks for counters that
// changed with no commit to write them.
const counterSaveEvery = 250 * time.Millisecond

// savedCounters is the JSON stored in the spool file.
type savedCounters struct {
	Version  int                          `json:"v"`
	Received map[string]uint64            `json:"received,omitempty"`
	Rejected map[string]uint64            `json:"rejected,omitempty"`
	Dropped  map[string]map[string]uint64 `json:"dropped,omitempty"` // the pipeline's own; sink drops are under sinks
	Sinks    map[string]savedSink         `json:"sinks,omitempty"`
}

type savedSink struct {
	Kind      string            `json:"kind"`
	Received  uint64            `json:"received"`
	Delivered uint64            `json:"delivered"`
	Dropped   map[string]uint64 `json:"dropped,omitempty"`
}

const savedCountersVersion = 1

// buildCounters encodes the counters as they are now.
func (a *Agent) buildCounters() []byte {
	rec, rej, drop := a.counters.Snapshot()
	if p := a.live.Load(); p != nil {
		if _, _, n := p.Ring(); n > 0 {
			if drop["ring"] == nil {
				drop["ring"] = map[string]uint64{}
			}
			drop["ring"]["ring_full"] += n
		}
	}
	sc := savedCounters{Version: savedCountersVersion, Received: rec, Rejected: rej, Dropped: drop, Sinks: map[string]savedSink{}}
	for name, r := range a.sinkReports() {
		if r.Kind == "session" {
			name = "sessions" // as the group keeps them once retired
		}
		s := sc.Sinks[name]
		s.Kind = r.Kind
		s.Received += r.Received
		s.Delivered += r.Delivered
		for reason, n := range r.Dropped {
			if n == 0 {
				continue
			}
			if s.Dropped == nil {
				s.Dropped = map[string]uint64{}
			}
			s.Dropped[reason] += n
		}
		sc.Sinks[name] = s
	}
	b, err := json.Marshal(sc)
	if err != nil {
		panic("BUG: agent: counters do not encode: " + err.Error())
	}
	return b
}

// countersForCommit is spool.Options.Counters: it runs in the last
// transaction of every commit. Until the counters of the file were
// restored it returns nil (nothing is written over them).
func (a *Agent) countersForCommit() []byte {
	sp := a.diskSpool.Load()
	if sp == nil {
		return nil
	}
	if b := sp.TakeSavedCounters(); b != nil {
		// The file turned up after start (the spool adopted it): its
		// counters add to this run's.
		a.restoreCounters(b, nil)
	}
	b := a.buildCounters()
	a.savedMu.Lock()
	a.lastSaved = b
	a.savedMu.Unlock()
	return b
}

// restoreCounters adds the counters b of earlier runs to this run's.
// fileSinks are the cursors found in the file at start (their backlog is
// counted again as this run's pending); nil for a file adopted later.
func (a *Agent) restoreCounters(b []byte, fileSinks map[string]spool.SinkStat) {
	var sc savedCounters
	if err := json.Unmarshal(b, &sc); err != nil || sc.Version != savedCountersVersion {
		a.log.Warn("counters of the previous run unreadable; counting from 0", "err", err, "version", sc.Version)
		return
	}
	for src, n := range sc.Received {
		a.counters.AddReceived(src, n)
	}
	for src, n := range sc.Rejected {
		a.counters.AddRejected(src, n)
	}
	for stage, reasons := range sc.Dropped {
		for reason, n := range reasons {
			a.counters.AddDropped(stage, reason, n)
		}
	}
	a.baseMu.Lock()
	defer a.baseMu.Unlock()
	if a.base == nil {
		a.base = map[string]relay.SinkReport{}
	}
	for name, s := range sc.Sinks {
		r := relay.SinkReport{Kind: s.Kind, Delivered: s.Delivered, Dropped: maps.Clone(s.Dropped)}
		if r.Dropped == nil {
			r.Dropped = map[string]uint64{}
		}
		settled := s.Delivered
		for _, n := range s.Dropped {
			settled += n
		}
		if extra := s.Received - min(s.Received, settled); extra > 0 && fileSinks != nil {
			if f, ok := fileSinks[name]; ok {
				// The backlog is this run's pending; the rest was
				// acknowledged before the counters were last written.
				r.Delivered += extra - min(extra, f.Pending)
			} else {
				r.Dropped[dropShutdown] += extra // held in memory, lost with the process
			}
		}
		for _, n := range r.Dropped {
			r.DroppedTotal += n
		}
		r.Received = r.Delivered + r.DroppedTotal
		a.base[name] = addBase(a.base[name], r)
	}
	a.log.Info("counters resumed from the previous run", "sinks", len(sc.Sinks))
}

// sinkReports is every sink's report, with what earlier runs counted.
func (a *Agent) sinkReports() map[string]relay.SinkReport {
	reps := a.sinks.Reports()
	a.baseMu.Lock()
	defer a.baseMu.Unlock()
	for name, b := range a.base {
		reps[name] = addBase(b, reps[name])
	}
	return reps
}

// addBase adds the settled counts of base to r.
func addBase(base, r relay.SinkReport) relay.SinkReport {
	if r.Kind == "" {
		r.Kind = base.Kind
	}
	dropped := maps.Clone(r.Dropped)
	if dropped == nil {
		dropped = map[string]uint64{}
	}
	for reason, n := range base.Dropped {
		dropped[reason] += n
	}
	r.Dropped = dropped
	r.Received += base.Received
	r.Delivered += base.Delivered
	r.DroppedTotal += base.DroppedTotal
	r.Balanced = r.Received == r.Delivered+r.DroppedTotal+r.Pending
	return r
}

// saveCountersLoop writes the counters when they changed and no commit
// wrote them (a sink dropped events while nothing else was written). It
// returns when ctx ends.
func (a *Agent) saveCountersLoop(ctx context.Context) {
	every(ctx, counterSaveEvery, a.saveCounters)
}

// saveCounters writes the counters now if they changed since last written.
func (a *Agent) saveCounters() {
	sp := a.diskSpool.Load()
	if sp == nil {
		return
	}
	cur := a.buildCounters()
	a.savedMu.Lock()
	same := bytes.Equal(cur, a.lastSaved)
	a.savedMu.Unlock()
	if !same {
		_ = sp.Sync() // a failure leaves the spool degraded; its retries write them
	}
}
