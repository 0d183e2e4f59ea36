// Package promptio gets the answer to a delivery request read promptly
// while the process's CPUs are busy with other work.
//
// Go's scheduler learns that a parked network reader can go on only when
// it polls the network: when a processor (P) runs out of goroutines to run,
// or from its monitor thread once the last poll is more than 10 ms old
// (golang/go#51651). Under ingest overload every P always has another
// goroutine queued, so an answer that came back from the metrics API waits
// 0–25 ms before its lane reads it, and a lane that waits longer sends
// less: on two cores shared with ingest at twice the drain rate, delivery
// fell to 0.75 of its unloaded rate (docs/BENCHMARKS.md, overload_remote),
// the whole loss being the 5 ms on average between an answer's arrival and
// its read.
//
// The remedy is cooperative. Connections made through Dial are watched
// while a request is out on them and no byte of its answer has been read.
// CPU-bound loops call Yield now and then; at most once per Interval in the
// whole process, Yield asks the kernel, with a non-blocking poll(2) per
// watched connection, whether an answer is waiting, and for each that is it
// wakes the parked reader by moving its read deadline into the past. The
// runtime puts a goroutine woken that way next in line on the processor
// that woke it; Yield then yields that processor, so the lane reads its
// answer and sends its next request before the loop goes on. The reader's
// Read, wrapped here, takes such a wake-up for what it is and reads again;
// its caller never sees it, and the read deadline the caller set is kept.
//
// Nothing changes for a process that is not busy: there the runtime polls
// the network itself as soon as a processor is idle, and Yield finds no
// answer waiting (or nothing watched) and returns at once.
package promptio

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Interval is the least time between two polls in the process: a woken
// lane waits at most about this long once a loop calling Yield is running.
// 200 µs keeps the cost (one poll(2) per watched connection) under 0.5% of
// a core; in overload_remote, 100 µs gave no better delivery.
const Interval = 200 * time.Microsecond

// DialFunc is the dialer of net/http's Transport.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dial wraps dial so that the connections it makes are watched while an
// answer is awaited on them. A connection that cannot be polled (not a
// socket) is returned as dial made it.
func Dial(dial DialFunc) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil || !supported {
			return c, err
		}
		sc, ok := c.(syscall.Conn)
		if !ok {
			return c, nil
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return c, nil
		}
		w := &conn{Conn: c, raw: raw}
		watched.add(w)
		return w, nil
	}
}

// Yield polls the watched connections that await an answer, at most once
// per Interval in the process, wakes the readers whose answer has arrived,
// and yields the processor to them. It reports whether it woke one. It is
// cheap when there is nothing to do (an atomic load, and a clock read when
// an answer is awaited) and safe from any goroutine.
func Yield() bool {
	if awaiting.Load() == 0 {
		return false
	}
	now := int64(time.Since(epoch))
	last := lastPoll.Load()
	if now-last < int64(Interval) || !lastPoll.CompareAndSwap(last, now) {
		return false
	}
	if watched.wake() == 0 {
		return false
	}
	runtime.Gosched() // the woken readers are next on this processor
	return true
}

var (
	epoch    = time.Now()
	lastPoll atomic.Int64 // nanoseconds since epoch
	awaiting atomic.Int64 // watched connections awaiting an answer
	watched  = &registry{conns: map[*conn]struct{}{}}
)

// registry holds the open watched connections.
type registry struct {
	mu      sync.Mutex
	conns   map[*conn]struct{}
	polling sync.Mutex // one poller at a time; the others skip
	batch   []*conn
}

func (r *registry) add(c *conn) {
	r.mu.Lock()
	r.conns[c] = struct{}{}
	r.mu.Unlock()
}

func (r *registry) remove(c *conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

// wake polls the connections that await an answer and wakes the readers of
// those that have one; it returns how many it woke.
func (r *registry) wake() int {
	if !r.polling.TryLock() {
		return 0
	}
	defer r.polling.Unlock()
	r.batch = r.batch[:0]
	r.mu.Lock()
	for c := range r.conns {
		if c.isAwaiting() {
			r.batch = append(r.batch, c)
		}
	}
	r.mu.Unlock()
	n := 0
	for i, c := range r.batch {
		if c.answered() && c.kick() {
			n++
		}
		r.batch[i] = nil
	}
	return n
}

// conn is a watched connection.
type conn struct {
	net.Conn
	raw syscall.RawConn

	mu       sync.Mutex
	deadline time.Time // the read deadline the caller set
	waiting  bool      // a request went out; no byte of its answer has been read
	kicked   bool      // the read deadline is in the past to wake the reader
	closed   bool
}

// Write marks the connection as awaiting an answer once bytes went out.
func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.mu.Lock()
		if !c.waiting && !c.closed {
			c.waiting = true
			awaiting.Add(1)
		}
		c.mu.Unlock()
	}
	return n, err
}

// Read reads as net.Conn does; a wake-up from Yield is not returned but
// followed by another read.
func (c *conn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		c.mu.Lock()
		if c.kicked {
			c.kicked = false
			c.Conn.SetReadDeadline(c.deadline) // the caller's again
			if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && (c.deadline.IsZero() || time.Now().Before(c.deadline)) {
				c.mu.Unlock()
				continue // woken by Yield: the answer is there to read
			}
		}
		if n > 0 && c.waiting {
			c.waiting = false
			awaiting.Add(-1)
		}
		c.mu.Unlock()
		return n, err
	}
}

// SetReadDeadline sets the caller's read deadline; a wake-up in progress
// puts it back when the reader has woken.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if c.kicked {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines, the read one as SetReadDeadline does.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// Close stops watching the connection and closes it.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.waiting {
		c.waiting = false
		awaiting.Add(-1)
	}
	c.closed = true
	c.mu.Unlock()
	watched.remove(c)
	return c.Conn.Close()
}

func (c *conn) isAwaiting() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiting && !c.kicked
}

// answered reports whether the kernel holds bytes (or an end) to read.
func (c *conn) answered() bool {
	var ready bool
	err := c.raw.Control(func(fd uintptr) { ready = readable(fd) })
	return err == nil && ready
}

// kick wakes the parked reader: a read deadline in the past makes the
// runtime ready it on this processor. It reports whether it did.
func (c *conn) kick() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.waiting || c.kicked || c.closed {
		return false
	}
	if c.Conn.SetReadDeadline(past) != nil {
		return false
	}
	c.kicked = true
	return true
}

var past = time.Unix(1, 0)
