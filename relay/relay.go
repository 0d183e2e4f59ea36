package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/livepeer/edgerelay/spool"
)

// Sink delivers batches of stored envelopes to one destination.
//
// Send is called by a single forwarder goroutine; a sink need not be safe for
// concurrent Sends. It must return when ctx is done. It must not retain recs
// or their Data after returning.
type Sink interface {
	Send(ctx context.Context, recs []spool.Record) Result
}

// LaneSink is a Sink that can have several batches in flight
// (Forwarder.Inflight). Lane returns one more Sink for one more sending
// goroutine: it shares the destination, the request budget and the counters
// with the sink it came from, and its Send is called by one goroutine at a
// time, as Sink's is. The forwarder calls Lane Inflight-1 times in Run.
type LaneSink interface {
	Sink
	Lane() Sink
}

// Result says what a Send settled.
//
// Settled is the number of leading records of the batch that are finished
// with: delivered, or dropped as listed in Dropped. The forwarder acknowledges
// exactly those. When Err is nil every record is settled. When Err is not nil
// it explains why records from index Settled on were not, and Classify decides
// how long to wait before they are offered again.
type Result struct {
	Settled int
	Dropped []Drop
	Err     error
}

// Done is the result of a batch that was delivered whole.
func Done(n int) Result { return Result{Settled: n} }

// Drop is a record that a sink gave up on, and why. Reasons are the
// edgerelay_events_dropped_total reason label: DropRejected, DropOversize,
// DropChannelClosed.
type Drop struct {
	Seq    uint64
	ID     string // envelope id, for the log line
	Reason string
}

// Drop reasons reported by sinks (stage "sink").
const (
	DropRejected      = "rejected"       // the peer refused the event itself (poison)
	DropOversize      = "oversize"       // a single event larger than the peer accepts
	DropChannelClosed = "channel_closed" // the session's channel ended before it was sent
)

// Class is how the forwarder reacts to an error.
type Class int

const (
	ClassSuccess   Class = iota // nil error: acknowledge and go on
	ClassTransient              // retry after exponential backoff with jitter
	ClassThrottled              // retry after RetryAfter exactly when given, else the backoff
	ClassPaused                 // stop sending; probe every ProbeInterval or when resumed
	ClassClosed                 // the destination is gone for good; stop the forwarder
)

func (c Class) String() string {
	switch c {
	case ClassSuccess:
		return "success"
	case ClassTransient:
		return "transient"
	case ClassThrottled:
		return "throttled"
	case ClassPaused:
		return "paused"
	case ClassClosed:
		return "closed"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// MaxRetryAfter caps a peer's Retry-After: a hostile or broken peer must not
// park a sink for hours (spec/metrics-api.md).
const MaxRetryAfter = 15 * time.Minute

// ThrottledError means the peer asked us to slow down. RetryAfter is the
// peer's requested delay (0 when it gave none).
type ThrottledError struct {
	RetryAfter time.Duration
	Err        error
}

func (e *ThrottledError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("throttled (retry after %s): %v", e.RetryAfter, e.Err)
	}
	return fmt.Sprintf("throttled: %v", e.Err)
}
func (e *ThrottledError) Unwrap() error { return e.Err }

// PausedError means sending cannot succeed until something outside changes:
// credentials (401/403, Kafka SASL), or configuration (404/405). Reason is
// the edgerelay_sink_paused reason label ("unauthorized", "misconfigured").
type PausedError struct {
	Reason string
	Err    error
	// Probe, when positive, is when to try again instead of the
	// forwarder's ProbeInterval: a sink that knows its destination comes
	// back soon (a restarted orchestrator) probes on its own backoff.
	Probe time.Duration
}

func (e *PausedError) Error() string { return fmt.Sprintf("paused (%s): %v", e.Reason, e.Err) }
func (e *PausedError) Unwrap() error { return e.Err }

// ErrClosed means the destination ended for good (a trickle channel answered
// 404 or Lp-Trickle-Closed). The forwarder returns it from Run.
var ErrClosed = errors.New("relay: destination closed")

// Classify maps a Send error to the forwarder's reaction and, for throttling,
// the delay the peer asked for (capped at MaxRetryAfter).
func Classify(err error) (Class, time.Duration) {
	if err == nil {
		return ClassSuccess, 0
	}
	if errors.Is(err, ErrClosed) {
		return ClassClosed, 0
	}
	var pe *PausedError
	if errors.As(err, &pe) {
		return ClassPaused, 0
	}
	var te *ThrottledError
	if errors.As(err, &te) {
		d := te.RetryAfter
		if d < 0 {
			d = 0
		}
		return ClassThrottled, min(d, MaxRetryAfter)
	}
	return ClassTransient, 0
}
