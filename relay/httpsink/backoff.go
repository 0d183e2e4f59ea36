package httpsink

import (
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/livepeer/edgerelay/relay"
)

// Waits between attempts (spec/metrics-api.md, "Status classification").
const (
	// MaxBackOff caps every wait of the backoff, jitter included: the
	// forwarder's (relay.MaxBackOff).
	MaxBackOff = relay.MaxBackOff
	// backOffFactor is the jitter: a wait is drawn from ±50% around the
	// interval.
	backOffFactor = 0.5
)

// Tune sets the forwarder fields this sink needs: Batch and MaxBytes from
// Limits, Resume, and NewBackOff, which wraps the schedule f has (nil means
// the sink's own) so that the waits are the spec's:
//
//   - after a throttled answer with a usable Retry-After, the wait is that
//     value exactly, however many throttled answers came before; the
//     backoff's own interval neither replaces nor lengthens it, and does not
//     grow meanwhile;
//   - otherwise the backoff's, never more than MaxBackOff, jitter included.
//
// Call it before f.Init.
func (s *Sink) Tune(f *relay.Forwarder) {
	f.Batch, f.MaxBytes = s.Limits()
	f.Resume = s.Resume()
	inner := f.NewBackOff
	if inner == nil {
		inner = newBackOff
	}
	f.NewBackOff = func() backoff.BackOff { return &schedule{inner: inner(), retryAfter: &s.sh.retryAfter} }
}

// newBackOff is the sink's own schedule: exponential from 1 s, doubling, with
// ±50% jitter, retrying forever. cenkalti/backoff draws a wait from
// [interval×(1−factor), interval×(1+factor)] after capping the interval at
// MaxInterval, so the interval stops at MaxBackOff/(1+factor), 40 s: waits
// at the top are 20 s to 60 s, never more.
func newBackOff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = time.Second
	b.Multiplier = 2
	b.RandomizationFactor = backOffFactor
	b.MaxInterval = time.Duration(float64(MaxBackOff) / (1 + backOffFactor))
	b.MaxElapsedTime = 0 // the spool's cap, not a timer, decides what is given up
	b.Reset()
	return b
}

// schedule is the forwarder's backoff for this sink. The forwarder itself
// waits a throttled answer's Retry-After exactly; the schedule says the same
// to any caller of NextBackOff after such an answer (when the last Send
// ended with a Retry-After, NextBackOff returns that value without touching
// the inner schedule), so the wait is the server's word either way.
//
// It is used by the forwarder's goroutine; retryAfter is shared with Send.
type schedule struct {
	inner      backoff.BackOff
	retryAfter *atomic.Int64 // Sink.retryAfter
}

func (b *schedule) NextBackOff() time.Duration {
	if ra := time.Duration(b.retryAfter.Swap(0)); ra > 0 {
		return ra
	}
	d := b.inner.NextBackOff()
	if d == backoff.Stop {
		return d
	}
	return min(d, MaxBackOff)
}

func (b *schedule) Reset() { b.inner.Reset() }
