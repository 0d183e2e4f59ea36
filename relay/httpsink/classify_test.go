package httpsink

import (
	"errors"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/relay"
)

// TestClassify covers every row of spec/metrics-api.md's table, plus the
// codes the spec leaves to us.
func TestClassify(t *testing.T) {
	rows := []struct {
		row   string
		codes []int
		want  Outcome
	}{
		{"2xx success", []int{200, 201, 202, 203, 204, 206, 299}, Success},
		{"400/422/409/415 poison", []int{400, 422, 409, 415}, Poison},
		{"401/403 unauthorized", []int{401, 403}, Unauthorized},
		{"404/405 misconfigured", []int{404, 405}, Misconfigured},
		{"408/425/429 throttled", []int{408, 425, 429}, Throttled},
		{"413 too large", []int{413}, TooLarge},
		{"5xx transient", []int{500, 501, 502, 503, 504, 507, 599}, Transient},
		// Ours: a redirect means a wrong URL; anything else unlisted is retried.
		{"3xx misconfigured (ours)", []int{300, 301, 302, 307, 308}, Misconfigured},
		{"other transient (ours)", []int{0, 100, 199, 402, 406, 407, 410, 411, 412, 414, 418, 421, 426, 428, 431, 451, 600}, Transient},
	}
	for _, r := range rows {
		t.Run(r.row, func(t *testing.T) {
			for _, c := range r.codes {
				if got := Classify(c); got != r.want {
					t.Errorf("Classify(%d) = %v, want %v", c, got, r.want)
				}
			}
		})
	}
}

// TestClassifyMapsToForwarder checks that the error post returns for each
// outcome makes relay.Classify react as the spec's table says.
func TestClassifyMapsToForwarder(t *testing.T) {
	serr := &StatusError{Code: 429}
	cases := []struct {
		name  string
		err   error
		class relay.Class
		wait  time.Duration
	}{
		{"throttled with Retry-After", &relay.ThrottledError{RetryAfter: 3 * time.Second, Err: serr}, relay.ClassThrottled, 3 * time.Second},
		{"unauthorized", &relay.PausedError{Reason: PauseUnauthorized, Err: serr}, relay.ClassPaused, 0},
		{"misconfigured", &relay.PausedError{Reason: PauseMisconfigured, Err: serr}, relay.ClassPaused, 0},
		{"5xx", &StatusError{Code: 503}, relay.ClassTransient, 0},
	}
	for _, c := range cases {
		class, wait := relay.Classify(c.err)
		if class != c.class || wait != c.wait {
			t.Errorf("%s: relay.Classify = %v, %s; want %v, %s", c.name, class, wait, c.class, c.wait)
		}
		var se *StatusError
		if !errors.As(c.err, &se) {
			t.Errorf("%s: StatusError not reachable with errors.As", c.name)
		}
	}
}
