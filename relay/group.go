package relay

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/livepeer/edgerelay/spool"
)

// Member is one sink run by a Group: its forwarder (Sink, Queue and Stats
// set, Init called) and how to read and drop its cursor in the queue.
type Member struct {
	Name string
	Kind string // "stdout", "http", "trickle", "kafka", "session", ...
	Fwd  *Forwarder
	// Stat returns the sink's accounting in its queue.
	Stat func() (spool.SinkStat, error)
	// Remove drops the sink's cursor from its queue for good and returns
	// its final accounting.
	Remove func() (spool.SinkStat, error)
	// Closed, when set, runs after the forwarder returned ErrClosed and
	// says whether the sink retires (its pending records are counted as
	// dropped channel_closed).
	Closed func() (retire bool)
	// Done, when set, runs after the forwarder returned and the member
	// retired, if it did (closing the sink's own resources).
	Done func()
	// Aggregate, when set, is the name under which the sink's final report
	// is kept once it retires, summed with the others of that name (the
	// thousands of session channels of a long run keep one report and one
	// set of metric series, not one each).
	Aggregate string
}

// Group runs one forwarder per sink and keeps their accounting, retired
// sinks included, so totals never go down. It is safe for concurrent use.
// Its lock is held only to find members, never across I/O.
type Group struct {
	log *slog.Logger

	mu       sync.Mutex // guards members and finished
	members  map[string]*running
	finished map[string]SinkReport // final reports of retired sinks
	wg       sync.WaitGroup
}

type running struct {
	m      Member
	cancel context.CancelFunc
	done   chan struct{}
	// retiring, guarded by Group.mu, is set while Retire moves the member
	// from the queue to the finished reports, and closed when it is done:
	// in between the queue no longer knows the sink and its final report is
	// not published yet, so a reader that finds the sink gone waits for it
	// and reads again instead of seeing its counters at zero.
	retiring chan struct{}
}

// NewGroup returns an empty group.
func NewGroup(log *slog.Logger) *Group {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Group{log: log, members: map[string]*running{}, finished: map[string]SinkReport{}}
}

// Start runs m's forwarder until ctx ends, Stop(m.Name) is called, or the
// sink reports ErrClosed.
func (g *Group) Start(ctx context.Context, m Member) {
	ctx, cancel := context.WithCancel(ctx)
	r := &running{m: m, cancel: cancel, done: make(chan struct{})}
	g.mu.Lock()
	g.members[m.Name] = r
	g.mu.Unlock()
	g.wg.Go(func() {
		defer close(r.done)
		err := m.Fwd.Run(ctx)
		switch {
		case errors.Is(err, ErrClosed):
			if m.Closed == nil || m.Closed() {
				g.Retire(m.Name, DropChannelClosed)
			}
		case err != nil && !errors.Is(err, context.Canceled):
			g.log.Warn("sink stopped", "sink", m.Name, "err", err)
		}
		if m.Done != nil {
			m.Done()
		}
	})
}

// Stop ends one sink's forwarder and waits for it; its records stay in its
// queue. It reports whether the sink was running.
func (g *Group) Stop(name string) bool {
	g.mu.Lock()
	r := g.members[name]
	g.mu.Unlock()
	if r == nil {
		return false
	}
	r.cancel()
	<-r.done
	return true
}

// Wait waits for every forwarder to return (their context ended).
func (g *Group) Wait() { g.wg.Wait() }

// Retire removes a sink whose forwarder has returned: its cursor leaves the
// queue, what it had not delivered is counted as dropped for reason, and
// its final report is kept, so totals stay whole. Readers see the sink
// either running or retired, never in between (no counter goes down).
func (g *Group) Retire(name, reason string) {
	g.mu.Lock()
	r := g.members[name]
	if r == nil || r.retiring != nil {
		g.mu.Unlock()
		return
	}
	done := make(chan struct{})
	r.retiring = done
	g.mu.Unlock()
	defer close(done)
	final, err := r.m.Remove()
	if err != nil {
		g.mu.Lock()
		r.retiring = nil
		g.mu.Unlock()
		return
	}
	if final.Pending > 0 {
		r.m.Fwd.Stats.AddDropped(reason, final.Pending)
		g.log.Warn("sink retired with undelivered events", "sink", name, "events", final.Pending, "reason", reason)
	}
	final.Acked += final.Pending
	final.Pending = 0
	rep := Account(r.m.Kind, r.m.Fwd.Stats.Snapshot(), final)
	key := name
	g.mu.Lock()
	if r.m.Aggregate != "" {
		key = r.m.Aggregate
		rep = addReports(g.finished[key], rep)
	}
	delete(g.members, name)
	g.finished[key] = rep
	g.mu.Unlock()
}

// Names returns the running sinks.
func (g *Group) Names() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(g.members))
	for n := range g.members {
		out = append(out, n)
	}
	return out
}

func (g *Group) list() []*running {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.listLocked()
}

func (g *Group) listLocked() []*running {
	out := make([]*running, 0, len(g.members))
	for _, r := range g.members {
		out = append(out, r)
	}
	return out
}

// Reports returns every sink's accounting, retired ones included. Each sink
// is counted once: running, or in its finished report.
func (g *Group) Reports() map[string]SinkReport {
	for {
		out, wait := g.reports()
		if wait == nil {
			return out
		}
		<-wait
	}
}

// reports is Reports, or the channel to wait on before reading again.
func (g *Group) reports() (map[string]SinkReport, <-chan struct{}) {
	g.mu.Lock()
	list := g.listLocked()
	finished := maps.Clone(g.finished)
	g.mu.Unlock()
	out := make(map[string]SinkReport, len(list)+len(finished))
	for _, r := range list {
		rep, wait := g.report(r)
		if wait != nil {
			return nil, wait
		}
		out[r.m.Name] = rep
	}
	for name, fin := range finished {
		if live, ok := out[name]; ok {
			// A sink started again under a retired one's name.
			sum := addReports(fin, live)
			sum.Paused = live.Paused
			out[name] = sum
			continue
		}
		out[name] = fin
	}
	return out, nil
}

// Report returns one running sink's accounting.
func (g *Group) Report(name string) (SinkReport, bool) {
	for {
		g.mu.Lock()
		r := g.members[name]
		g.mu.Unlock()
		if r == nil {
			return SinkReport{}, false
		}
		rep, wait := g.report(r)
		if wait == nil {
			return rep, true
		}
		<-wait
	}
}

// report is r's accounting. When the queue no longer knows the sink
// because Retire is removing it, it returns the channel to wait on before
// reading again.
func (g *Group) report(r *running) (SinkReport, <-chan struct{}) {
	snap := r.m.Fwd.Stats.Snapshot() // before the queue's stat: see Account
	ss, err := r.m.Stat()
	if err != nil {
		g.mu.Lock()
		wait := r.retiring
		g.mu.Unlock()
		if wait != nil {
			return SinkReport{}, wait
		}
	}
	return Account(r.m.Kind, snap, ss), nil
}

// Pending is what the running sinks have still to deliver.
func (g *Group) Pending() uint64 {
	var n uint64
	for _, r := range g.list() {
		rep, _ := g.report(r) // a sink being retired has nothing pending
		n += rep.Pending
	}
	return n
}

// Drain makes every forwarder send partial batches at once (shutdown).
func (g *Group) Drain() {
	for _, r := range g.list() {
		r.m.Fwd.Drain()
	}
}

// DrainOne drains one sink and waits until it has nothing pending, its
// forwarder returns, or ctx ends; it reports whether nothing is pending.
func (g *Group) DrainOne(ctx context.Context, name string) bool {
	g.mu.Lock()
	r := g.members[name]
	g.mu.Unlock()
	if r == nil {
		return true
	}
	r.m.Fwd.Drain()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if rep, wait := g.report(r); wait != nil || rep.Pending == 0 {
			return true
		}
		select {
		case <-r.done:
			return false
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// Stalled names a sink stuck in one Send for longer than limit, or "".
func (g *Group) Stalled(now time.Time, limit time.Duration) string {
	for _, r := range g.list() {
		if r.m.Fwd.Stalled(now, limit) {
			return r.m.Name
		}
	}
	return ""
}

// addReports sums two final reports (neither pending).
func addReports(a, b SinkReport) SinkReport {
	sum := func(x, y map[string]uint64) map[string]uint64 {
		out := maps.Clone(x)
		if out == nil {
			out = map[string]uint64{}
		}
		for k, v := range y {
			out[k] += v
		}
		return out
	}
	r := SinkReport{
		Kind:         b.Kind,
		Received:     a.Received + b.Received,
		Delivered:    a.Delivered + b.Delivered,
		Dropped:      sum(a.Dropped, b.Dropped),
		DroppedTotal: a.DroppedTotal + b.DroppedTotal,
		Pending:      a.Pending + b.Pending,
		Requests:     sum(a.Requests, b.Requests),
		Retries:      sum(a.Retries, b.Retries),
		LastSuccess:  a.LastSuccess,
	}
	if b.LastSuccess != nil && (r.LastSuccess == nil || b.LastSuccess.After(*r.LastSuccess)) {
		r.LastSuccess = b.LastSuccess
	}
	r.Balanced = r.Received == r.Delivered+r.DroppedTotal+r.Pending
	return r
}
