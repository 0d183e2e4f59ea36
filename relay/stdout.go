package relay

import (
	"bufio"
	"context"
	"io"

	"github.com/livepeer/edgerelay/spool"
)

// StdoutSink writes one envelope per line: exactly the stored bytes followed
// by '\n'. It is the demo's sink and a debugging aid (pipe it into jq).
type StdoutSink struct {
	out io.Writer
	w   *bufio.Writer
}

// NewStdoutSink writes to w (os.Stdout in the agent).
func NewStdoutSink(w io.Writer) *StdoutSink {
	return &StdoutSink{out: w, w: bufio.NewWriterSize(w, 64<<10)}
}

// Send writes the batch and flushes it. A write error leaves the whole batch
// unsettled: some lines may have been written, so a retry can duplicate them,
// which envelope ids make harmless downstream.
func (s *StdoutSink) Send(ctx context.Context, recs []spool.Record) Result {
	for _, r := range recs {
		s.w.Write(r.Data)
		s.w.WriteByte('\n')
	}
	if err := s.w.Flush(); err != nil {
		s.w.Reset(s.out) // drop the buffered remainder; the batch is resent whole
		return Result{Err: err}
	}
	return Done(len(recs))
}
