package agent

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// tailHub fans accepted envelopes out to `GET /v1/tail` watchers. A watcher
// that cannot keep up loses envelopes (counted per watcher and in
// edgerelay_tail_dropped_total); it never slows the pipeline.
type tailHub struct {
	n       atomic.Int32 // watchers; lets publish skip the lock when none
	dropped atomic.Uint64
	mu      sync.Mutex // guards subs
	subs    map[*tailSub]struct{}
}

type tailSub struct {
	types map[string]bool // nil: every type
	ch    chan []byte
}

func newTailHub() *tailHub { return &tailHub{subs: make(map[*tailSub]struct{})} }

func (h *tailHub) publish(typ string, env []byte) {
	if h.n.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.types != nil && !s.types[typ] {
			continue
		}
		select {
		case s.ch <- env:
		default:
			h.dropped.Add(1)
		}
	}
}

func (h *tailHub) subscribe(types []string) *tailSub {
	s := &tailSub{ch: make(chan []byte, 1024)}
	if len(types) > 0 {
		s.types = make(map[string]bool, len(types))
		for _, t := range types {
			s.types[t] = true
		}
	}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	h.n.Add(1)
	return s
}

func (h *tailHub) unsubscribe(s *tailSub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
	h.n.Add(-1)
}

// handleTail streams live envelopes over a WebSocket, one text message per
// envelope; ?type=a,b keeps only those families.
func (a *Agent) handleTail(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer c.CloseNow()
	var types []string
	for _, t := range r.URL.Query()["type"] {
		types = append(types, splitList(t)...)
	}
	sub := a.tail.subscribe(types)
	defer a.tail.unsubscribe(sub)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(a.intakeCtx, cancel)()
	ctx = c.CloseRead(ctx)
	for {
		select {
		case <-ctx.Done():
			c.Close(websocket.StatusGoingAway, "agent stopping")
			return
		case env := <-sub.ch:
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.Write(wctx, websocket.MessageText, env)
			cancel()
			if err != nil {
				return
			}
		}
	}
}
