package ingest

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// TailHub fans accepted envelopes out to `GET /v1/tail` watchers. A watcher
// that cannot keep up loses envelopes (counted in
// edgerelay_tail_dropped_total); it never slows the pipeline. It is safe for
// concurrent use.
type TailHub struct {
	n       atomic.Int32 // watchers; lets publish skip the lock when none
	dropped atomic.Uint64
	mu      sync.Mutex // guards subs
	subs    map[*tailSub]struct{}
}

type tailSub struct {
	types map[string]bool // nil: every type
	ch    chan []byte
}

// NewTailHub returns a hub without watchers.
func NewTailHub() *TailHub { return &TailHub{subs: make(map[*tailSub]struct{})} }

// Dropped returns how many envelopes slow watchers missed.
func (h *TailHub) Dropped() uint64 { return h.dropped.Load() }

// Publish offers an accepted envelope to the watchers; it never blocks.
func (h *TailHub) Publish(typ string, env []byte) {
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

func (h *TailHub) subscribe(types []string) *tailSub {
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

func (h *TailHub) unsubscribe(s *tailSub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
	h.n.Add(-1)
}

// handleTail streams live envelopes over a WebSocket, one text message per
// envelope; ?type=a,b keeps only those families.
func (s *Server) handleTail(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer c.CloseNow()
	var types []string
	for _, t := range r.URL.Query()["type"] {
		for _, p := range strings.Split(t, ",") {
			if p = strings.TrimSpace(p); p != "" {
				types = append(types, p)
			}
		}
	}
	sub := s.Tail.subscribe(types)
	defer s.Tail.unsubscribe(sub)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.Stopping, cancel)()
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
