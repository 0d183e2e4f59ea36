package relay

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/livepeer/edgerelay/internal/logthrottle"
	"github.com/livepeer/edgerelay/spool"
)

// Forwarder defaults.
const (
	DefaultBatch         = 500
	DefaultProbeInterval = 5 * time.Minute
)

// Queue is what a forwarder reads its sink's records from: spool.Spool on
// disk or spool.Memory. Name is the sink's cursor in it.
type Queue interface {
	// Read returns up to max records (and about maxBytes of data) after the
	// sink's acknowledged position, without blocking and without moving it.
	Read(sink string, max, maxBytes int) ([]spool.Record, error)
	// AckFrom marks every record up to and including seq as done and
	// returns the position it moved from: records at or before it were
	// evicted over the cap while in flight.
	AckFrom(sink string, seq uint64) (prev uint64, err error)
	// Ready receives a value when records may have been appended.
	Ready(sink string) <-chan struct{}
}

// Forwarder moves one sink's records from its queue to the sink: the one
// delivery loop of every sink. Set the fields, call Init, then Run once;
// Drain, Wake, Alive and Stalled may be called from any goroutine.
//
// The forwarder never gives up on a record because of time: a record leaves
// the cursor only when the sink settles it, or when the spool evicts it over
// its cap (spec/reliability.md, "no time-based give-up").
type Forwarder struct {
	Name     string        // the sink's name: its cursor in Queue, and in logs
	Sink     Sink          // required
	Queue    Queue         // required
	Stats    *Stats        // required
	Batch    int           // records per Send; 0 means DefaultBatch
	MaxBytes int           // record bytes per Send; 0 means unbounded
	Linger   time.Duration // how long a partial batch may wait to fill; 0 sends at once
	// ProbeInterval is how often a paused sink tries one small batch; 0 means
	// DefaultProbeInterval.
	ProbeInterval time.Duration
	// NewBackOff builds the retry schedule; nil means exponential from 1 s to
	// 60 s with ±50% jitter and no elapsed-time limit.
	NewBackOff func() backoff.BackOff
	// Resume, when it receives, ends a pause at once (credentials changed).
	Resume <-chan struct{}
	// Idle, when set, is called after IdleAfter with nothing sent and nothing
	// pending (a trickle channel's keep-alive). An error is counted by the
	// sink and retried at the next interval; ErrClosed ends Run like a Send
	// would.
	Idle      func(ctx context.Context) error
	IdleAfter time.Duration
	Logger    *slog.Logger

	ready     <-chan struct{} // Queue.Ready(Name), set by Init
	draining  atomic.Bool
	wake      chan struct{}
	busySince atomic.Int64 // unix nanos when the current Send began; 0 when not sending
}

// Alive tells the watchdog that a long Send is making progress: a sink that
// makes many requests per Send calls it per request (sinks take it as an
// option). It does nothing when no Send is running.
func (f *Forwarder) Alive() {
	for {
		v := f.busySince.Load()
		if v == 0 || f.busySince.CompareAndSwap(v, time.Now().UnixNano()) {
			return
		}
	}
}

// Stalled reports whether a Send has been running for longer than limit: a
// wedged sink. The agent's watchdog stops pinging systemd when it is.
func (f *Forwarder) Stalled(now time.Time, limit time.Duration) bool {
	since := f.busySince.Load()
	return since != 0 && now.Sub(time.Unix(0, since)) > limit
}

// DefaultBackOff is the transient-error schedule: exponential with jitter,
// 1 s to 60 s, retrying forever.
func DefaultBackOff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = time.Second
	b.MaxInterval = time.Minute
	b.RandomizationFactor = 0.5
	b.Multiplier = 2
	b.MaxElapsedTime = 0 // never stop: the spool, not a timer, bounds what we keep
	b.Reset()
	return b
}

// Drain makes the forwarder send partial batches at once (no linger), for
// shutdown.
func (f *Forwarder) Drain() {
	f.draining.Store(true)
	f.Wake()
}

// Wake interrupts a linger or idle wait so the forwarder looks at its cursor
// again.
// It must not be called before Init.
func (f *Forwarder) Wake() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Init applies defaults. Call it once, before Run and before Wake or Drain
// can be called from another goroutine.
func (f *Forwarder) Init() {
	if f.wake == nil {
		f.wake = make(chan struct{}, 1)
	}
	if f.Batch <= 0 {
		f.Batch = DefaultBatch
	}
	if f.ProbeInterval <= 0 {
		f.ProbeInterval = DefaultProbeInterval
	}
	if f.NewBackOff == nil {
		f.NewBackOff = DefaultBackOff
	}
	if f.Logger == nil {
		f.Logger = slog.New(slog.DiscardHandler)
	}
	if f.Idle != nil && f.IdleAfter <= 0 {
		panic("BUG: relay: Forwarder.Idle without IdleAfter")
	}
	f.ready = f.Queue.Ready(f.Name)
	f.Logger = f.Logger.With("sink", f.Name)
}

// Run forwards until ctx is done (returning ctx.Err()) or the sink reports
// ErrClosed (returning ErrClosed). Records not settled when it returns stay
// in the spool.
func (f *Forwarder) Run(ctx context.Context) error {
	if f.wake == nil {
		panic("BUG: relay: Forwarder.Run before Init")
	}
	bo := f.NewBackOff()
	var (
		partialSince time.Time // when a partial batch was first seen waiting
		paused       string    // pause reason while paused
		resumed      bool      // the pause was ended by Resume: try a full batch
		retrying     bool      // the last Send failed: its records go after the wait, without lingering again
		transientLog = logthrottle.New(time.Minute, 1)
		lastActive   = time.Now() // last Send or Idle, for IdleAfter
	)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		limit := f.Batch
		if paused != "" && !resumed {
			limit = 1 // a periodic probe is one small batch
		}
		recs, err := f.Queue.Read(f.Name, limit, f.MaxBytes)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			d := nextBackOff(bo)
			if transientLog.Allow() {
				f.Logger.Error("spool read failed; retrying", "err", err, "retry_in", d)
			}
			if !sleep(ctx, d, nil) {
				return ctx.Err()
			}
			continue
		}
		if len(recs) == 0 {
			partialSince = time.Time{}
			var idle *time.Timer
			var idleC <-chan time.Time
			if f.Idle != nil {
				idle = time.NewTimer(max(f.IdleAfter-time.Since(lastActive), 0))
				idleC = idle.C
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-f.ready:
			case <-f.wake:
			case <-idleC:
				lastActive = time.Now()
				if err := f.Idle(ctx); errors.Is(err, ErrClosed) {
					f.Logger.Info("destination closed; forwarder stops", "err", err)
					return ErrClosed
				}
			}
			if idle != nil {
				idle.Stop()
			}
			continue
		}
		if paused == "" && !retrying && f.Linger > 0 && !f.draining.Load() && len(recs) < limit && !f.full(recs) && !f.cutByBytes(recs, limit) {
			if partialSince.IsZero() {
				partialSince = time.Now()
			}
			if wait := f.Linger - time.Since(partialSince); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-f.ready:
				case <-f.wake:
				case <-t.C:
				}
				t.Stop()
				continue
			}
		}

		f.busySince.Store(time.Now().UnixNano())
		res := f.Sink.Send(ctx, recs)
		f.busySince.Store(0)
		lastActive = time.Now()
		if res.Settled > len(recs) {
			panic("BUG: relay: sink settled more records than it was given")
		}
		if res.Err == nil && res.Settled != len(recs) {
			panic("BUG: relay: sink returned no error but did not settle the batch")
		}
		class, retryAfter := Classify(res.Err)
		if class == ClassSuccess && paused != "" {
			// Cleared before the batch is acknowledged, so no reader sees
			// everything delivered by a sink that still says it is paused.
			f.Logger.Info("sink resumed", "paused_reason", paused)
			f.Stats.SetPaused("")
			paused = ""
		}
		if res.Settled > 0 {
			// The ack (which may write the cursor to disk) runs without any
			// lock that a status reader takes; the outcome is counted after
			// it, and a reader in between sees the batch still pending.
			first, last := recs[0].Seq, recs[res.Settled-1].Seq
			if prev, err := f.Queue.AckFrom(f.Name, last); err != nil {
				f.Logger.Error("spool ack failed; the batch may be sent again", "seq", last, "err", err)
			} else {
				f.Stats.Settle(first, last, prev, res.Dropped)
			}
		}
		// Records left by an error have waited already: they go after the
		// backoff, without a second linger.
		retrying = res.Err != nil
		partialSince = time.Time{}

		switch class {
		case ClassSuccess:
			bo.Reset()
			resumed = false
			transientLog.Reset()
		case ClassClosed:
			f.Logger.Info("destination closed; forwarder stops", "err", res.Err)
			return ErrClosed
		case ClassPaused:
			var pe *PausedError
			errors.As(res.Err, &pe)
			probe := f.ProbeInterval
			if pe.Probe > 0 {
				probe = pe.Probe
			}
			if paused != pe.Reason {
				f.Logger.Error("sink paused; events are kept in the spool", "reason", pe.Reason, "err", res.Err, "probe_in", probe)
				f.Stats.SetPaused(pe.Reason)
				paused = pe.Reason
			}
			f.Stats.AddRetry("paused")
			early, ok := sleepEarly(ctx, probe, f.Resume)
			if !ok {
				return ctx.Err()
			}
			resumed = early
		case ClassThrottled, ClassTransient:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d := nextBackOff(bo)
			if class == ClassThrottled {
				d = max(d, retryAfter)
			}
			f.Stats.AddRetry(class.String())
			if transientLog.Allow() {
				f.Logger.Warn("send failed; retrying", "class", class.String(), "err", res.Err, "records", len(recs)-res.Settled, "retry_in", d, "suppressed", transientLog.Suppressed())
			}
			if !sleep(ctx, d, nil) {
				return ctx.Err()
			}
		}
	}
}

// nextBackOff is bo.NextBackOff without its give-up: an injected schedule
// that returns Stop starts over instead of making the retries immediate
// (the spool's cap, not a timer, decides when an event is given up).
func nextBackOff(bo backoff.BackOff) time.Duration {
	d := bo.NextBackOff()
	if d == backoff.Stop {
		bo.Reset()
		if d = bo.NextBackOff(); d == backoff.Stop || d < 0 {
			d = time.Second
		}
	}
	return d
}

// cutByBytes reports whether Read stopped short of limit because the next
// record did not fit in MaxBytes: such a batch cannot grow by waiting.
func (f *Forwarder) cutByBytes(recs []spool.Record, limit int) bool {
	if f.MaxBytes <= 0 || len(recs) >= limit {
		return false
	}
	more, err := f.Queue.Read(f.Name, len(recs)+1, 0)
	return err == nil && len(more) > len(recs)
}

func (f *Forwarder) full(recs []spool.Record) bool {
	if f.MaxBytes <= 0 {
		return false
	}
	n := 0
	for _, r := range recs {
		n += len(r.Data)
	}
	return n >= f.MaxBytes*9/10
}

// sleep waits d, returning false if ctx ended first; a receive on early ends
// the wait at once.
func sleep(ctx context.Context, d time.Duration, early <-chan struct{}) bool {
	_, ok := sleepEarly(ctx, d, early)
	return ok
}

// sleepEarly is sleep that also says whether early ended the wait.
func sleepEarly(ctx context.Context, d time.Duration, early <-chan struct{}) (woken, ok bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, false
	case <-t.C:
		return false, true
	case <-early:
		return true, true
	}
}
