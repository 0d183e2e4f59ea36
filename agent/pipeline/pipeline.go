package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/livepeer/edgerelay/spool"
)

// Entry is one envelope handed to the pipeline.
type Entry struct {
	Env     []byte
	Type    string
	Session string // data.session_id: its session's channel gets it after commit
}

// Store is what the spool writer needs of a spool (spool.Spool on disk or
// spool.Memory): appending groups.
type Store interface {
	Append(data [][]byte) error
}

// Options configures a Pipeline.
type Options struct {
	RingMaxEvents int
	RingMaxBytes  int64
	GroupEvents   int           // at most this many entries per spool transaction
	GroupDelay    time.Duration // how long the writer waits to fill a group
	Store         Store
	// Accepted sees every accepted envelope at once (the /v1/tail fan-out);
	// it must not block. May be nil.
	Accepted func(typ string, env []byte)
	// Committed sees every group once it is in the spool, in order, from
	// the writer goroutine (the session channels); it must not block for
	// long. May be nil.
	Committed func(group []Entry)
	Counters  *Counters
	Logger    *slog.Logger
}

// Pipeline is the way from the sources to the spool: a drop-oldest Ring and
// the one spool writer behind it, which commits groups and then releases the
// producers waiting for durability. Submit and Emit are safe for
// concurrent use; Start and Stop are called once each, in that order.
type Pipeline struct {
	o         Options
	ring      *Ring
	open      atomic.Bool   // Submit accepts entries
	done      chan struct{} // closed when the writer returns
	busySince atomic.Int64  // unix nanos when the writer's current Append began; 0 when idle
}

// ErrNotAccepting is returned by Submit before Start and after Stop.
var ErrNotAccepting = errors.New("the agent is not accepting events (starting or stopping)")

// New returns a pipeline; nothing runs until Start.
func New(o Options) *Pipeline {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Counters == nil {
		o.Counters = &Counters{}
	}
	if o.GroupEvents <= 0 {
		o.GroupEvents = 1
	}
	return &Pipeline{o: o, ring: NewRing(o.RingMaxEvents, o.RingMaxBytes), done: make(chan struct{})}
}

// Start runs the spool writer and opens Submit.
func (p *Pipeline) Start() {
	go p.write()
	p.open.Store(true)
}

// Close refuses further entries; entries already in the ring are still
// written. Call it once intake has stopped (nothing submits any more).
func (p *Pipeline) Close() {
	p.open.Store(false)
	p.ring.Close()
}

// Wait waits until the writer has written everything and returned (after
// Close).
func (p *Pipeline) Wait() { <-p.done }

// Done is closed when the writer has returned (after Close).
func (p *Pipeline) Done() <-chan struct{} { return p.done }

// Counters returns the pipeline's counts.
func (p *Pipeline) Counters() *Counters { return p.o.Counters }

// Ring returns the entries and bytes held, and how many were dropped as
// ring_full since start.
func (p *Pipeline) Ring() (events int, bytes int64, dropped uint64) {
	events, bytes = p.ring.Len()
	return events, bytes, p.ring.Dropped()
}

// WaitRoom waits until the ring holds at most half its caps, or ctx ends,
// and reports whether it does. Past half, the spool writer is behind: the
// local API holds new requests here, and refuses them (503 with
// Retry-After) when the wait runs out, instead of letting them push
// accepted events out of the ring.
func (p *Pipeline) WaitRoom(ctx context.Context) bool { return p.ring.WaitRoom(ctx) }

// Submit hands entries to the ring with one waiter for all of them. It
// fails only when the pipeline is not accepting entries.
func (p *Pipeline) Submit(source string, entries []Entry) (*Waiter, error) {
	if !p.open.Load() {
		return nil, ErrNotAccepting
	}
	w := newWaiter(len(entries))
	p.o.Counters.AddReceived(source, uint64(len(entries)))
	for i, e := range entries {
		if p.o.Accepted != nil {
			p.o.Accepted(e.Type, e.Env)
		}
		if err := p.ring.Push(e.Env, e.Session, w, i); err != nil {
			// The ring closed while pushing: settle the rest as dropped
			// so the request is answered.
			for k := i; k < len(entries); k++ {
				w.drop(k)
			}
			break
		}
	}
	return w, nil
}

// Emit queues one envelope of the agent's own sources without waiting for
// the spool: sources never block.
func (p *Pipeline) Emit(source string, e Entry) {
	p.o.Counters.AddReceived(source, 1)
	if p.o.Accepted != nil {
		p.o.Accepted(e.Type, e.Env)
	}
	if err := p.ring.Push(e.Env, e.Session, nil, 0); err != nil {
		p.o.Counters.AddDropped("ring", "stopping", 1)
	}
}

// Stalled reports whether the writer has been inside one Append for longer
// than limit (a wedged disk); the watchdog stops pinging systemd then.
func (p *Pipeline) Stalled(now time.Time, limit time.Duration) bool {
	since := p.busySince.Load()
	return since != 0 && now.Sub(time.Unix(0, since)) > limit
}

// write is the spool writer: the only goroutine that appends to the store.
// It takes a group of up to GroupEvents entries from the ring (waiting up to
// GroupDelay to fill it), commits them in one transaction, hands the group to
// Committed, then releases the producers waiting for durability. It returns
// once the ring is closed and empty.
func (p *Pipeline) write() {
	defer close(p.done)
	max := p.o.GroupEvents
	group := make([]ringItem, 0, max)
	data := make([][]byte, 0, max)
	var entries []Entry
	if p.o.Committed != nil {
		entries = make([]Entry, 0, max)
	}
	var fill *time.Timer
	for {
		group = p.ring.Pop(group[:0], max)
		if len(group) == 0 {
			if p.ring.closedAndEmpty() {
				return
			}
			<-p.ring.Ready()
			continue
		}
		if len(group) < max && p.o.GroupDelay > 0 && !p.ring.isClosed() {
			if fill == nil {
				fill = time.NewTimer(p.o.GroupDelay)
			} else {
				fill.Reset(p.o.GroupDelay)
			}
		wait:
			for len(group) < max {
				select {
				case <-fill.C:
					break wait
				case <-p.ring.Ready():
					group = p.ring.Pop(group, max-len(group))
					if p.ring.isClosed() {
						break wait
					}
				}
			}
			fill.Stop()
		}
		data = data[:0]
		for _, it := range group {
			data = append(data, it.data)
		}
		p.busySince.Store(time.Now().UnixNano())
		err := p.o.Store.Append(data)
		p.busySince.Store(0)
		notDurable := errors.Is(err, spool.ErrNotDurable)
		if notDurable {
			err = nil
		}
		if err != nil {
			p.o.Counters.AddDropped("spool", "write_failed", uint64(len(group)))
			p.o.Logger.Error("spool append failed; events lost", "events", len(group), "err", err)
		}
		if err == nil && p.o.Committed != nil {
			// Before the producers hear "stored": a runner's next frame on
			// its session channel then lands after this telemetry.
			entries = entries[:0]
			for _, it := range group {
				entries = append(entries, Entry{Env: it.data, Session: it.session})
			}
			p.o.Committed(entries)
			clear(entries)
		}
		settleWaiters(group, notDurable, err)
		clear(group) // let the envelopes go
	}
}

// settleWaiters tells each waiter how many of its entries the commit
// covered. Entries of one request are adjacent in the group, so this is one
// call per request, not per event.
func settleWaiters(group []ringItem, notDurable bool, err error) {
	for i := 0; i < len(group); {
		w := group[i].w
		j := i + 1
		for j < len(group) && group[j].w == w {
			j++
		}
		if w != nil {
			w.commit(j-i, notDurable, err)
		}
		i = j
	}
}

// SubmitWait queues one entry and waits until it is in the spool. It fails
// if the entry was dropped before it was stored, so the caller can offer it
// again (a source that keeps its own position, like the stormlog tail).
func (p *Pipeline) SubmitWait(ctx context.Context, source string, e Entry) error {
	w, err := p.Submit(source, []Entry{e})
	if err != nil {
		return err
	}
	select {
	case <-w.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	dropped, _, err := w.Result()
	if err != nil {
		return err
	}
	if len(dropped) > 0 {
		return errors.New("dropped before it was stored: ring full")
	}
	return nil
}
