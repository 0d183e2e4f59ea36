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
// all lanes, so the rate holds however many requests are in flight) and
// counters; it has its own request buffers and its own throttle for drop
// log lines. Like s, a lane is used by one goroutine at a time.
func (s *Sink) Lane() relay.Sink {
	l := *s
	l.buf = nil
	l.zbuf = bytes.Buffer{}
	if s.gzip {
		l.zw, _ = gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // the level is valid
	}
	l.dropLog = logthrottle.New(time.Minute, dropLogPerMin)
	l.misconfLogged = false
	return &l
}
