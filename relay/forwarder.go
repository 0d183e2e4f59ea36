package relay

import (
	"context"
	"errors"
	"log/slog"
	"sync"
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
	// ReadBatch reads into b up to max records (and about maxBytes of
	// data) after position after, or after the sink's acknowledged
	// position when that is further, without blocking and without moving
	// it. A forwarder with batches in flight reads after the last one.
	ReadBatch(sink string, after uint64, max, maxBytes int, b *spool.Batch) error
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
	// Inflight is how many batches may be sent at once when Sink is a
	// LaneSink (0 or 1: one). Batches are read one after the other and
	// acknowledged in order, so up to twice Inflight may be unsettled:
	// those being sent and those answered behind an older one; see Run.
	Inflight int
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

// MaxBackOff caps every wait of the backoff, jitter included
// (spec/metrics-api.md: at most 60 s). A peer's Retry-After is not a
// backoff: it is capped by MaxRetryAfter instead.
const MaxBackOff = time.Minute

// backOffJitter is DefaultBackOff's randomization: a wait is drawn from
// ±50% around the interval.
const backOffJitter = 0.5

// DefaultBackOff is the transient-error schedule: exponential with ±50%
// jitter from 1 s, retrying forever, every wait at most MaxBackOff.
// cenkalti/backoff draws the jitter after capping the interval at
// MaxInterval, so the interval stops at MaxBackOff/1.5 (40 s): the waits
// at the top are 20 s to 60 s.
func DefaultBackOff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = time.Second
	b.MaxInterval = time.Duration(float64(MaxBackOff) / (1 + backOffJitter))
	b.RandomizationFactor = backOffJitter
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

// flight is one batch handed to a lane.
type flight struct {
	b     spool.Batch
	after uint64 // the position it was read after
	res   Result
	done  chan struct{} // closed when Send returned
}

func (fl *flight) finished() bool {
	select {
	case <-fl.done:
		return true
	default:
		return false
	}
}

// Run forwards until ctx is done (returning ctx.Err()) or the sink reports
// ErrClosed (returning ErrClosed). Records not settled when it returns stay
// in the spool.
//
// With Inflight > 1 and a LaneSink, up to Inflight batches are being sent
// at once, each on a lane of its own, read one after the other. Batches are
// settled (acknowledged, counted) strictly in order: a batch that finishes
// early waits for those before it, and its lane takes the next batch
// meanwhile, up to 2 × Inflight batches unsettled; so one slow answer holds
// back acknowledgements, not the other lanes. When a batch fails, the batches behind it are
// waited for and their outcome discarded, and everything from the failed
// batch's unsettled records on is read again after the wait that Classify
// asks for, one batch at a time until a send succeeds: a batch behind a
// failure may reach the peer twice, which envelope ids make harmless, and
// nothing is acknowledged out of order. A partial batch is held back while
// others are in flight (it may still fill), and sent alone after the
// linger, as with one lane.
func (f *Forwarder) Run(ctx context.Context) error {
	if f.wake == nil {
		panic("BUG: relay: Forwarder.Run before Init")
	}
	sinks := []Sink{f.Sink}
	if ls, ok := f.Sink.(LaneSink); ok {
		for range f.Inflight - 1 {
			sinks = append(sinks, ls.Lane())
		}
	}
	// With one lane, Send runs on this goroutine, as Sink's contract has
	// always said (a sink may change the forwarder's fields in Send: the
	// agent's late-started sinks set Batch); with more, each lane has its
	// goroutine.
	var work chan *flight
	var lanes sync.WaitGroup
	fin := make(chan struct{}, 1) // a flight finished: the loop looks again
	if len(sinks) > 1 {
		work = make(chan *flight)
		for _, sk := range sinks {
			lanes.Go(func() {
				for fl := range work {
					fl.res = sk.Send(ctx, fl.b.Recs)
					close(fl.done)
					select {
					case fin <- struct{}{}:
					default: // a wake-up is pending already
					}
				}
			})
		}
	}
	defer func() {
		if work != nil {
			close(work)
		}
		lanes.Wait()
	}()
	r := &run{f: f, ctx: ctx, work: work, fin: fin, lanes: len(sinks), bo: f.NewBackOff(),
		transientLog: logthrottle.New(time.Minute, 1), lastActive: time.Now()}
	err := r.loop()
	// Whatever is still in flight returns promptly (ctx is done, or the
	// destination closed); what it settled is acknowledged in order.
	for _, fl := range r.win {
		<-fl.done
	}
	for _, fl := range r.win {
		if fl.res.Settled > len(fl.b.Recs) {
			break
		}
		// An ack covers every record up to its seq: after one that failed,
		// acknowledging a later batch would take this one's records out of
		// the spool uncounted.
		if !f.ack(fl.b.Recs, fl.res) || fl.res.Err != nil || fl.res.Settled != len(fl.b.Recs) {
			break
		}
	}
	r.win = nil
	f.busySince.Store(0)
	return err
}

// run is the state of one Run.
type run struct {
	f     *Forwarder
	ctx   context.Context
	work  chan *flight
	fin   chan struct{} // signalled by a lane when a flight finishes
	lanes int

	win  []*flight // in flight or finished but not yet settled, oldest first
	free []*flight // settled, for reuse (their buffers stay)
	pos  uint64    // last record handed to a flight; 0: start at the cursor

	bo           backoff.BackOff
	partialSince time.Time // when a partial batch was first seen waiting
	paused       string    // pause reason while paused
	resumed      bool      // the pause was ended by Resume: try a full batch
	retrying     bool      // the last Send failed: its records go after the wait, alone and without lingering again
	transientLog *logthrottle.Throttle
	lastActive   time.Time // last Send or Idle, for IdleAfter
}

func (r *run) loop() error {
	f := r.f
	for {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		for len(r.win) > 0 && r.win[0].finished() {
			if err := r.settleHead(); err != nil {
				return err
			}
		}
		if err := r.ctx.Err(); err != nil {
			return err
		}

		limit := f.Batch
		if r.paused != "" && !r.resumed {
			limit = 1 // a periodic probe is one small batch
		}
		// Up to r.lanes sends at once, and as many finished batches
		// waiting behind an unfinished older one: a slow answer holds back
		// the acknowledgements behind it, not the lanes.
		window, sends := 2*r.lanes, r.lanes
		if r.lanes == 1 || r.paused != "" || r.retrying {
			window, sends = 1, 1 // a probe or a retry goes alone
		}
		canSend := len(r.win) < window && r.sending() < sends
		if canSend {
			fl := r.take()
			err := f.Queue.ReadBatch(f.Name, r.pos, limit, f.MaxBytes, &fl.b)
			switch {
			case err != nil:
				r.free = append(r.free, fl)
				if len(r.win) > 0 {
					break // settle what is in flight first
				}
				if errors.Is(err, context.Canceled) {
					return err
				}
				d := nextBackOff(r.bo)
				if r.transientLog.Allow() {
					f.Logger.Error("spool read failed; retrying", "err", err, "retry_in", d)
				}
				if !sleep(r.ctx, d, nil) {
					return r.ctx.Err()
				}
				continue
			case len(fl.b.Recs) == 0:
				r.free = append(r.free, fl)
				if len(r.win) > 0 {
					break
				}
				r.partialSince = time.Time{}
				if err := r.idle(); err != nil {
					return err
				}
				continue
			default:
				recs := fl.b.Recs
				partial := r.paused == "" && !r.retrying && f.Linger > 0 && !f.draining.Load() &&
					len(recs) < limit && !f.full(recs) && !fl.b.Cut
				var wait time.Duration
				if partial && len(r.win) == 0 {
					if r.partialSince.IsZero() {
						r.partialSince = time.Now()
					}
					wait = f.Linger - time.Since(r.partialSince)
					partial = wait > 0
				}
				if !partial {
					r.dispatch(fl)
					continue
				}
				r.free = append(r.free, fl)
				if len(r.win) > 0 {
					break // it may fill while the others are in flight
				}
				t := time.NewTimer(wait)
				select {
				case <-r.ctx.Done():
					t.Stop()
					return r.ctx.Err()
				case <-f.ready:
				case <-f.wake:
				case <-t.C:
				}
				t.Stop()
				continue
			}
		}
		// Wait for a flight to finish, or for records to fill a free lane.
		var ready <-chan struct{}
		if canSend {
			ready = f.ready
		}
		select {
		case <-r.ctx.Done():
			return r.ctx.Err()
		case <-r.win[0].done:
		case <-r.fin:
		case <-ready:
		case <-f.wake:
		}
	}
}

// sending is the number of flights whose Send has not returned.
func (r *run) sending() int {
	n := 0
	for _, fl := range r.win {
		if !fl.finished() {
			n++
		}
	}
	return n
}

// take returns a flight to read into, reusing a settled one's buffers.
func (r *run) take() *flight {
	if n := len(r.free); n > 0 {
		fl := r.free[n-1]
		r.free = r.free[:n-1]
		return fl
	}
	return &flight{}
}

// dispatch hands fl, just read after r.pos, to a free lane.
func (r *run) dispatch(fl *flight) {
	fl.after = r.pos
	fl.res = Result{}
	fl.done = make(chan struct{})
	r.pos = fl.b.Recs[len(fl.b.Recs)-1].Seq
	r.partialSince = time.Time{}
	if len(r.win) == 0 {
		r.f.busySince.Store(time.Now().UnixNano())
	}
	r.win = append(r.win, fl)
	if r.work == nil {
		fl.res = r.f.Sink.Send(r.ctx, fl.b.Recs)
		close(fl.done)
		return
	}
	r.work <- fl // a lane is free: at most r.lanes flights are being sent
}

// settleHead settles the oldest flight, which has finished: it acknowledges
// what the sink settled, counts it, and on an error discards the flights
// behind it and waits as Classify says. It returns a non-nil error when Run
// must return.
func (r *run) settleHead() error {
	f := r.f
	fl := r.win[0]
	recs, res := fl.b.Recs, fl.res
	r.lastActive = time.Now()
	if res.Settled > len(recs) {
		panic("BUG: relay: sink settled more records than it was given")
	}
	if res.Err == nil && res.Settled != len(recs) {
		panic("BUG: relay: sink returned no error but did not settle the batch")
	}
	class, retryAfter := Classify(res.Err)
	if class == ClassSuccess && r.paused != "" {
		// Cleared before the batch is acknowledged, so no reader sees
		// everything delivered by a sink that still says it is paused.
		f.Logger.Info("sink resumed", "paused_reason", r.paused)
		f.Stats.SetPaused("")
		r.paused = ""
	}
	acked := f.ack(recs, res)
	r.win = r.win[1:]
	r.free = append(r.free, fl)
	if len(r.win) > 0 {
		f.busySince.Store(time.Now().UnixNano()) // the pipeline moved
	} else {
		f.busySince.Store(0)
	}
	if class == ClassSuccess {
		r.bo.Reset()
		r.resumed = false
		r.retrying = false
		r.transientLog.Reset()
		if !acked {
			r.goBack(fl.after) // offer the batch again
		}
		return nil
	}

	// Go back: what follows the failed batch's settled records is read
	// again after the wait, whatever the flights behind it did.
	to := fl.after
	if acked && res.Settled > 0 {
		to = recs[res.Settled-1].Seq
	}
	r.goBack(to)
	// Records left by an error have waited already: they go after the
	// backoff, without a second linger.
	r.retrying = true
	r.partialSince = time.Time{}

	switch class {
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
		if r.paused != pe.Reason {
			f.Logger.Error("sink paused; events are kept in the spool", "reason", pe.Reason, "err", res.Err, "probe_in", probe)
			f.Stats.SetPaused(pe.Reason)
			r.paused = pe.Reason
		}
		f.Stats.AddRetry("paused")
		early, ok := sleepEarly(r.ctx, probe, f.Resume)
		if !ok {
			return r.ctx.Err()
		}
		r.resumed = early
	case ClassThrottled, ClassTransient:
		if r.ctx.Err() != nil {
			return r.ctx.Err()
		}
		// The peer's Retry-After replaces the backoff (spec/metrics-api.md):
		// the wait is its word exactly, however many throttled answers came
		// before, and the schedule does not grow meanwhile.
		var d time.Duration
		if class == ClassThrottled && retryAfter > 0 {
			d = retryAfter
		} else {
			d = nextBackOff(r.bo)
		}
		f.Stats.AddRetry(class.String())
		if r.transientLog.Allow() {
			f.Logger.Warn("send failed; retrying", "class", class.String(), "err", res.Err, "records", len(recs)-res.Settled, "retry_in", d, "suppressed", r.transientLog.Suppressed())
		}
		if !sleep(r.ctx, d, nil) {
			return r.ctx.Err()
		}
	}
	return nil
}

// goBack discards the flights behind the one just settled, once they have
// returned, and makes the next read start after position to.
func (r *run) goBack(to uint64) {
	for _, o := range r.win {
		<-o.done
		r.free = append(r.free, o)
	}
	r.win = r.win[:0]
	r.f.busySince.Store(0)
	r.pos = to
}

// ack acknowledges the settled prefix of recs and counts its outcome; it
// reports false when the acknowledgement failed (nothing is counted, and
// the records are offered again). The ack runs without any lock that a
// status reader takes; the outcome is counted after it, and a reader in
// between sees the batch still pending.
func (f *Forwarder) ack(recs []spool.Record, res Result) bool {
	if res.Settled <= 0 {
		return true
	}
	first, last := recs[0].Seq, recs[res.Settled-1].Seq
	prev, err := f.Queue.AckFrom(f.Name, last)
	if err != nil {
		f.Logger.Error("spool ack failed; the batch may be sent again", "seq", last, "err", err)
		return false
	}
	f.Stats.Settle(first, last, prev, res.Dropped)
	return true
}

// idle waits, with nothing in flight and nothing to send, for records, a
// wake-up, or IdleAfter (then it calls Idle).
func (r *run) idle() error {
	f := r.f
	var idle *time.Timer
	var idleC <-chan time.Time
	if f.Idle != nil {
		idle = time.NewTimer(max(f.IdleAfter-time.Since(r.lastActive), 0))
		idleC = idle.C
		defer idle.Stop()
	}
	select {
	case <-r.ctx.Done():
		return r.ctx.Err()
	case <-f.ready:
	case <-f.wake:
	case <-idleC:
		r.lastActive = time.Now()
		if err := f.Idle(r.ctx); errors.Is(err, ErrClosed) {
			f.Logger.Info("destination closed; forwarder stops", "err", err)
			return ErrClosed
		}
	}
	return nil
}

// nextBackOff is bo.NextBackOff without its give-up, and never more than
// MaxBackOff: an injected schedule that returns Stop starts over instead of
// making the retries immediate (the spool's cap, not a timer, decides when
// an event is given up).
func nextBackOff(bo backoff.BackOff) time.Duration {
	d := bo.NextBackOff()
	if d == backoff.Stop {
		bo.Reset()
		if d = bo.NextBackOff(); d == backoff.Stop || d < 0 {
			d = time.Second
		}
	}
	return min(d, MaxBackOff)
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
