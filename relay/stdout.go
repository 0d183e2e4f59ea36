package relay

import (
	"bufio"
	"context"
	"io"

	"github.com/livepeer/edgerelay/spool"
)

// StdoutSink writes one envelope per line: exactly the stored bytes followed
// by '\n'. It is the demo's sink and a debugging aid (pipe it into jq).
//
// Writes run in a helper goroutine so that Send returns when ctx ends even
// if stdout blocks (a stalled pipe reader must not hang shutdown). A write
// still blocked then is waited for by the next Send. Not safe for
// concurrent Sends (the forwarder makes one at a time).
type StdoutSink struct {
	out      io.Writer
	w        *bufio.Writer
	inflight chan error // the last write, when Send returned before it ended
}

// NewStdoutSink writes to w (os.Stdout in the agent).
func NewStdoutSink(w io.Writer) *StdoutSink {
	return &StdoutSink{out: w, w: bufio.NewWriterSize(w, 64<<10)}
}

// Send writes the batch and flushes it. A write error leaves the whole batch
// unsettled: some lines may have been written, so a retry can duplicate them,
// which envelope ids make harmless downstream.
func (s *StdoutSink) Send(ctx context.Context, recs []spool.Record) Result {
	if s.inflight != nil { // a write abandoned by a cancelled Send
		select {
		case err := <-s.inflight:
			s.inflight = nil
			if err != nil {
				s.w.Reset(s.out)
			}
		case <-ctx.Done():
			return Result{Err: ctx.Err()}
		}
	}
	done := make(chan error, 1)
	go func() {
		for _, r := range recs {
			s.w.Write(r.Data)
			s.w.WriteByte('\n')
		}
		done <- s.w.Flush()
	}()
	select {
	case err := <-done:
		if err != nil {
			s.w.Reset(s.out) // drop the buffered remainder; the batch is resent whole
			return Result{Err: err}
		}
		return Done(len(recs))
	case <-ctx.Done():
		s.inflight = done
		return Result{Err: ctx.Err()}
	}
}
