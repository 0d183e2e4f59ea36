package httpsink

import (
	"net/http"
	"strings"
	"time"

	"github.com/livepeer/edgerelay/relay"
)

// ParseRetryAfter reads a Retry-After header value (RFC 9110 §10.2.3):
// delta-seconds or an HTTP-date, taken relative to now. A date in the past,
// a negative number and garbage give 0 (no delay asked); the result is
// capped at relay.MaxRetryAfter so a broken peer cannot park the sink.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if isDigits(v) {
		// Parse by hand so a huge number saturates at the cap instead of
		// failing as out of range.
		const capSec = int64(relay.MaxRetryAfter / time.Second)
		var n int64
		for i := 0; i < len(v); i++ {
			n = n*10 + int64(v[i]-'0')
			if n >= capSec {
				return relay.MaxRetryAfter
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
	return min(d, relay.MaxRetryAfter)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
