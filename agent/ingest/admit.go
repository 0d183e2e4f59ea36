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
	// RefusedBusy: every parsing slot stayed taken for QueueWait (429). The
	// agent's CPU is saturated by ingest; waiting longer would only grow the
	// queue of requests and their memory.
	RefusedBusy = "busy"
	// RefusedBacklog: the ring holds more than half its caps (503): the spool
	// writer is behind (a slow or stalled disk), and more would push events
	// out of the ring.
	RefusedBacklog = "ring_backlog"

	// DefaultQueueWait is how long a request waits for a parsing slot.
	DefaultQueueWait = time.Second
	// retryAfterSeconds is the Retry-After of a refusal.
	retryAfterSeconds = 1
)

// admission bounds the ingest requests being parsed and stamped at once to
// about the number of CPUs: more would not go faster, and each holds its
// body in memory. A request waits for a slot at most wait; waiting for its
// events to reach the spool does not hold one, so group commits still
// gather many requests.
type admission struct {
	slots chan struct{}
	wait  time.Duration
}

func newAdmission(slots int, wait time.Duration) *admission {
	if slots <= 0 {
		slots = max(2, runtime.GOMAXPROCS(0))
	}
	if wait <= 0 {
		wait = DefaultQueueWait
	}
	return &admission{slots: make(chan struct{}, slots), wait: wait}
}

// enter takes a slot, or reports why not: RefusedBusy after wait, "" with
// ok false when ctx ended first.
func (a *admission) enter(ctx context.Context) (ok bool, reason string) {
	select {
	case a.slots <- struct{}{}:
		return true, ""
	default:
	}
	t := time.NewTimer(a.wait)
	defer t.Stop()
	select {
	case a.slots <- struct{}{}:
		return true, ""
	case <-t.C:
		return false, RefusedBusy
	case <-ctx.Done():
		return false, ""
	}
}

func (a *admission) leave() {
	if a != nil {
		<-a.slots
	}
}

// admit takes a parsing slot for n items from source, or builds the refusal
// answer (already counted).
func (s *Server) admit(ctx context.Context, source string, n int) (ok bool, status int, ans Answer) {
	refuse := func(code int, reason, msg string) (bool, int, Answer) {
		if s.Refused != nil {
			s.Refused(source, reason, uint64(n))
		}
		return false, code, Answer{Rejected: []Rejection{}, Refused: n, RetryAfter: retryAfterSeconds, Error: msg}
	}
	if s.Backlogged != nil && s.Backlogged() {
		return refuse(http.StatusServiceUnavailable, RefusedBacklog, "overloaded: the spool writer is behind; retry after the Retry-After delay")
	}
	if s.admission == nil { // not started: handlers called directly
		return true, 0, Answer{}
	}
	ok, reason := s.admission.enter(ctx)
	if ok {
		return true, 0, Answer{}
	}
	if reason == "" {
		return false, http.StatusServiceUnavailable, Answer{Rejected: []Rejection{}, Error: "request ended"}
	}
	return refuse(http.StatusTooManyRequests, reason, "overloaded: every ingest slot stayed busy; retry after the Retry-After delay")
}

// writeAnswer writes an ingest answer, with a Retry-After header when it
// carries one.
func writeAnswer(w http.ResponseWriter, status int, ans Answer) {
	if ans.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ans.RetryAfter))
	}
	writeJSON(w, status, ans)
}
