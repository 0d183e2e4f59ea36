package relay

import "time"

// LogThrottle lets Burst lines through per interval and counts the rest, so
// an outage or a flood of drops logs a few lines a minute, not one per
// retry. It is not safe for concurrent use; its owner guards it.
type LogThrottle struct {
	every  time.Duration
	burst  int
	start  time.Time
	used   int
	missed int
}

// NewLogThrottle allows burst lines (at least 1) per every.
func NewLogThrottle(every time.Duration, burst int) *LogThrottle {
	return &LogThrottle{every: every, burst: max(burst, 1)}
}

// Allow reports whether a line may be logged now.
func (l *LogThrottle) Allow() bool {
	now := time.Now()
	if l.start.IsZero() || now.Sub(l.start) >= l.every {
		l.start, l.used = now, 0
	}
	if l.used < l.burst {
		l.used++
		return true
	}
	l.missed++
	return false
}

// Suppressed returns how many lines were held back since it was last called.
func (l *LogThrottle) Suppressed() int { n := l.missed; l.missed = 0; return n }

// Reset lets the next line through (after a recovery, so the next failure
// is logged at once).
func (l *LogThrottle) Reset() { l.start, l.used, l.missed = time.Time{}, 0, 0 }
