package httpsink

import (
	"sync"
	"time"
)

// ReprobeAfter is how long a body limit learned from a 413 holds before the
// sink tries a body a quarter larger (spec/metrics-api.md: 413 is "too
// large"; the API's limit can change, and it says nothing of it but 413).
// A probe that is refused costs one request and the split that follows, at
// most once per ReprobeAfter: under 1% of the API's 30 requests a minute.
const ReprobeAfter = 10 * time.Minute

// bodyLimit is the request body size, in uncompressed bytes, that the sink
// cuts batches at. It starts at Options.MaxBody and never exceeds it.
//
// A 413 for a body of n bytes makes n the smallest size known refused (hi)
// and lowers the limit to the larger of hi/2 and the largest body accepted
// below hi (good): a bisection that narrows with each refusal, so the next
// batches go out at a size the API takes without spending a request to find
// out. A request of hi bytes or more is split without being sent. A body of
// hi bytes or more that is accepted after all (the API's limit went up, or
// the 413 was not about size) forgets hi; a refusal at or below good forgets
// good (the API's limit went down). Every ReprobeAfter after it last went
// down or up, the limit grows by a quarter and hi is forgotten, until it is
// back at MaxBody; a refused probe costs one 413.
//
// It is shared by a sink's lanes and safe for concurrent use.
type bodyLimit struct {
	max int // Options.MaxBody

	mu      sync.Mutex // guards the rest
	cur     int        // the size requests are cut at
	hi      int        // the smallest body refused with 413 since the last probe upward; 0 none
	good    int        // the largest body accepted below hi; 0 none
	changed time.Time  // when cur last went down, or up by a probe
}

// minLimit is the floor of a learned limit: a request this small that is
// refused is refused for an event in it, which splitting finds.
const minLimit = minMaxBody

func newBodyLimit(maxBody int) *bodyLimit { return &bodyLimit{max: maxBody, cur: maxBody} }

// at returns the limit for requests made at now, raising it first when a
// probe upward is due. raised reports that it did.
func (l *bodyLimit) at(now time.Time) (n int, raised bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur < l.max && now.Sub(l.changed) >= ReprobeAfter {
		l.cur = min(l.cur+l.cur/4, l.max)
		l.hi = 0
		l.changed = now
		raised = true
	}
	return l.cur, raised
}

// refusedBefore reports whether a body of size bytes is known to be too
// large: a body no larger was refused.
func (l *bodyLimit) refusedBefore(size int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refusedBeforeLocked(size)
}

func (l *bodyLimit) refusedBeforeLocked(size int) bool { return l.hi > 0 && size >= l.hi }

// current returns the limit without probing upward: the one a Send started
// at, or lower after a 413 since (in this lane or another).
func (l *bodyLimit) current() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// refused records a 413 for a body of size bytes and returns the limit
// after it and whether it went down.
func (l *bodyLimit) refused(size int, now time.Time) (cur int, changed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hi == 0 || size < l.hi {
		l.hi = size
	}
	if l.good >= l.hi {
		l.good = 0 // it refuses what it took before: its limit went down
	}
	old := l.cur
	l.cur = l.learned()
	if l.cur < old {
		l.changed = now
		return l.cur, true
	}
	return l.cur, false
}

// accepted records a 2xx for a body of size bytes.
func (l *bodyLimit) accepted(size int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refusedBeforeLocked(size) {
		l.hi = 0
	}
	l.good = max(l.good, size)
	switch {
	case l.hi > 0:
		l.cur = max(l.cur, l.learned())
	case size > l.cur:
		l.cur = min(size, l.max) // one event alone, larger than the limit, was taken
	}
}

// learned is the limit that the refusal hi and the acceptance good imply;
// l.mu is held.
func (l *bodyLimit) learned() int {
	return min(max(l.good, l.hi/2, minLimit), l.max)
}
