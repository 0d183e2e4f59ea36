package trickle

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
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

// newClient returns the package's own client: HTTP/1.1 (chunked request
// bodies stream segment by segment), no overall timeout (a segment may stay
// open for SegmentInterval and a GET waits for the live edge; each request
// gets its own context instead), TLS verification off only when insecure.
func newClient(insecure bool, dial DialFunc) *http.Client {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dial,
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: insecure, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// RedactURL returns a channel URL fit for logs: no credentials, no query
// (where tokens travel), no fragment.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

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
