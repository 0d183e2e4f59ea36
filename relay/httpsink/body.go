package httpsink

import (
	"encoding/json"

	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/spool"
)

// bodySuffix closes the events array and the wrapper object.
const bodySuffix = "]}"

// bodyPrefix returns `{"app":<app>,"host":<host>,"events":[`, the part of
// every body that does not depend on the batch.
func bodyPrefix(app, host string) []byte {
	a, _ := json.Marshal(app) // a string always marshals
	h, _ := json.Marshal(host)
	p := make([]byte, 0, len(a)+len(h)+32)
	p = append(p, `{"app":`...)
	p = append(p, a...)
	p = append(p, `,"host":`...)
	p = append(p, h...)
	p = append(p, `,"events":[`...)
	return p
}

// appendBody appends the request body for recs to dst: the prefix, the
// stored envelope bytes joined by commas, and the suffix. The envelopes are
// not decoded: they were validated when accepted and are sent verbatim.
func appendBody(dst, prefix []byte, recs []spool.Record) []byte {
	dst = append(dst, prefix...)
	for i, r := range recs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, r.Data...)
	}
	return append(dst, bodySuffix...)
}

// bodySize is len(appendBody(nil, prefix, recs)) for n records holding
// dataBytes bytes of envelopes in all.
func bodySize(prefixLen, n, dataBytes int) int {
	commas := 0
	if n > 1 {
		commas = n - 1
	}
	return prefixLen + dataBytes + commas + len(bodySuffix)
}

// requestSize is len(appendBody(nil, prefix, recs)).
func requestSize(prefix []byte, recs []spool.Record) int {
	n := 0
	for _, r := range recs {
		n += len(r.Data)
	}
	return bodySize(len(prefix), len(recs), n)
}

// maxIDLen bounds an id quoted in a log line: ids are UUIDs, and a producer's
// odd id must not flood the log.
const maxIDLen = 128

// envelopeID returns the top-level "id" of a stored envelope for a log
// line, or "" when the bytes hold none; an odd id is cut at maxIDLen.
func envelopeID(data []byte) string {
	id, _ := envelope.ID(data)
	if len(id) > maxIDLen {
		id = id[:maxIDLen]
	}
	return string(id)
}

// MaxEventBytes is the largest envelope a sink with options o can deliver
// (one event alone in a request of MaxBody): the agent refuses larger events
// at ingest, so none it acknowledges is dropped here as oversize.
func MaxEventBytes(o Options) int {
	d := o.withDefaults()
	return d.MaxBody - bodySize(len(bodyPrefix(d.App, d.Host)), 1, 0)
}
