package pipeline

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Ring is the bounded buffer between the sources and the spool writer. It is
// bounded by events and by bytes; when a push would exceed either, the oldest
// entries are dropped and counted (reason "ring_full"). Push never blocks on
// the consumer and does not allocate: slots are preallocated.
//
// Ring is safe for concurrent use by many producers and one consumer.
type Ring struct {
	mu       sync.Mutex // guards everything below
	slots    []ringItem // circular; len(slots) == max events
	head     int        // index of the oldest entry
	n        int        // entries held
	bytes    int64      // bytes held
	maxBytes int64
	closed   bool

	dropped atomic.Uint64 // entries dropped as ring_full, ever
	notify  chan struct{} // capacity 1: "entries may be available"
	room    chan struct{} // closed when the ring falls to half its caps (WaitRoom); nil when nobody waits
}

// ringItem is one envelope waiting for the spool writer. w, when set, is told
// whether the entry became durable (the ingest API waits on it).
type ringItem struct {
	data    []byte
	session string // data.session_id, for the session channels fed after commit
	w       *Waiter
	idx     int32 // the item's index in its request, for the waiter
}

// errRingClosed is returned by Push after Close.
var errRingClosed = errors.New("ring closed: the agent is stopping")

// NewRing returns a ring holding at most maxEvents entries and maxBytes bytes.
func NewRing(maxEvents int, maxBytes int64) *Ring {
	if maxEvents <= 0 {
		panic("BUG: ring: maxEvents must be positive")
	}
	return &Ring{slots: make([]ringItem, maxEvents), maxBytes: maxBytes, notify: make(chan struct{}, 1)}
}

// Push adds one entry, dropping the oldest entries if needed to make room.
// An entry larger than the whole byte cap is refused (counted as dropped).
// It returns errRingClosed after Close.
func (r *Ring) Push(data []byte, session string, w *Waiter, idx int) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errRingClosed
	}
	if r.maxBytes > 0 && int64(len(data)) > r.maxBytes {
		r.mu.Unlock()
		r.dropped.Add(1)
		if w != nil {
			w.drop(idx)
		}
		return nil
	}
	for r.n == len(r.slots) || (r.maxBytes > 0 && r.bytes+int64(len(data)) > r.maxBytes) {
		r.dropOldestLocked()
	}
	i := r.head + r.n
	if i >= len(r.slots) {
		i -= len(r.slots)
	}
	r.slots[i] = ringItem{data: data, session: session, w: w, idx: int32(idx)}
	r.n++
	r.bytes += int64(len(data))
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return nil
}

// takeOldestLocked removes and returns the oldest entry; r.n > 0.
func (r *Ring) takeOldestLocked() ringItem {
	it := r.slots[r.head]
	r.slots[r.head] = ringItem{}
	r.head++
	if r.head == len(r.slots) {
		r.head = 0
	}
	r.n--
	r.bytes -= int64(len(it.data))
	return it
}

func (r *Ring) dropOldestLocked() {
	it := r.takeOldestLocked()
	r.dropped.Add(1)
	if it.w != nil {
		it.w.drop(int(it.idx))
	}
}

// Pop moves up to max entries into dst (appending) and returns it. It does
// not block.
func (r *Ring) Pop(dst []ringItem, max int) []ringItem {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.n > 0 && max > 0 {
		dst = append(dst, r.takeOldestLocked())
		max--
	}
	if r.room != nil && !r.overHalfLocked() {
		close(r.room)
		r.room = nil
	}
	return dst
}

// Ready receives a value after a Push.
func (r *Ring) Ready() <-chan struct{} { return r.notify }

// Close refuses further pushes; entries already held can still be popped.
func (r *Ring) Close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Len returns the entries and bytes held.
func (r *Ring) Len() (events int, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, r.bytes
}

// WaitRoom waits until the ring holds at most half of each cap, or ctx
// ends; it reports whether there is room.
func (r *Ring) WaitRoom(ctx context.Context) bool {
	r.mu.Lock()
	for r.overHalfLocked() && !r.closed {
		if r.room == nil {
			r.room = make(chan struct{})
		}
		ch := r.room
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
		r.mu.Lock()
	}
	r.mu.Unlock()
	return true
}

func (r *Ring) overHalfLocked() bool {
	return r.n > len(r.slots)/2 || (r.maxBytes > 0 && r.bytes > r.maxBytes/2)
}

// Dropped returns how many entries were dropped as ring_full since start.
func (r *Ring) Dropped() uint64 { return r.dropped.Load() }

// Waiter lets a producer wait until its entries are in the spool. One waiter
// serves a whole ingest request, so waiting costs one allocation per request,
// not per event. Read its outcome with Result once Done is closed.
type Waiter struct {
	mu         sync.Mutex
	remaining  int
	dropped    []int // indexes dropped from the ring before the writer took them
	failed     error // a spool write that lost the entries (spool closed)
	notDurable bool  // entries are held in memory only
	done       chan struct{}
}

func newWaiter(n int) *Waiter {
	w := &Waiter{remaining: n, done: make(chan struct{})}
	if n == 0 {
		close(w.done)
	}
	return w
}

func (w *Waiter) settleLocked() {
	w.remaining--
	if w.remaining == 0 {
		close(w.done)
	}
}

func (w *Waiter) drop(idx int) {
	w.mu.Lock()
	w.dropped = append(w.dropped, idx)
	w.settleLocked()
	w.mu.Unlock()
}

// commit settles n entries with the outcome of their spool write.
func (w *Waiter) commit(n int, notDurable bool, err error) {
	w.mu.Lock()
	if err != nil && w.failed == nil {
		w.failed = err
	}
	if notDurable {
		w.notDurable = true
	}
	for range n {
		w.settleLocked()
	}
	w.mu.Unlock()
}

// Done is closed once every entry is settled: stored, or dropped from the
// ring before the writer took it.
func (w *Waiter) Done() <-chan struct{} { return w.done }

// Result is the outcome, valid once Done is closed: the request indexes
// dropped from the ring, whether the stored ones are held in memory only,
// and the error of a spool write that lost them.
func (w *Waiter) Result() (dropped []int, notDurable bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dropped, w.notDurable, w.failed
}

func (r *Ring) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func (r *Ring) closedAndEmpty() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed && r.n == 0
}
