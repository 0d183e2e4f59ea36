package trickle

import (
	"net/http"
	"strconv"
)

// Protocol headers (spec/trickle.md, "Headers").
const (
	headerSeq    = "Lp-Trickle-Seq"
	headerLatest = "Lp-Trickle-Latest"
	headerClosed = "Lp-Trickle-Closed"
	headerReset  = "Lp-Trickle-Reset"
)

// statusNotHeld is trickle's "seq not held" answer to a GET.
const statusNotHeld = 470

// headerInt parses an integer header; ok is false when it is absent or bad.
func headerInt(h http.Header, name string) (int64, bool) {
	v := h.Get(name)
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// statusCode is the relay.Stats request label of an answer.
func statusCode(code int) string { return strconv.Itoa(code) }
