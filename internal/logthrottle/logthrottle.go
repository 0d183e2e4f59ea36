// Package logthrottle keeps a repeated log line to a few per interval: an
// outage or a flood of drops logs a few lines a minute, not one per retry,
// and each line can say how many were held back. It is the one throttle of
// the project.
package logthrottle

import "time"

// Throttle lets burst lines through per interval and counts the rest. It is
// not safe for concurrent use; its owner guards it.
type Throttle struct {
	every  time.Duration
	burst  int
	start  time.Time
	used   int
	missed int
}

// New allows burst lines (at least 1) per every.
func New(every time.Duration, burst int) *Throttle {
	return &Throttle{every: every, burst: max(burst, 1)}
}

// Allow reports whether a line may be logged now.
func (t *Throttle) Allow() bool { return t.AllowAt(time.Now()) }

// AllowAt is Allow at the given time (a component with its own clock).
func (t *Throttle) AllowAt(now time.Time) bool {
	if t.start.IsZero() || now.Sub(t.start) >= t.every {
		t.start, t.used = now, 0
	}
	if t.used < t.burst {
		t.used++
		return true
	}
	t.missed++
	return false
}

// Suppressed returns how many lines were held back since it was last called.
func (t *Throttle) Suppressed() int { n := t.missed; t.missed = 0; return n }

// Reset lets the next line through (after a recovery, so the next failure
// is logged at once).
func (t *Throttle) Reset() { t.start, t.used, t.missed = time.Time{}, 0, 0 }

// Keyed is one line per key per interval (per GPU, per device slot). Not
// safe for concurrent use.
type Keyed struct {
	every time.Duration
	m     map[string]*Throttle
}

// NewKeyed allows one line per key per every.
func NewKeyed(every time.Duration) *Keyed {
	return &Keyed{every: every, m: map[string]*Throttle{}}
}

// Allow reports whether a line about key may be logged now.
func (k *Keyed) Allow(key string) bool {
	t := k.m[key]
	if t == nil {
		t = New(k.every, 1)
		k.m[key] = t
	}
	return t.Allow()
}
