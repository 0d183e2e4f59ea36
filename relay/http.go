package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/livepeer/edgerelay/internal/promptio"
)

// DialFunc dials a connection; it has the signature of
// net.Dialer.DialContext. Tests use in-memory listeners.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// HTTPClientOptions configures NewHTTPClient.
type HTTPClientOptions struct {
	// Insecure turns TLS certificate verification off. It is an explicit
	// opt-in of the operator (self-signed orchestrators), never a default.
	Insecure bool
	// HTTP2 lets the transport negotiate HTTP/2 over TLS. Trickle keeps
	// HTTP/1.1: its servers stream segment bodies per connection.
	HTTP2 bool
	// Dial replaces the dialer; nil means net.Dialer with a 10 s timeout.
	Dial DialFunc
	// PromptAnswers has the connections watched while an answer is
	// awaited, so that ingest's CPU-bound loops get it read at once
	// (internal/promptio). For a sink whose pace is its answers' round
	// trip: the HTTP sink's lanes. A connection that mostly waits for
	// data (a subscription) or streams a body (a trickle segment) gains
	// nothing from it and would only be polled.
	PromptAnswers bool
}

// NewHTTPClient returns the client of every sink that speaks HTTP: our own
// transport (never http.DefaultClient), keep-alive to the one peer, TLS 1.2
// at least, bounded dial and handshake, and no redirects: following one
// would either drop the credentials or hand them to another host. It sets
// no overall timeout; each request carries its own context deadline.
func NewHTTPClient(o HTTPClientOptions) *http.Client {
	dial := o.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	if o.PromptAnswers {
		dial = DialFunc(promptio.Dial(promptio.DialFunc(dial)))
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           dial,
			ForceAttemptHTTP2:     o.HTTP2,
			MaxIdleConns:          8,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.Insecure},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// RedactURL returns a URL fit for logs and errors: scheme, host and path
// only. Credentials, the query (where API keys and tokens often travel) and
// the fragment are dropped whole.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// RedactAddr returns a host:port (a Kafka broker) fit for logs and errors:
// whatever comes before an '@' (credentials written into the address) is
// replaced by "…@".
func RedactAddr(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return "…@" + addr[i+1:]
	}
	return addr
}

// RedactError returns err with the URL of the *url.Error inside it (what
// http.Client returns, which keeps the query) redacted by RedactURL, so the
// error can be logged or returned. A *url.Error comes back as a *url.Error;
// one wrapped in other errors comes back as an error with the same text, the
// URL redacted, that unwraps to the redacted *url.Error (so errors.Is still
// finds a timeout or a cancelled context). Other errors are returned as they
// are.
func RedactError(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	red := &url.Error{Op: ue.Op, URL: RedactURL(ue.URL), Err: ue.Err}
	if err == error(ue) {
		return red
	}
	msg := err.Error()
	if ue.URL != "" {
		msg = strings.ReplaceAll(msg, strconv.Quote(ue.URL), strconv.Quote(red.URL))
		msg = strings.ReplaceAll(msg, ue.URL, red.URL)
	}
	return &redactedError{msg: msg, err: red}
}

// redactedError is a wrapped *url.Error with its URL redacted in the text.
type redactedError struct {
	msg string
	err *url.Error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// RequestCode is the edgerelay_sink_requests_total code of a request that
// got no HTTP answer.
func RequestCode(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return "canceled"
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return "timeout"
	}
	return "error"
}

// ParseRetryAfter reads a Retry-After header value (RFC 9110 §10.2.3):
// delta-seconds or an HTTP-date, taken relative to now. A date in the past,
// a negative number and garbage give 0 (no delay asked); the result is
// capped at MaxRetryAfter so a broken peer cannot park the sink.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if isDigits(v) {
		// Parse by hand so a huge number saturates at the cap instead of
		// failing as out of range.
		const capSec = int64(MaxRetryAfter / time.Second)
		var n int64
		for i := 0; i < len(v); i++ {
			n = n*10 + int64(v[i]-'0')
			if n >= capSec {
				return MaxRetryAfter
			}
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return min(d, MaxRetryAfter)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
