package relay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// Everything is delivered in order, in batches of Batch, back to back; the
// cursor is acked; the accounting adds up with nothing pending; records
// appended later are delivered too.
func TestForwarderDeliversInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newScriptSink()
		r := newRig(t, sink, func(f *relay.Forwarder) { f.Batch = 4 })
		t0 := time.Now()
		r.add(10) // before Run: the stale Ready token must not matter
		r.start()
		synctest.Wait()
		wantCalls(t, sink.Calls(), t0,
			wantCall{0, seqs(1, 4)}, wantCall{0, seqs(5, 8)}, wantCall{0, seqs(9, 10)})
		snap, ss := r.check()
		if snap.Delivered != 10 || snap.DroppedTotal() != 0 || ss.Pending != 0 || ss.Cursor != 10 || ss.Received != 10 {
			t.Fatalf("after 10 records: %+v, %+v", snap, ss)
		}
		if !snap.LastSuccess.Equal(t0) {
			t.Fatalf("LastSuccess %s, want %s", snap.LastSuccess, t0)
		}

		time.Sleep(time.Minute)
		r.add(3)
		synctest.Wait()
		wantCalls(t, sink.Calls()[3:], t0, wantCall{time.Minute, seqs(11, 13)})
		snap, ss = r.check()
		if snap.Delivered != 13 || ss.Pending != 0 || !snap.LastSuccess.Equal(t0.Add(time.Minute)) {
			t.Fatalf("after 13 records: %+v, %+v", snap, ss)
		}
		if len(snap.Retries) != 0 || snap.Paused != "" {
			t.Fatalf("retries %v, paused %q on a clean run", snap.Retries, snap.Paused)
		}
		if r.returned() {
			t.Fatalf("Run returned %v while idle", r.err)
		}
		r.cancel()
		<-r.done
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("Run = %v, want context.Canceled", r.err)
		}
	})
}

// A partial Result acks exactly the settled prefix, counts its drops by
// reason and delivered as the rest of it, and offers the remainder again
// after the backoff; the identity holds in between and at the end.
func TestForwarderPartialResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newScriptSink(ret(relay.Result{
			Settled: 4,
			Dropped: []relay.Drop{
				{Seq: 2, ID: "id-2", Reason: relay.DropRejected},
				{Seq: 3, ID: "id-3", Reason: relay.DropOversize},
			},
			Err: errors.New("http 503"),
		}))
		r := newRig(t, sink, func(f *relay.Forwarder) {
			f.Batch = 6
			f.NewBackOff = constant(time.Second)
		})
		t0 := time.Now()
		r.add(6)
		r.start()
		synctest.Wait()
		wantCalls(t, sink.Calls(), t0, wantCall{0, seqs(1, 6)})
		snap, ss := r.check()
		if snap.Delivered != 2 || ss.Cursor != 4 || ss.Pending != 2 {
			t.Fatalf("after the partial result: delivered %d, cursor %d, pending %d; want 2, 4, 2", snap.Delivered, ss.Cursor, ss.Pending)
		}
		if snap.Dropped[relay.DropRejected] != 1 || snap.Dropped[relay.DropOversize] != 1 || len(snap.Dropped) != 2 {
			t.Fatalf("dropped %v, want one rejected and one oversize", snap.Dropped)
		}
		if snap.Retries["transient"] != 1 {
			t.Fatalf("retries %v, want transient 1", snap.Retries)
		}

		time.Sleep(time.Second)
		synctest.Wait()
		wantCalls(t, sink.Calls(), t0, wantCall{0, seqs(1, 6)}, wantCall{time.Second, seqs(5, 6)})
		snap, ss = r.check()
		if snap.Delivered != 4 || snap.DroppedTotal() != 2 || ss.Pending != 0 || ss.Received != 6 {
			t.Fatalf("at the end: %+v, %+v", snap, ss)
		}
	})
}

// Transient errors wait exactly what NewBackOff says, the same batch is
// offered each time, and a success resets the schedule.
func TestForwarderTransientBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("connection refused")
		sink := newScriptSink(failWith(boom), failWith(boom), failWith(boom))
		bo := &scriptBackOff{ds: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}}
		r := newRig(t, sink, func(f *relay.Forwarder) {
			f.NewBackOff = func() backoff.BackOff { return bo }
		})
		t0 := time.Now()
		r.add(2)
		r.start()
		time.Sleep(time.Hour)
		wantCalls(t, sink.Calls(), t0,
			wantCall{0, seqs(1, 2)},
			wantCall{1 * time.Second, seqs(1, 2)},
			wantCall{3 * time.Second, seqs(1, 2)},
			wantCall{6 * time.Second, seqs(1, 2)})
		snap, ss := r.check()
		if snap.Retries["transient"] != 3 || snap.Delivered != 2 || ss.Pending != 0 {
			t.Fatalf("retries %v, delivered %d, pending %d", snap.Retries, snap.Delivered, ss.Pending)
		}
		if bo.Resets() != 1 {
			t.Fatalf("backoff reset %d times after one success, want 1", bo.Resets())
		}

		// A new outage starts from the first interval again.
		sink.mu.Lock()
		sink.steps = []step{failWith(boom)}
		sink.mu.Unlock()
		t1 := time.Now()
		r.add(1)
		time.Sleep(time.Hour)
		wantCalls(t, sink.Calls()[4:], t1, wantCall{0, seqs(3, 3)}, wantCall{time.Second, seqs(3, 3)})
	})
}

// The default schedule: exponential from 1 s, ±50% jitter, every wait at
// most 60 s jitter included (the interval stops at 40 s), and
// MaxElapsedTime 0, so it never returns Stop, however long the outage.
func TestDefaultBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, ok := relay.DefaultBackOff().(*backoff.ExponentialBackOff)
		if !ok {
			t.Fatalf("DefaultBackOff is %T, want *backoff.ExponentialBackOff", relay.DefaultBackOff())
		}
		if b.MaxElapsedTime != 0 || b.InitialInterval != time.Second || b.MaxInterval != 40*time.Second ||
			b.RandomizationFactor != 0.5 || b.Multiplier != 2 {
			t.Fatalf("DefaultBackOff = %+v", b)
		}
		start := time.Now()
		want := float64(time.Second)
		for i := 0; time.Since(start) < 6*time.Hour; i++ {
			d := b.NextBackOff()
			if d == backoff.Stop {
				t.Fatalf("NextBackOff returned Stop after %s (attempt %d)", time.Since(start), i)
			}
			if float64(d) < 0.5*want || float64(d) > 1.5*want || d > relay.MaxBackOff {
				t.Fatalf("attempt %d: %s, want %s ±50%% and at most %s", i, d, time.Duration(want), relay.MaxBackOff)
			}
			want = min(2*want, float64(40*time.Second))
			time.Sleep(d)
		}
	})
}

// With the default schedule (NewBackOff nil) the forwarder retries a failing
// sink for hours: it never gives up, waits between 0.5 s and 60 s, and the
// waits grow.
func TestForwarderDefaultBackOffNeverStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newScriptSink()
		var n int
		sink.then = func(ctx context.Context, recs []spool.Record) relay.Result {
			// Only the Send goroutine touches n. A forwarder that stopped
			// waiting would spin at one instant; park it so the bubble's
			// clock can still advance and the test fails instead of hanging.
			if n++; n > 10000 {
				return blockUntilDone(ctx, recs)
			}
			return relay.Result{Err: errors.New("http 502")}
		}
		r := newRig(t, sink, nil)
		r.add(1)
		r.start()
		time.Sleep(3 * time.Hour)
		calls := sink.Calls()
		if len(calls) < 100 || len(calls) > 1000 {
			t.Fatalf("%d Sends in 3 h of outage; want about one a minute", len(calls))
		}
		for i := 1; i < len(calls); i++ {
			gap := calls[i].At.Sub(calls[i-1].At)
			if gap < 500*time.Millisecond || gap > relay.MaxBackOff {
				t.Fatalf("wait %d was %s, want within [0.5s, 60s]", i, gap)
			}
		}
		if last := calls[len(calls)-1].At; time.Since(last) > relay.MaxBackOff {
			t.Fatalf("last Send %s before the end of a 3 h outage: the forwarder gave up", time.Since(last))
		}
		if first := calls[1].At.Sub(calls[0].At); first > 1500*time.Millisecond {
			t.Fatalf("first wait %s, want about 1 s", first)
		}
	})
}

// Throttled: the next Send comes exactly RetryAfter later (capped at 15
// minutes) when the peer gave one, whatever the backoff; the backoff when it
// gave none.
func TestForwarderThrottled(t *testing.T) {
	for _, tc := range []struct {
		name       string
		backoff    time.Duration
		retryAfter time.Duration
		want       time.Duration
	}{
		{"retry-after wins", 100 * time.Millisecond, 2 * time.Second, 2 * time.Second},
		{"retry-after shorter than the backoff", 3 * time.Second, 2 * time.Second, 2 * time.Second},
		{"no retry-after", 100 * time.Millisecond, 0, 100 * time.Millisecond},
		{"capped", 100 * time.Millisecond, 2 * time.Hour, relay.MaxRetryAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sink := newScriptSink(failWith(fmt.Errorf("http 429: %w", &relay.ThrottledError{RetryAfter: tc.retryAfter, Err: errors.New("slow down")})))
				r := newRig(t, sink, func(f *relay.Forwarder) { f.NewBackOff = constant(tc.backoff) })
				t0 := time.Now()
				r.add(3)
				r.start()
				time.Sleep(3 * time.Hour)
				wantCalls(t, sink.Calls(), t0, wantCall{0, seqs(1, 3)}, wantCall{tc.want, seqs(1, 3)})
				snap, _ := r.check()
				if snap.Retries["throttled"] != 1 || snap.Delivered != 3 {
					t.Fatalf("retries %v delivered %d", snap.Retries, snap.Delivered)
				}
			})
		})
	}
}

// Many throttled answers in a row: every wait is the peer's Retry-After
// exactly (spec/metrics-api.md: it replaces the backoff), and the backoff
// does not grow meanwhile: a transient error after them waits the first
// interval.
func TestForwarderThrottledManyTimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		throttled := failWith(fmt.Errorf("http 429: %w", &relay.ThrottledError{RetryAfter: 5 * time.Second, Err: errors.New("slow down")}))
		steps := make([]step, 0, 13)
		for range 12 {
			steps = append(steps, throttled)
		}
		steps = append(steps, failWith(errors.New("http 502")))
		sink := newScriptSink(steps...)
		bo := &scriptBackOff{ds: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}}
		r := newRig(t, sink, func(f *relay.Forwarder) { f.NewBackOff = func() backoff.BackOff { return bo } })
		t0 := time.Now()
		r.add(2)
		r.start()
		time.Sleep(time.Hour)
		want := []wantCall{{0, seqs(1, 2)}}
		at := time.Duration(0)
		for range 12 {
			at += 5 * time.Second
			want = append(want, wantCall{at, seqs(1, 2)})
		}
		want = append(want, wantCall{at + time.Second, seqs(1, 2)})
		wantCalls(t, sink.Calls(), t0, want...)
		snap, _ := r.check()
		if snap.Retries["throttled"] != 12 || snap.Retries["transient"] != 1 || snap.Delivered != 2 {
			t.Fatalf("retries %v delivered %d", snap.Retries, snap.Delivered)
		}
	})
}

// An injected schedule is held to MaxBackOff: waits of 2 minutes become
// 60 s each.
func TestForwarderBackOffCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		transient := failWith(errors.New("http 502"))
		sink := newScriptSink(transient, transient)
		bo := &scriptBackOff{ds: []time.Duration{2 * time.Minute}}
		r := newRig(t, sink, func(f *relay.Forwarder) { f.NewBackOff = func() backoff.BackOff { return bo } })
		t0 := time.Now()
		r.add(2)
		r.start()
		time.Sleep(time.Hour)
		wantCalls(t, sink.Calls(), t0, wantCall{0, seqs(1, 2)}, wantCall{relay.MaxBackOff, seqs(1, 2)}, wantCall{2 * relay.MaxBackOff, seqs(1, 2)})
	})
}

// Paused, then probed: the pause reason shows in Stats; each probe comes one
// ProbeInterval after the last attempt and carries exactly one record; after
// a successful probe the pause clears and the rest goes as a full batch.
func TestForwarderPausedProbes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		probe time.Duration // Forwarder.ProbeInterval
		every time.Duration // the interval expected
	}{
		{"explicit interval", time.Minute, time.Minute},
		{"default interval", 0, relay.DefaultProbeInterval},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				unauthorized := &relay.PausedError{Reason: "unauthorized", Err: errors.New("http 401")}
				misconfigured := &relay.PausedError{Reason: "misconfigured", Err: errors.New("http 404")}
				sink := newScriptSink(failWith(unauthorized), failWith(misconfigured))
				r := newRig(t, sink, func(f *relay.Forwarder) {
					f.Batch = 10
					f.ProbeInterval = tc.probe
					f.NewBackOff = constant(time.Millisecond)
				})
				t0 := time.Now()
				r.add(5)
				r.start()
				synctest.Wait()
				if snap, _ := r.check(); snap.Paused != "unauthorized" || snap.Retries["paused"] != 1 {
					t.Fatalf("after a 401: paused %q, retries %v", snap.Paused, snap.Retries)
				}

				time.Sleep(tc.every - time.Nanosecond)
				wantCalls(t, sink.Calls(), t0, wantCall{0, seqs(1, 5)})

				time.Sleep(time.Nanosecond)
				synctest.Wait()
				if snap, _ := r.check(); snap.Paused != "misconfigured" || snap.Retries["paused"] != 2 {
					t.Fatalf("after the first probe: paused %q, retries %v", snap.Paused, snap.Retries)
				}

				time.Sleep(tc.every)
				synctest.Wait()
				wantCalls(t, sink.Calls(), t0,
					wantCall{0, seqs(1, 5)},
					wantCall{tc.every, seqs(1, 1)},
					wantCall{2 * tc.every, seqs(1, 1)},
					wantCall{2 * tc.every, seqs(2, 5)})
				snap, ss := r.check()
				if snap.Paused != "" || snap.Delivered != 5 || ss.Pending != 0 {
					t.Fatalf("after the successful probe: paused %q, delivered %d, pending %d", snap.Paused, snap.Delivered, ss.Pending)
				}
			})
		})
	}
}

// A receive on Resume ends the pause at once and the next attempt is a full
// batch, not a probe.
func TestForwarderPausedResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		resume := make(chan struct{})
		sink := newScriptSink(failWith(&relay.PausedError{Reason: "unauthorized", Err: errors.New("http 401")}))
		r := newRig(t, sink, func(f *relay.Forwarder) {
			f.Batch = 10
			f.ProbeInterval = time.Hour
			f.Resume = resume
		})
		t0 := time.Now()
		r.add(5)
		r.start()
		time.Sleep(10 * time.Second)
		wantCalls(t, sink.Calls(), t0, wantCall{0, seqs(1, 5)})
		resume <- struct{}{} // blocks until the forwarder takes it
		synctest.Wait()
		wantCalls(t, sink.Calls(), t0, wantCall{0, seqs(1, 5)}, wantCall{10 * time.Second, seqs(1, 5)})
		snap, ss := r.check()
		if snap.Paused != "" || snap.Delivered != 5 || ss.Pending != 0 {
			t.Fatalf("after resume: paused %q, delivered %d, pending %d", snap.Paused, snap.Delivered, ss.Pending)
		}
	})
}

// Linger: a partial batch goes Linger after its first record appeared (Wake
// does not restart that clock), a batch that fills goes at once, and after
// Drain partial batches go at once.
func TestForwarderLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newScriptSink()
		r := newRig(t, sink, func(f *relay.Forwarder) {
			f.Batch = 5
			f.Linger = 2 * time.Second
		})
		r.start()
		t0 := time.Now()

		r.add(2)
		time.Sleep(time.Second)
		r.add(1)
		time.Sleep(500 * time.Millisecond)
		r.f.Wake()
		time.Sleep(500*time.Millisecond - time.Nanosecond)
		wantCalls(t, sink.Calls(), t0)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		wantCalls(t, sink.Calls(), t0, wantCall{2 * time.Second, seqs(1, 3)})

		// A batch that fills while lingering goes when it fills.
		time.Sleep(time.Minute)
		r.add(3)
		time.Sleep(time.Second)
		r.add(2)
		synctest.Wait()
		wantCalls(t, sink.Calls()[1:], t0, wantCall{time.Minute + 3*time.Second, seqs(4, 8)})

		// A full batch goes at once.
		time.Sleep(time.Minute)
		r.add(5)
		synctest.Wait()
		wantCalls(t, sink.Calls()[2:], t0, wantCall{2*time.Minute + 3*time.Second, seqs(9, 13)})

		// Drain sends the lingering partial batch at once, and later ones
		// without lingering.
		time.Sleep(time.Minute)
		r.add(2)
		time.Sleep(500 * time.Millisecond)
		r.f.Drain()
		synctest.Wait()
		time.Sleep(time.Minute)
		r.add(1)
		synctest.Wait()
		wantCalls(t, sink.Calls()[3:], t0,
			wantCall{3*time.Minute + 3*time.Second + 500*time.Millisecond, seqs(14, 15)},
			wantCall{4*time.Minute + 3*time.Second + 500*time.Millisecond, seqs(16, 16)})
		if snap, ss := r.check(); snap.Delivered != 16 || ss.Pending != 0 {
			t.Fatalf("delivered %d pending %d", snap.Delivered, ss.Pending)
		}
	})
}

// Linger with MaxBytes: a batch holding at least 90% of MaxBytes counts as
// full and goes at once.
func TestForwarderLingerFullByBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newScriptSink()
		r := newRig(t, sink, func(f *relay.Forwarder) {
			f.Batch = 100
			f.MaxBytes = 100
			f.Linger = time.Hour
		})
		r.start()
		t0 := time.Now()
		r.addSized(45, 44) // 89 bytes: not full
		synctest.Wait()
		wantCalls(t, sink.Calls(), t0)
		r.addSized(1) // 90 bytes: full
		synctest.Wait()
		wantCalls(t, sink.Calls(), t0, wantCall{0, seqs(1, 3)})
	})
}

// ErrClosed: the settled prefix is acked, Run returns ErrClosed, and nothing
// is sent again whatever is appended later.
func TestForwarderClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"wrapped", fmt.Errorf("trickle: 404: %w", relay.ErrClosed)},
		{"inside a pause", &relay.PausedError{Reason: "unauthorized", Err: relay.ErrClosed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sink := newScriptSink(ret(relay.Result{Settled: 2, Err: tc.err}))
				r := newRig(t, sink, func(f *relay.Forwarder) { f.NewBackOff = constant(time.Millisecond) })
				t0 := time.Now()
				r.add(5)
				r.start()
				synctest.Wait()
				if !r.returned() {
					t.Fatal("Run did not return after ErrClosed")
				}
				if r.err != relay.ErrClosed {
					t.Fatalf("Run = %v, want relay.ErrClosed", r.err)
				}
				r.add(5)
				time.Sleep(time.Hour)
				wantCalls(t, sink.Calls(), t0, wantCall{0, seqs(1, 5)})
				if snap, ss := r.check(); snap.Delivered != 2 || ss.Cursor != 2 || ss.Pending != 8 || snap.Paused != "" {
					t.Fatalf("delivered %d cursor %d pending %d paused %q; want 2, 2, 8, none", snap.Delivered, ss.Cursor, ss.Pending, snap.Paused)
				}
			})
		})
	}
}

// Cancelling ctx ends Run at once, with context.Canceled, in every wait the
// forwarder can be in.
func TestForwarderCancel(t *testing.T) {
	paused := &relay.PausedError{Reason: "unauthorized", Err: errors.New("http 401")}
	for _, tc := range []struct {
		name string
		then step
		tune func(*relay.Forwarder)
	}{
		{"idle", nil, nil},
		{"lingering", nil, func(f *relay.Forwarder) { f.Linger = time.Hour }},
		{"in backoff", failWith(errors.New("http 503")), func(f *relay.Forwarder) { f.NewBackOff = constant(time.Hour) }},
		{"in default backoff", failWith(errors.New("http 503")), nil},
		{"throttled", failWith(&relay.ThrottledError{RetryAfter: 10 * time.Minute}), func(f *relay.Forwarder) { f.NewBackOff = constant(time.Millisecond) }},
		{"paused", failWith(paused), func(f *relay.Forwarder) { f.ProbeInterval = time.Hour }},
		{"paused with a Resume channel", failWith(paused), func(f *relay.Forwarder) { f.Resume = make(chan struct{}) }},
		{"in Send", blockUntilDone, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sink := newScriptSink()
				sink.then = tc.then
				r := newRig(t, sink, tc.tune)
				if tc.name != "idle" {
					r.add(3)
				}
				r.start()
				time.Sleep(1500 * time.Millisecond)
				if r.returned() {
					t.Fatalf("Run returned %v before cancel", r.err)
				}
				cancelAt := time.Now()
				r.cancel()
				synctest.Wait()
				if !r.returned() {
					t.Fatal("Run did not return after cancel")
				}
				if !errors.Is(r.err, context.Canceled) || !r.endAt.Equal(cancelAt) {
					t.Fatalf("Run = %v at +%s after cancel; want context.Canceled at once", r.err, r.endAt.Sub(cancelAt))
				}
				r.check()
			})
		})
	}
}

// A context already cancelled: Run returns without sending.
func TestForwarderCancelledBeforeRun(t *testing.T) {
	sink := newScriptSink()
	r := newRig(t, sink, nil)
	r.add(3)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := r.f.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if n := len(sink.Calls()); n != 0 {
		t.Fatalf("%d Sends with a cancelled context", n)
	}
}

// MaxBytes bounds every batch, except that a single record larger than it
// goes alone; nothing is skipped or reordered.
func TestForwarderMaxBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newScriptSink()
		r := newRig(t, sink, func(f *relay.Forwarder) {
			f.Batch = 10
			f.MaxBytes = 100
		})
		t0 := time.Now()
		r.addSized(30, 30, 50, 120, 10, 10, 100, 1)
		r.start()
		synctest.Wait()
		calls := sink.Calls()
		wantCalls(t, calls, t0,
			wantCall{0, seqs(1, 2)}, // 60; +50 would be 110
			wantCall{0, seqs(3, 3)}, // 50; +120 would be 170
			wantCall{0, seqs(4, 4)}, // 120 alone
			wantCall{0, seqs(5, 6)}, // 20; +100 would be 120
			wantCall{0, seqs(7, 7)}, // 100; +1 would be 101
			wantCall{0, seqs(8, 8)})
		for i, c := range calls {
			if c.Bytes > 100 && len(c.Seqs) > 1 {
				t.Fatalf("Send %d: %d records of %d bytes, over MaxBytes 100", i, len(c.Seqs), c.Bytes)
			}
		}
		if snap, ss := r.check(); snap.Delivered != 8 || ss.Pending != 0 {
			t.Fatalf("delivered %d pending %d", snap.Delivered, ss.Pending)
		}
	})
}

// Records the spool evicts over its cap while a Send carries them are
// counted once, as evicted, never also as delivered or dropped, so the
// identity holds; the records still held are counted as the sink says.
func TestForwarderEvictedInFlight(t *testing.T) {
	for _, tc := range []struct {
		name      string
		more      int          // records appended during the Send; each evicts one
		res       relay.Result // of the Send of 1..3
		delivered uint64
		dropped   map[string]uint64
		next      []uint64 // the next Send, which succeeds
	}{
		{"all evicted", 3, relay.Done(3), 0, map[string]uint64{}, seqs(4, 6)},
		{"one evicted", 1, relay.Done(3), 2, map[string]uint64{}, seqs(4, 4)},
		{"drops of evicted and held records", 1, relay.Result{Settled: 3, Dropped: []relay.Drop{
			{Seq: 1, Reason: relay.DropRejected}, {Seq: 3, Reason: relay.DropOversize},
		}}, 1, map[string]uint64{relay.DropOversize: 1}, seqs(4, 4)},
		{"partial result", 2, relay.Result{Settled: 2, Err: errors.New("http 503")}, 0, map[string]uint64{}, seqs(3, 5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sink := newGateSink()
				r := newRigCap(t, 30, sink, func(f *relay.Forwarder) { f.NewBackOff = constant(time.Second) }) // 3 records of 8 bytes fit
				r.start()
				r.add(3)
				if got := <-sink.entered; fmt.Sprint(got) != fmt.Sprint(seqs(1, 3)) {
					t.Fatalf("first Send got %v", got)
				}
				r.add(tc.more)
				if _, ss := r.check(); ss.Evicted != uint64(tc.more) {
					t.Fatalf("evicted %d, want %d", ss.Evicted, tc.more)
				}
				sink.release <- tc.res
				synctest.Wait()
				snap, ss := r.check()
				if snap.Delivered != tc.delivered || fmt.Sprint(snap.Dropped) != fmt.Sprint(tc.dropped) || ss.Evicted != uint64(tc.more) {
					t.Fatalf("delivered %d dropped %v evicted %d; want %d, %v, %d", snap.Delivered, snap.Dropped, ss.Evicted, tc.delivered, tc.dropped, tc.more)
				}
				// What is left is offered next, from the first held record.
				time.Sleep(time.Second) // past the partial result's backoff
				if got := <-sink.entered; fmt.Sprint(got) != fmt.Sprint(tc.next) {
					t.Fatalf("next Send got %v, want %v", got, tc.next)
				}
				sink.release <- relay.Done(len(tc.next))
				synctest.Wait()
				if snap, ss := r.check(); ss.Pending != 0 || snap.Delivered != tc.delivered+uint64(len(tc.next)) {
					t.Fatalf("at the end: delivered %d pending %d; want %d, 0", snap.Delivered, ss.Pending, tc.delivered+uint64(len(tc.next)))
				}
			})
		})
	}
}

// gateSink blocks in Send until it is given the Result to return; in
// between it calls its alive func (the forwarder's Alive) once per tick.
type gateSink struct {
	alive   func()
	entered chan []uint64 // the seqs of each Send as it begins
	tick    chan struct{}
	release chan relay.Result
}

func newGateSink() *gateSink {
	return &gateSink{entered: make(chan []uint64, 1), tick: make(chan struct{}), release: make(chan relay.Result)}
}

func (s *gateSink) Send(ctx context.Context, recs []spool.Record) relay.Result {
	var seqs []uint64
	for _, r := range recs {
		seqs = append(seqs, r.Seq)
	}
	s.entered <- seqs
	for {
		select {
		case <-ctx.Done():
			return relay.Result{Err: ctx.Err()}
		case <-s.tick:
			s.alive()
		case res := <-s.release:
			return res
		}
	}
}

// Stalled: true only while a Send runs for longer than limit; Alive (called
// directly or by the sink, which takes it as an option) restarts the clock;
// Alive outside a Send does nothing.
func TestForwarderStalled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newGateSink()
		r := newRig(t, sink, nil)
		sink.alive = r.f.Alive
		const limit = 10 * time.Second
		r.start()
		r.f.Alive() // not sending: must not arm the watchdog
		time.Sleep(time.Hour)
		if r.f.Stalled(time.Now().Add(time.Hour), 0) {
			t.Fatal("Stalled while idle (after Alive outside a Send)")
		}

		r.add(1)
		<-sink.entered
		if r.f.Stalled(time.Now(), limit) {
			t.Fatal("Stalled as the Send began")
		}
		time.Sleep(limit)
		if r.f.Stalled(time.Now(), limit) {
			t.Fatal("Stalled at exactly limit")
		}
		time.Sleep(time.Nanosecond)
		if !r.f.Stalled(time.Now(), limit) {
			t.Fatal("not Stalled after limit")
		}

		r.f.Alive()
		if r.f.Stalled(time.Now(), limit) {
			t.Fatal("Stalled right after Alive")
		}
		time.Sleep(8 * time.Second)
		sink.tick <- struct{}{} // the sink calls alive itself
		synctest.Wait()
		time.Sleep(8 * time.Second)
		if r.f.Stalled(time.Now(), limit) {
			t.Fatal("Stalled 8 s after the sink's alive call")
		}
		time.Sleep(3 * time.Second)
		if !r.f.Stalled(time.Now(), limit) {
			t.Fatal("not Stalled 11 s after the sink's alive call")
		}

		sink.release <- relay.Done(1)
		synctest.Wait()
		if r.f.Stalled(time.Now().Add(time.Hour), 0) {
			t.Fatal("Stalled after the Send returned")
		}
		if snap, _ := r.check(); snap.Delivered != 1 {
			t.Fatalf("delivered %d, want 1", snap.Delivered)
		}
	})
}

// A sink that breaks the Result contract is a bug: Run panics (in its own
// goroutine, here the test's) before acking anything.
func TestForwarderBugPanics(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  relay.Result
		want string
	}{
		{"settled more than given", relay.Result{Settled: 4}, "settled more records than it was given"},
		{"settled more with an error", relay.Result{Settled: 4, Err: errors.New("x")}, "settled more records than it was given"},
		{"nil error short", relay.Result{Settled: 2}, "returned no error but did not settle"},
		{"nil error nothing", relay.Result{}, "returned no error but did not settle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Should Run not panic, the next Send cancels it so that the
			// test fails instead of hanging.
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			sink := newScriptSink(ret(tc.res))
			sink.then = func(context.Context, []spool.Record) relay.Result {
				cancel()
				return relay.Result{Err: ctx.Err()}
			}
			r := newRig(t, sink, nil)
			r.add(3)
			msg := runRecover(ctx, t, r.f)
			if !strings.Contains(msg, "BUG:") || !strings.Contains(msg, tc.want) {
				t.Fatalf("panic %q, want a BUG panic saying %q", msg, tc.want)
			}
			if snap, ss := r.check(); ss.Acked != 0 || snap.Delivered != 0 {
				t.Fatalf("acked %d delivered %d after a broken Result", ss.Acked, snap.Delivered)
			}
		})
	}
	t.Run("Run before Init", func(t *testing.T) {
		mem := spool.NewMemory(0)
		f := &relay.Forwarder{Sink: newScriptSink(), Stats: relay.NewStats(), Queue: mem}
		if msg := runRecover(t.Context(), t, f); !strings.Contains(msg, "BUG:") || !strings.Contains(msg, "before Init") {
			t.Fatalf("panic %q, want a BUG panic about Init", msg)
		}
	})
}

// runRecover calls f.Run in this goroutine and returns what it panicked
// with; it fails the test if Run returns.
func runRecover(ctx context.Context, t *testing.T, f *relay.Forwarder) (msg string) {
	t.Helper()
	defer func() {
		if v := recover(); v != nil {
			msg = fmt.Sprint(v)
		}
	}()
	err := f.Run(ctx)
	t.Fatalf("Run returned %v, want a panic", err)
	return ""
}

// faultyQueue fails ReadBatch with readErrs in turn, and AckFrom with ackErrs in
// turn, then behaves like the queue it wraps.
type faultyQueue struct {
	relay.Queue
	mu       sync.Mutex
	readErrs []error
	ackErrs  []error
}

func (c *faultyQueue) ReadBatch(sink string, after uint64, max, maxBytes int, b *spool.Batch) error {
	c.mu.Lock()
	if len(c.readErrs) > 0 {
		err := c.readErrs[0]
		c.readErrs = c.readErrs[1:]
		c.mu.Unlock()
		b.Recs = b.Recs[:0]
		return err
	}
	c.mu.Unlock()
	return c.Queue.ReadBatch(sink, after, max, maxBytes, b)
}

func (c *faultyQueue) AckFrom(sink string, seq uint64) (uint64, error) {
	c.mu.Lock()
	if len(c.ackErrs) > 0 {
		err := c.ackErrs[0]
		c.ackErrs = c.ackErrs[1:]
		c.mu.Unlock()
		return 0, err
	}
	c.mu.Unlock()
	return c.Queue.AckFrom(sink, seq)
}

// A failing spool read is retried on the backoff schedule; a read that
// reports context.Canceled ends Run with it.
func TestForwarderReadErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newScriptSink()
		bo := &scriptBackOff{ds: []time.Duration{time.Second, 2 * time.Second}}
		var fc *faultyQueue
		r := newRig(t, sink, func(f *relay.Forwarder) {
			fc = &faultyQueue{Queue: f.Queue, readErrs: []error{errors.New("disk"), errors.New("disk")}}
			f.Queue = fc
			f.NewBackOff = func() backoff.BackOff { return bo }
		})
		t0 := time.Now()
		r.add(2)
		r.start()
		time.Sleep(time.Minute)
		wantCalls(t, sink.Calls(), t0, wantCall{3 * time.Second, seqs(1, 2)})

		fc.mu.Lock()
		fc.readErrs = []error{fmt.Errorf("read: %w", context.Canceled)}
		fc.mu.Unlock()
		r.add(1)
		synctest.Wait()
		if !r.returned() || !errors.Is(r.err, context.Canceled) {
			t.Fatalf("after a cancelled read: returned %v, err %v", r.returned(), r.err)
		}
	})
}

// A failed Ack counts nothing: the batch is offered again, and when that
// Ack works it is counted once, so the identity holds throughout.
func TestForwarderAckError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newScriptSink()
		r := newRig(t, sink, func(f *relay.Forwarder) {
			f.Queue = &faultyQueue{Queue: f.Queue, ackErrs: []error{errors.New("spool: closed")}}
		})
		t0 := time.Now()
		r.add(2)
		r.start()
		synctest.Wait()
		wantCalls(t, sink.Calls(), t0, wantCall{0, seqs(1, 2)}, wantCall{0, seqs(1, 2)})
		if snap, ss := r.check(); snap.Delivered != 2 || ss.Pending != 0 {
			t.Fatalf("delivered %d pending %d", snap.Delivered, ss.Pending)
		}
	})
}

// Init applies the documented defaults and leaves set fields alone.
func TestForwarderInitDefaults(t *testing.T) {
	mem := spool.NewMemory(0)
	f := &relay.Forwarder{Sink: newScriptSink(), Stats: relay.NewStats(), Queue: mem}
	f.Init()
	if f.Batch != relay.DefaultBatch || f.ProbeInterval != relay.DefaultProbeInterval || f.NewBackOff == nil || f.Logger == nil {
		t.Fatalf("Init left batch %d, probe %s, backoff %v, logger %v", f.Batch, f.ProbeInterval, f.NewBackOff != nil, f.Logger != nil)
	}
	if b, ok := f.NewBackOff().(*backoff.ExponentialBackOff); !ok || b.MaxElapsedTime != 0 {
		t.Fatalf("default NewBackOff gives %T %+v, want DefaultBackOff", f.NewBackOff(), f.NewBackOff())
	}
	f.Wake() // after Init, Wake and Drain must not block or panic
	f.Drain()
	f.Wake()

	g := &relay.Forwarder{Batch: 7, ProbeInterval: time.Second, Queue: mem}
	g.Init()
	if g.Batch != 7 || g.ProbeInterval != time.Second {
		t.Fatalf("Init overrode batch %d, probe %s", g.Batch, g.ProbeInterval)
	}
}
