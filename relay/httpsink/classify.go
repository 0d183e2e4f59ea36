package httpsink

import (
	"fmt"
	"net/http"
)

// Outcome is what an HTTP status means for the events of the request that
// got it (spec/metrics-api.md, "Status classification").
type Outcome int

const (
	Success       Outcome = iota // 2xx: the events are delivered
	Poison                       // 400, 409, 415, 422: some event is refused; bisect
	TooLarge                     // 413: split; a single event still refused is dropped
	Unauthorized                 // 401, 403: pause until the key changes; keep everything
	Misconfigured                // 404, 405, 3xx: pause until the configuration is fixed
	Throttled                    // 408, 425, 429: wait Retry-After, else back off
	Transient                    // 5xx and anything else: back off and retry
)

func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Poison:
		return "poison"
	case TooLarge:
		return "too_large"
	case Unauthorized:
		return "unauthorized"
	case Misconfigured:
		return "misconfigured"
	case Throttled:
		return "throttled"
	case Transient:
		return "transient"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Classify maps an HTTP status code to its Outcome.
//
// Codes the spec does not name are our decision: a redirect means the URL
// points at the wrong place (we do not follow redirects, which would either
// strip the key or send it to another host), so it pauses like 404; any
// other unlisted code is retried with backoff, because retrying loses
// nothing while dropping would.
func Classify(code int) Outcome {
	switch {
	case code >= 200 && code <= 299:
		return Success
	case code >= 300 && code <= 399:
		return Misconfigured
	}
	switch code {
	case http.StatusBadRequest, http.StatusConflict, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
		return Poison
	case http.StatusRequestEntityTooLarge:
		return TooLarge
	case http.StatusUnauthorized, http.StatusForbidden:
		return Unauthorized
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return Misconfigured
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return Throttled
	}
	return Transient
}

// StatusError is a refusal by the peer: its status code and the start of its
// answer (with the key blanked out, should the peer echo it).
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("metrics API answered %d %s", e.Code, http.StatusText(e.Code))
	}
	return fmt.Sprintf("metrics API answered %d %s: %q", e.Code, http.StatusText(e.Code), e.Body)
}
