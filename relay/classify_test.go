package relay_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/relay"
)

// Classify is the one place that decides how the forwarder reacts; every
// class, the Retry-After clamp and the precedence between wrapped types.
func TestClassify(t *testing.T) {
	throttled := func(d time.Duration) error {
		return fmt.Errorf("http 429: %w", &relay.ThrottledError{RetryAfter: d, Err: errors.New("rate")})
	}
	for _, tc := range []struct {
		name  string
		err   error
		class relay.Class
		after time.Duration
	}{
		{"nil", nil, relay.ClassSuccess, 0},
		{"plain error", errors.New("connection refused"), relay.ClassTransient, 0},
		{"io.EOF", io.EOF, relay.ClassTransient, 0},
		{"deadline wrapped", fmt.Errorf("post: %w", context.DeadlineExceeded), relay.ClassTransient, 0},
		{"canceled", context.Canceled, relay.ClassTransient, 0},
		{"throttled negative", throttled(-5 * time.Second), relay.ClassThrottled, 0},
		{"throttled zero", throttled(0), relay.ClassThrottled, 0},
		{"throttled 2s", throttled(2 * time.Second), relay.ClassThrottled, 2 * time.Second},
		{"throttled at cap", throttled(relay.MaxRetryAfter), relay.ClassThrottled, 15 * time.Minute},
		{"throttled above cap", throttled(time.Hour), relay.ClassThrottled, 15 * time.Minute},
		{"throttled bare", &relay.ThrottledError{RetryAfter: time.Second}, relay.ClassThrottled, time.Second},
		{"paused wrapped", fmt.Errorf("http 401: %w", &relay.PausedError{Reason: "unauthorized", Err: errors.New("bad key")}), relay.ClassPaused, 0},
		{"paused nil inner", &relay.PausedError{Reason: "misconfigured"}, relay.ClassPaused, 0},
		{"closed", relay.ErrClosed, relay.ClassClosed, 0},
		{"closed wrapped", fmt.Errorf("trickle 404: %w", relay.ErrClosed), relay.ClassClosed, 0},
		{"closed joined with transient", errors.Join(errors.New("eof"), relay.ErrClosed), relay.ClassClosed, 0},
		// ErrClosed is tested first (relay.go Classify): a destination that is
		// gone for good must stop the forwarder, not park it in a pause.
		{"paused wrapping closed", &relay.PausedError{Reason: "unauthorized", Err: relay.ErrClosed}, relay.ClassClosed, 0},
		{"throttled wrapping closed", &relay.ThrottledError{RetryAfter: time.Minute, Err: relay.ErrClosed}, relay.ClassClosed, 0},
		// A pause wins over throttling: probing, not a Retry-After, ends it.
		{"throttled wrapping paused", &relay.ThrottledError{RetryAfter: time.Minute, Err: &relay.PausedError{Reason: "unauthorized"}}, relay.ClassPaused, 0},
		{"paused wrapping throttled", &relay.PausedError{Reason: "unauthorized", Err: &relay.ThrottledError{RetryAfter: time.Minute}}, relay.ClassPaused, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			class, after := relay.Classify(tc.err)
			if class != tc.class || after != tc.after {
				t.Fatalf("Classify(%v) = %s, %s; want %s, %s", tc.err, class, after, tc.class, tc.after)
			}
		})
	}
}

func TestClassString(t *testing.T) {
	for c, want := range map[relay.Class]string{
		relay.ClassSuccess:   "success",
		relay.ClassTransient: "transient",
		relay.ClassThrottled: "throttled",
		relay.ClassPaused:    "paused",
		relay.ClassClosed:    "closed",
		relay.Class(42):      "class(42)",
	} {
		if got := c.String(); got != want {
			t.Errorf("Class(%d).String() = %q, want %q", int(c), got, want)
		}
	}
}

// The typed errors unwrap to their cause and say what they are.
func TestTypedErrors(t *testing.T) {
	cause := errors.New("cause")
	te := &relay.ThrottledError{RetryAfter: 2 * time.Second, Err: cause}
	pe := &relay.PausedError{Reason: "unauthorized", Err: cause}
	if !errors.Is(te, cause) || !errors.Is(pe, cause) {
		t.Fatal("typed errors do not unwrap to their cause")
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{te, "throttled (retry after 2s): cause"},
		{&relay.ThrottledError{Err: cause}, "throttled: cause"},
		{pe, "paused (unauthorized): cause"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
