// Regression tests for defects found in relay while writing its tests.

package relay_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// A batch that MaxBytes cut short must not linger: the next record is
// already waiting and does not fit, so waiting cannot fill it. Only the last
// record, alone and able to grow, lingers.
func TestBugLingerOnBatchCutByMaxBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newScriptSink()
		r := newRig(t, sink, func(f *relay.Forwarder) {
			f.Batch = 10
			f.MaxBytes = 100
			f.Linger = time.Minute
		})
		t0 := time.Now()
		r.addSized(60, 60, 60)
		r.start()
		time.Sleep(time.Hour)
		wantCalls(t, sink.Calls(), t0, wantCall{0, seqs(1, 1)}, wantCall{0, seqs(2, 2)}, wantCall{time.Minute, seqs(3, 3)})
	})
}

// A NewBackOff whose schedule ends (backoff.Stop, -1) must not make the
// forwarder retry with no wait: backoff.NewExponentialBackOff() with its
// default MaxElapsedTime (15 min) ends after a 15-minute outage.
func TestBugBackOffStopSpins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newScriptSink()
		var n int
		sink.then = func(ctx context.Context, recs []spool.Record) relay.Result {
			if n++; n > 50 {
				return blockUntilDone(ctx, recs) // let the bubble's clock go on
			}
			return relay.Result{Err: errors.New("http 503")}
		}
		r := newRig(t, sink, func(f *relay.Forwarder) {
			f.NewBackOff = func() backoff.BackOff { return &backoff.StopBackOff{} }
		})
		r.add(1)
		r.start()
		time.Sleep(time.Hour)
		calls := sink.Calls()
		if gap := calls[1].At.Sub(calls[0].At); gap <= 0 {
			t.Fatalf("retried after %s: %d Sends within %s", gap, len(calls), calls[len(calls)-1].At.Sub(calls[0].At))
		}
	})
}

// StdoutSink.Send must return when ctx is done (the Sink contract) even with
// stdout blocked by a stalled pipe reader, or the agent's shutdown would
// wait forever.
func TestBugStdoutSinkIgnoresCtx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &blockingWriter{release: make(chan struct{})}
		defer close(w.release)
		r := newRig(t, relay.NewStdoutSink(w), nil)
		r.add(1)
		r.start()
		synctest.Wait()
		r.cancel()
		synctest.Wait()
		if !r.returned() {
			t.Error("Run did not return after cancel while stdout blocks")
		}
	})
}

type blockingWriter struct{ release chan struct{} }

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

var _ io.Writer = (*blockingWriter)(nil)

// The remainder of a partially settled batch goes after the backoff, not
// after a second whole Linger as if it were new.
func TestBugRemainderLingersAfterPartialResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newScriptSink(ret(relay.Result{Settled: 3, Err: errors.New("http 503")}))
		r := newRig(t, sink, func(f *relay.Forwarder) {
			f.Batch = 5
			f.Linger = 2 * time.Second
			f.NewBackOff = constant(time.Second)
		})
		t0 := time.Now()
		r.add(5)
		r.start()
		time.Sleep(time.Minute)
		wantCalls(t, sink.Calls(), t0, wantCall{0, seqs(1, 5)}, wantCall{time.Second, seqs(4, 5)})
	})
}
