package relay_test

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

func records(data ...string) []spool.Record {
	recs := make([]spool.Record, len(data))
	for i, d := range data {
		recs[i] = spool.Record{Seq: uint64(i + 1), Data: []byte(d)}
	}
	return recs
}

func lines(data ...string) string { return strings.Join(data, "\n") + "\n" }

// Each record is written as its exact bytes and one '\n', nothing else.
func TestStdoutSinkExactBytes(t *testing.T) {
	var out bytes.Buffer
	s := relay.NewStdoutSink(&out)
	batch1 := []string{`{"id":"a","n":1}`, `{"x":"y z\t"}`, "\xff\x00raw", ""}
	if res := s.Send(t.Context(), records(batch1...)); res.Settled != 4 || res.Err != nil || res.Dropped != nil {
		t.Fatalf("Send = %+v, want Done(4)", res)
	}
	if got, want := out.String(), lines(batch1...); got != want {
		t.Fatalf("wrote %q, want %q", got, want)
	}
	if res := s.Send(t.Context(), nil); res.Settled != 0 || res.Err != nil {
		t.Fatalf("empty Send = %+v", res)
	}
	if res := s.Send(t.Context(), records(`{"b":2}`)); res.Settled != 1 || res.Err != nil {
		t.Fatalf("Send = %+v, want Done(1)", res)
	}
	if got, want := out.String(), lines(append(batch1, `{"b":2}`)...); got != want {
		t.Fatalf("wrote %q, want %q", got, want)
	}
}

// A batch larger than the 64 KiB buffer is written whole and in order.
func TestStdoutSinkLargeBatch(t *testing.T) {
	var out bytes.Buffer
	s := relay.NewStdoutSink(&out)
	big := []string{strings.Repeat("a", 40<<10), strings.Repeat("b", 40<<10), strings.Repeat("c", 100<<10)}
	if res := s.Send(t.Context(), records(big...)); res.Settled != 3 || res.Err != nil {
		t.Fatalf("Send = %+v", res)
	}
	if out.String() != lines(big...) {
		t.Fatalf("wrote %d bytes, want the %d of the batch", out.Len(), len(lines(big...)))
	}
}

// flakyWriter, while failing, accepts up to budget bytes in total and then
// fails every write.
type flakyWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	fail   bool
	budget int
}

var errPipe = errors.New("write |1: broken pipe")

func (w *flakyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.fail || len(p) <= w.budget {
		w.budget -= len(p)
		return w.buf.Write(p)
	}
	n := w.budget
	w.budget -= n
	w.buf.Write(p[:n])
	return n, errPipe
}

func (w *flakyWriter) set(fail bool, budget int) {
	w.mu.Lock()
	w.fail, w.budget = fail, budget
	w.mu.Unlock()
}

func (w *flakyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// A failing writer: Send settles nothing and returns the error; once the
// writer recovers the next Send works and writes only its own batch, none of
// what was left buffered from the failed one.
func TestStdoutSinkWriteError(t *testing.T) {
	big := strings.Repeat("x", 40<<10)
	for _, tc := range []struct {
		name   string
		failed []string // the batch that fails
		budget int      // bytes the writer takes before failing
		next   []string // the batch sent after recovery
	}{
		{"nothing written", []string{"one", "two"}, 0, []string{"three"}},
		{"part written", []string{"one", "two"}, 5, []string{"three"}},
		{"larger than the buffer", []string{big, big, big}, 0, []string{"four", "five"}},
		{"larger than the buffer, part written", []string{big, big, big}, 70 << 10, []string{"four"}},
		{"retry of the same batch", []string{"one", "two"}, 2, []string{"one", "two"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &flakyWriter{}
			s := relay.NewStdoutSink(w)
			w.set(true, tc.budget)
			res := s.Send(t.Context(), records(tc.failed...))
			if res.Settled != 0 || !errors.Is(res.Err, errPipe) || res.Dropped != nil {
				t.Fatalf("Send to a failing writer = %+v, want 0 settled and the write error", res)
			}
			partial := w.String()
			if len(partial) != min(tc.budget, len(lines(tc.failed...))) || !strings.HasPrefix(lines(tc.failed...), partial) {
				t.Fatalf("failing writer got %d bytes, want the first %d of the batch", len(partial), tc.budget)
			}

			w.set(false, 0)
			if res := s.Send(t.Context(), records(tc.next...)); res.Settled != len(tc.next) || res.Err != nil {
				t.Fatalf("Send after recovery = %+v", res)
			}
			if got, want := w.String(), partial+lines(tc.next...); got != want {
				t.Fatalf("after recovery the writer holds %d bytes, want %d: the failed batch's remainder leaked", len(got), len(want))
			}
		})
	}
}

// Through a forwarder: a write error is transient, the batch is written
// again after the backoff, and the output is every line once, in order.
func TestStdoutSinkForwarder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &flakyWriter{fail: true}
		r := newRig(t, relay.NewStdoutSink(w), func(f *relay.Forwarder) {
			f.NewBackOff = constant(time.Second)
		})
		r.add(3)
		r.start()
		synctest.Wait()
		if snap, ss := r.check(); snap.Retries["transient"] != 1 || ss.Pending != 3 {
			t.Fatalf("retries %v pending %d after a write error", snap.Retries, ss.Pending)
		}
		w.set(false, 0)
		time.Sleep(time.Second)
		synctest.Wait()
		if got, want := w.String(), lines("rec-0001", "rec-0002", "rec-0003"); got != want {
			t.Fatalf("stdout %q, want %q", got, want)
		}
		if snap, ss := r.check(); snap.Delivered != 3 || ss.Pending != 0 {
			t.Fatalf("delivered %d pending %d", snap.Delivered, ss.Pending)
		}
	})
}
