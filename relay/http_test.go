package relay_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
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
		if got := relay.ParseRetryAfter(c.in, now); got != c.want {
			t.Errorf("relay.ParseRetryAfter(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

// An HTTP-date has whole seconds: a "now" inside a second gives the
// fraction left to the date.
func TestParseRetryAfterSubSecondNow(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 400e6, time.UTC)
	v := time.Date(2026, 3, 1, 12, 0, 3, 0, time.UTC).Format(http.TimeFormat)
	if got, want := relay.ParseRetryAfter(v, now), 2600*time.Millisecond; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{"", "0", "2", "120", "900", "-1", "1e3", " 7 ", now.Add(3 * time.Second).Format(http.TimeFormat), "Mon, 02 Jan 2006 15:04:05 GMT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := relay.ParseRetryAfter(v, now)
		if d < 0 || d > relay.MaxRetryAfter {
			t.Fatalf("relay.ParseRetryAfter(%q) = %s, outside [0, %s]", v, d, relay.MaxRetryAfter)
		}
		// A digits-only value (after trimming) is exactly that many seconds,
		// up to the cap.
		if tv := trimSpace(v); tv != "" && strings.Trim(tv, "0123456789") == "" && len(tv) < 4 {
			n := 0
			for _, c := range tv {
				n = n*10 + int(c-'0')
			}
			if want := min(time.Duration(n)*time.Second, relay.MaxRetryAfter); d != want {
				t.Fatalf("relay.ParseRetryAfter(%q) = %s, want %s", v, d, want)
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

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@api.example/v1/metrics?key=s3cret&x=1#frag": "https://api.example/v1/metrics",
		"http://127.0.0.1:8935/ai/trickle/abc-events":                "http://127.0.0.1:8935/ai/trickle/abc-events",
		"https://h/p?": "https://h/p",
		"::not a url":  "(unparsable URL)",
	} {
		if got := relay.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactError(t *testing.T) {
	_, err := relay.NewHTTPClient(relay.HTTPClientOptions{}).Get("http://127.0.0.1:1/v1/metrics?api_key=s3cret")
	if err == nil {
		t.Skip("something answered on 127.0.0.1:1")
	}
	if got := relay.RedactError(err).Error(); strings.Contains(got, "s3cret") || !strings.Contains(got, "127.0.0.1:1/v1/metrics") {
		t.Fatalf("redacted error %q", got)
	}
}

// TestRedactErrorWrapped: a *url.Error wrapped in other errors keeps the
// wrappers' text, loses the query and user info, and still unwraps to a
// timeout.
func TestRedactErrorWrapped(t *testing.T) {
	ue := &url.Error{Op: "Post", URL: "https://u:pw-s3cret@api.example/v1/metrics?api_key=q-s3cret", Err: os.ErrDeadlineExceeded}
	err := fmt.Errorf("metrics request (3 events): %w", ue)
	red := relay.RedactError(err)
	want := `metrics request (3 events): Post "https://api.example/v1/metrics": i/o timeout`
	if red.Error() != want {
		t.Errorf("got %q\nwant %q", red.Error(), want)
	}
	var got *url.Error
	if !errors.As(red, &got) || got.URL != "https://api.example/v1/metrics" || !errors.Is(red, os.ErrDeadlineExceeded) {
		t.Errorf("unwraps to %+v", got)
	}
	if direct := relay.RedactError(ue); direct.Error() != `Post "https://api.example/v1/metrics": i/o timeout` {
		t.Errorf("direct: %q", direct.Error())
	}
	if plain := errors.New("x"); relay.RedactError(plain) != plain {
		t.Error("an error without a URL changed")
	}
}

func TestRedactAddr(t *testing.T) {
	for in, want := range map[string]string{"kafka-1:9092": "kafka-1:9092", "user:pw@kafka-1:9092": "…@kafka-1:9092", "": ""} {
		if got := relay.RedactAddr(in); got != want {
			t.Errorf("RedactAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzRedactURL: whatever the input, the result carries no query, user info
// or fragment, and the redacted text of an error holding the URL shows
// neither the query nor the password.
func FuzzRedactURL(f *testing.F) {
	for _, s := range []string{
		"https://user:pw@api.example/v1/metrics?key=s3cret&x=1#frag",
		"http://127.0.0.1:8935/ai/trickle/abc-events",
		"https://h/p?", "::not a url", "http://h/%zz?k=v", "https://h/a%3Fb?c=d", "//h/p?q", "http://[::1]:80/?a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		out := relay.RedactURL(raw)
		if out == "(unparsable URL)" {
			return
		}
		u, err := url.Parse(out)
		if err != nil {
			t.Fatalf("RedactURL(%q) = %q, which does not parse: %v", raw, out, err)
		}
		if u.RawQuery != "" || u.User != nil || u.Fragment != "" {
			t.Fatalf("RedactURL(%q) = %q keeps a query, user info or fragment", raw, out)
		}
		in, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("RedactURL(%q) = %q for a URL that does not parse", raw, out)
		}
		red := relay.RedactError(fmt.Errorf("ctx: %w", &url.Error{Op: "Post", URL: raw, Err: errors.New("boom")})).Error()
		if in.RawQuery != "" && strings.Contains(red, "?"+in.RawQuery) {
			t.Fatalf("query %q in %q", in.RawQuery, red)
		}
		if pw, ok := in.User.Password(); ok && strings.Contains(red, ":"+pw+"@") {
			t.Fatalf("password %q in %q", pw, red)
		}
	})
}

// Only a client asked for prompt answers watches its connections (the
// HTTP sink's); the others dial plain sockets that nothing polls.
func TestPromptAnswersWatchesOnlyWhenAsked(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, prompt := range []bool{false, true} {
		tr := relay.NewHTTPClient(relay.HTTPClientOptions{PromptAnswers: prompt}).Transport.(*http.Transport)
		c, err := tr.DialContext(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, plain := c.(*net.TCPConn)
		if plain == prompt && runtime.GOOS == "linux" {
			t.Errorf("PromptAnswers %v: dialed %T", prompt, c)
		}
		c.Close()
	}
}
