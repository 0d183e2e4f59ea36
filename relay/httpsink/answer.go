package httpsink

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// answerKeep is how much of a success answer is kept to read its "accepted"
// count from; the API's answer is a few dozen bytes. The rest of a longer
// answer is read (so that it is known to have arrived whole) and discarded.
const answerKeep = 4 << 10

// parseAccepted reads the "accepted" count of a success answer,
// {"status":"accepted","accepted":N} (spec/metrics-api.md). ok is false
// when the answer holds no usable count: empty (204, a bare 202), not a JSON
// object, no "accepted" member, or one that is not a whole number of at most
// nine digits. The caller then takes every event as accepted, as the spec
// treats every 2xx as success; a count over nine digits is more than any
// request carries, and reads as "all".
func parseAccepted(body []byte) (n int, ok bool) {
	var v struct {
		Accepted json.RawMessage `json:"accepted"`
	}
	if err := json.Unmarshal(body, &v); err != nil || len(v.Accepted) == 0 {
		return 0, false
	}
	d := v.Accepted
	if len(d) > 9 {
		return 0, false
	}
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// answerCut reports whether a success answer that arrived without error is
// nevertheless cut short: an HTTP/1 answer delimited by the connection's
// close (no Content-Length, not chunked) carries no length to check it
// against, so a JSON object that does not parse is taken as broken off.
// Answers with a length or chunked framing, and HTTP/2 ones, are checked by
// the transport, which reports a short body as an error.
func answerCut(resp *http.Response, kept []byte, total int64) bool {
	if resp.ProtoMajor != 1 || resp.ContentLength >= 0 || len(resp.TransferEncoding) > 0 || resp.Uncompressed {
		return false
	}
	if total > int64(len(kept)) {
		return false // longer than we keep: not ours to judge
	}
	b := bytes.TrimSpace(kept)
	return len(b) > 0 && b[0] == '{' && !json.Valid(b)
}
