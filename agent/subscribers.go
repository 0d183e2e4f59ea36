package agent

import (
	"maps"
	"sync"

	"github.com/livepeer/edgerelay/relay/trickle"
)

// SubscriberReport is one followed channel's counters in /v1/stats: what it
// relayed, and what it lost or skipped and why.
type SubscriberReport struct {
	Relayed    uint64            `json:"relayed"`
	Duplicates uint64            `json:"duplicates"`
	Malformed  map[string]uint64 `json:"malformed"`
	Reconnects uint64            `json:"reconnects"`
	Jumps      uint64            `json:"jumps"`
	Skipped    uint64            `json:"skipped_segments"` // segments a jump skipped: lost to this reader
	Gone       uint64            `json:"gone"`             // the channel answered 404 or Lp-Trickle-Closed and was probed
	Ended      string            `json:"ended,omitempty"`
}

// sessionSubscribers is the report name of the session subscribers, whose
// counters are folded into it when their session detaches: thousands of
// sessions keep one entry and one set of metric series.
const sessionSubscribers = "sessions"

// subscribers keeps the trickle subscribers for the reports. Safe for
// concurrent use.
type subscribers struct {
	mu     sync.Mutex
	live   map[string]*trickle.Subscriber
	folded SubscriberReport // the session subscribers that ended
	anyEnd bool             // folded holds at least one
}

func newSubscribers() *subscribers { return &subscribers{live: map[string]*trickle.Subscriber{}} }

func (s *subscribers) add(name string, sub *trickle.Subscriber) {
	s.mu.Lock()
	s.live[name] = sub
	s.mu.Unlock()
}

// end forgets a subscriber whose Run returned; a session's is folded into
// the sessions entry, a static one keeps its entry.
func (s *subscribers) end(name string, session bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := s.live[name]
	if sub == nil || !session {
		return
	}
	delete(s.live, name)
	s.folded = addSubscriber(s.folded, report(sub.Stats()))
	s.anyEnd = true
}

// reports returns every subscriber's counters; the sessions' under one name.
func (s *subscribers) reports() map[string]SubscriberReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]SubscriberReport{}
	var sessions SubscriberReport
	haveSessions := s.anyEnd
	if haveSessions {
		sessions = s.folded
	}
	for name, sub := range s.live {
		r := report(sub.Stats())
		if len(name) > len(sessionPrefix) && name[:len(sessionPrefix)] == sessionPrefix {
			sessions, haveSessions = addSubscriber(sessions, r), true
			continue
		}
		out[name] = r
	}
	if haveSessions {
		out[sessionSubscribers] = sessions
	}
	return out
}

// sessionPrefix starts the subscriber name of a session.
const sessionPrefix = "session:"

func report(st trickle.SubscriberStats) SubscriberReport {
	return SubscriberReport{
		Relayed: st.Relayed, Duplicates: st.Duplicates, Malformed: st.Malformed, Reconnects: st.Reconnects,
		Jumps: st.Jumps, Skipped: st.Skipped, Gone: st.Gone, Ended: st.Ended,
	}
}

func addSubscriber(a, b SubscriberReport) SubscriberReport {
	m := maps.Clone(a.Malformed)
	if m == nil {
		m = map[string]uint64{}
	}
	for k, v := range b.Malformed {
		m[k] += v
	}
	return SubscriberReport{
		Relayed: a.Relayed + b.Relayed, Duplicates: a.Duplicates + b.Duplicates, Malformed: m,
		Reconnects: a.Reconnects + b.Reconnects, Jumps: a.Jumps + b.Jumps, Skipped: a.Skipped + b.Skipped, Gone: a.Gone + b.Gone,
	}
}
