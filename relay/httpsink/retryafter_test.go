package httpsink

import (
	"net/http"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/relay"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	date := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"2", 2 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"899", 899 * time.Second},
		{"900", relay.MaxRetryAfter},
		{"86400", relay.MaxRetryAfter},
		{"99999999999999999999999999", relay.MaxRetryAfter}, // saturates, not "garbage"
		{"-5", 0},
		{"+5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"2s", 0},
		{date(3 * time.Second), 3 * time.Second},
		{date(-time.Hour), 0},
		{date(0), 0},
		{date(time.Hour), relay.MaxRetryAfter},
		{now.Add(7 * time.Second).Format(time.RFC850), 7 * time.Second}, // obsolete form, still accepted
		{now.Add(9 * time.Second).Format(time.ANSIC), 9 * time.Second},  // asctime form
		{"Sun, 99 Nov 1994 08:49:37 GMT", 0},                            // not a date
	}
	for _, c := range cases {
		if got := ParseRetryAfter(c.in, now); got != c.want {
			t.Errorf("ParseRetryAfter(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

// An HTTP-date has whole seconds: a "now" inside a second gives the
// fraction left to the date.
func TestParseRetryAfterSubSecondNow(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 400e6, time.UTC)
	v := time.Date(2026, 3, 1, 12, 0, 3, 0, time.UTC).Format(http.TimeFormat)
	if got, want := ParseRetryAfter(v, now), 2600*time.Millisecond; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{"", "0", "2", "120", "900", "-1", "1e3", " 7 ", now.Add(3 * time.Second).Format(http.TimeFormat), "Mon, 02 Jan 2006 15:04:05 GMT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := ParseRetryAfter(v, now)
		if d < 0 || d > relay.MaxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %s, outside [0, %s]", v, d, relay.MaxRetryAfter)
		}
		// A digits-only value (after trimming) is exactly that many seconds,
		// up to the cap.
		if tv := trimSpace(v); isDigits(tv) && len(tv) < 4 {
			n := 0
			for _, c := range tv {
				n = n*10 + int(c-'0')
			}
			if want := min(time.Duration(n)*time.Second, relay.MaxRetryAfter); d != want {
				t.Fatalf("ParseRetryAfter(%q) = %s, want %s", v, d, want)
			}
		}
	})
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t' || s[0] == '\n' || s[0] == '\r' || s[0] == '\v' || s[0] == '\f') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t' || s[len(s)-1] == '\n' || s[len(s)-1] == '\r' || s[len(s)-1] == '\v' || s[len(s)-1] == '\f') {
		s = s[:len(s)-1]
	}
	return s
}
