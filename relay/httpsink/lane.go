package httpsink

import (
	"bytes"
	"compress/gzip"
	"io"
	"time"

	"github.com/livepeer/edgerelay/internal/logthrottle"
	"github.com/livepeer/edgerelay/relay"
)

// Lane returns a sink for one more request in flight (relay.LaneSink, used
// by relay.Forwarder with Inflight > 1). The lane shares s's URL, HTTP
// client and its connections, key, request budget (one token bucket for
// all lanes, so the rate holds however many requests are in flight), body
// limit learned from 413s and counters; it has its own request buffers and its
// own throttle for drop log lines. Like s, a lane is used by one goroutine
// at a time.
func (s *Sink) Lane() relay.Sink {
	l := *s
	l.own()
	return &l
}

// own gives s the state its Send goroutine owns, fresh: request and answer
// buffers, the gzip writer, the drop log throttle. New and Lane call it.
func (s *Sink) own() {
	s.answer = make([]byte, 0, answerKeep)
	s.buf = nil
	s.zbuf = bytes.Buffer{}
	s.zw = nil
	if s.gzip {
		// BestSpeed: the node's CPU belongs to the GPU workload, and JSON
		// compresses well at any level.
		s.zw, _ = gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // the level is valid
	}
	s.dropLog = logthrottle.New(time.Minute, dropLogPerMin)
	s.misconfLogged = false
}
