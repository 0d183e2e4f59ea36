package ingest

import (
	"context"
	"net/http"
	"runtime"
	"strconv"
	"time"
)

// Overload refusals: when the agent cannot take a request without harm, it
// answers at once with the status below and a Retry-After, counts the
// request's items as refused (edgerelay_events_refused_total{source,reason}),
// and accepts none of them: the client keeps them and sends them again. The
// alternative, taking them and then dropping older events from the ring,
// would lose events already on their way.
const (
	// RefusedBusy: every ingest slot stayed taken for QueueWait (429). The
	// agent's CPU is saturated by ingest; waiting longer would only grow the
	// queue of requests and their memory.
	RefusedBusy = "busy"
	// RefusedBacklog: the ring stayed over half its caps for QueueWait
	// (503): the spool writer is behind (a slow or stalled disk), and more
	// would push events out of the ring.
	RefusedBacklog = "ring_backlog"

	// DefaultQueueWait is how long a request waits for an ingest slot. It
	// is long enough for a thousand clients each with a 500-event request
	// outstanding to queue on two cores without being refused.
	DefaultQueueWait = 5 * time.Second
	// retryAfterSeconds is the Retry-After of a refusal.
	retryAfterSeconds = 1
)

// admission bounds the ingest requests being read, parsed and stamped at
// once to twice the number of CPUs: more would not go faster, each holds
// its body in memory, and a thousand requests parsing at once would starve
// the spool writer and the forwarders of the CPU. A request waits for a
// slot, its body unread, at most wait; waiting for its events to reach the
// spool does not hold one, so group commits still gather many requests.
type admission struct {
	slots chan struct{}
	wait  time.Duration
}

func newAdmission(slots int, wait time.Duration) *admission {
	if slots <= 0 {
		slots = max(4, 2*runtime.GOMAXPROCS(0))
	}
	if wait <= 0 {
		wait = DefaultQueueWait
	}
	return &admission{slots: make(chan struct{}, slots), wait: wait}
}

// enter takes a slot, or reports RefusedBusy when ctx ends first.
func (a *admission) enter(ctx context.Context) (ok bool, reason string) {
	select {
	case a.slots <- struct{}{}:
		return true, ""
	case <-ctx.Done():
		return false, RefusedBusy
	}
}

func (a *admission) leave() {
	if a != nil {
		<-a.slots
	}
}

// enter admits one request before its body is read: it takes an ingest
// slot and waits for room in the ring, together at most QueueWait, or
// reports the reason the request is refused: RefusedBusy when no slot came,
// RefusedBacklog when the ring stayed over half full (the spool writer is
// behind). reason is "" with ok false when ctx ended first. The slot is
// released by ingestHeld once the request's events are submitted.
func (s *Server) enter(ctx context.Context) (ok bool, reason string) {
	if s.admission == nil { // not started: handlers called directly
		return true, ""
	}
	wctx, cancel := context.WithTimeout(ctx, s.admission.wait)
	defer cancel()
	if ok, reason = s.admission.enter(wctx); !ok {
		if ctx.Err() != nil {
			return false, ""
		}
		return false, reason
	}
	if s.Room != nil && !s.Room(wctx) {
		s.admission.leave()
		if ctx.Err() != nil {
			return false, ""
		}
		return false, RefusedBacklog
	}
	return true, ""
}

// refusal counts n items of source refused for reason and builds the
// answer: 503 while the writer is behind, 429 when busy.
func (s *Server) refusal(source, reason string, n int) (int, Answer) {
	if s.Refused != nil {
		s.Refused(source, reason, uint64(n))
	}
	code, msg := http.StatusTooManyRequests, "overloaded: every ingest slot stayed busy; send again after Retry-After"
	if reason == RefusedBacklog {
		code, msg = http.StatusServiceUnavailable, "overloaded: the spool writer is behind; send again after Retry-After"
	}
	return code, Answer{Rejected: []Rejection{}, Refused: n, RetryAfter: retryAfterSeconds, Error: msg}
}

// refuseBody is refusal for a /v1/events body, its items counted.
func (s *Server) refuseBody(source, reason string, body []byte) (int, Answer) {
	n := 0
	if items, err := splitItems(body); err == nil {
		n = len(items)
	}
	return s.refusal(source, reason, n)
}

// writeAnswer writes an ingest answer, with a Retry-After header when it
// carries one.
func writeAnswer(w http.ResponseWriter, status int, ans Answer) {
	if ans.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ans.RetryAfter))
	}
	writeJSON(w, status, ans)
}
