package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/coder/websocket"

	"github.com/livepeer/edgerelay/agent/pipeline"
	"github.com/livepeer/edgerelay/internal/promptio"
)

// prepareFunc validates one item and makes it an entry for the pipeline.
type prepareFunc func(raw json.RawMessage) (pipeline.Entry, error)

// prepareEvent turns one /v1/events item into an envelope (see
// envelope.Stamper.Prepare).
func (s *Server) prepareEvent(raw json.RawMessage) (pipeline.Entry, error) {
	p, err := s.Stamper.Prepare(raw)
	return pipeline.Entry{Env: p.Env, Type: p.Type, Session: p.SessionID}, err
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	ok, reason := s.enter(r.Context()) // before the body is read: see admission
	if !ok && reason == "" {
		return // the client left
	}
	body, err := readBody(w, r, s.MaxBodyBytes, limitBody)
	if err != nil {
		if ok {
			s.admission.leave()
		}
		writeBodyError(w, err)
		return
	}
	if !ok {
		status, ans := s.refuseBody("api", reason, body)
		writeAnswer(w, status, ans)
		return
	}
	status, ans := s.ingestBody(r.Context(), "api", body, s.prepareEvent)
	writeAnswer(w, status, ans)
}

// ingestBody splits a body into items and ingests them. The caller holds an
// ingest slot (enter); it is released here.
func (s *Server) ingestBody(ctx context.Context, source string, body []byte, prepare prepareFunc) (int, Answer) {
	items, err := splitItems(body)
	if err != nil {
		s.admission.leave()
		return http.StatusBadRequest, Answer{Rejected: []Rejection{}, Error: err.Error()}
	}
	return s.ingestHeld(ctx, source, items, prepare)
}

// ingest takes an ingest slot (or answers the refusal: 429 or 503 with
// Retry-After, admit.go) and ingests items.
func (s *Server) ingest(ctx context.Context, source string, items []item, prepare prepareFunc) (int, Answer) {
	ok, reason := s.enter(ctx)
	if !ok {
		if reason == "" {
			return http.StatusServiceUnavailable, Answer{Rejected: []Rejection{}, Error: "request ended"}
		}
		return s.refusal(source, reason, len(items))
	}
	return s.ingestHeld(ctx, source, items, prepare)
}

// ingestHeld validates items with prepare, submits the good ones, waits
// until they are in the spool (or the request ends), and builds the answer.
// A request with more items, or more bytes once prepared, than it may hand
// to the ring is refused whole (413), never partly dropped. The caller holds
// an ingest slot, released once the events are submitted: the wait for the
// spool holds none.
func (s *Server) ingestHeld(ctx context.Context, source string, items []item, prepare prepareFunc) (int, Answer) {
	entered := true
	defer func() {
		if entered {
			s.admission.leave()
		}
	}()
	if n := len(items); s.MaxRequestEvents > 0 && n > s.MaxRequestEvents {
		s.Rejected(source, uint64(n))
		return s.tooMany(Limit{Name: "EDGERELAY_RING_MAX_EVENTS", Unit: "events", Max: int64(s.MaxRequestEvents), Got: int64(n)})
	}
	ans := Answer{Rejected: []Rejection{}}
	good := make([]pipeline.Entry, 0, len(items))
	index := make([]int, 0, len(items))
	for i, it := range items {
		if i&31 == 31 {
			// Stamping a large request holds a processor for milliseconds;
			// a delivery lane whose answer has come goes first.
			promptio.Yield()
		}
		if it.err != nil {
			ans.Rejected = append(ans.Rejected, Rejection{Index: i, Error: it.err.Error()})
			continue
		}
		e, err := prepare(it.raw)
		if err != nil {
			msg := err.Error()
			if it.line > 0 {
				msg = fmt.Sprintf("line %d: %s", it.line, msg)
			}
			ans.Rejected = append(ans.Rejected, Rejection{Index: i, Error: strings.ReplaceAll(msg, "\n", "; ")})
			continue
		}
		good = append(good, e)
		index = append(index, i)
	}
	if s.MaxRequestBytes > 0 {
		var size int64
		for _, e := range good {
			size += int64(len(e.Env))
		}
		if size > s.MaxRequestBytes {
			s.Rejected(source, uint64(len(items)))
			return s.tooMany(Limit{Name: "EDGERELAY_RING_MAX_BYTES", Unit: "bytes", Max: s.MaxRequestBytes, Got: size})
		}
	}
	s.Rejected(source, uint64(len(ans.Rejected)))
	if len(good) == 0 {
		ans.Error = "no acceptable item"
		return http.StatusBadRequest, ans
	}
	w, err := s.Submit(source, good)
	s.admission.leave()
	entered = false
	if err != nil {
		ans.Error = err.Error()
		return http.StatusServiceUnavailable, ans
	}
	select {
	case <-w.Done():
	case <-ctx.Done():
		return http.StatusServiceUnavailable, ans // the client left; nothing to answer
	}
	dropped, notDurable, err := w.Result()
	if err != nil {
		ans.Error = "spool write failed: " + err.Error()
		return http.StatusServiceUnavailable, ans
	}
	for _, i := range dropped {
		ans.Rejected = append(ans.Rejected, Rejection{Index: index[i], Error: "dropped before it was stored: ring full (the agent is overloaded)"})
	}
	ans.Accepted = len(good) - len(dropped)
	durable := s.Durable() && !notDurable
	ans.Durable = &durable
	if ans.Accepted == 0 {
		return http.StatusServiceUnavailable, ans
	}
	return http.StatusAccepted, ans
}

// tooMany refuses a request whole for what it would hand to the ring: half
// the ring's cap, so that one request never overruns the ring.
func (s *Server) tooMany(l Limit) (int, Answer) {
	what := "events"
	if l.Unit == "bytes" {
		what = "bytes once stamped"
	}
	msg := fmt.Sprintf("request: %d %s is over the limit of %d per request (half the ring, %s); split it into smaller requests",
		l.Got, what, l.Max, l.Name)
	return http.StatusRequestEntityTooLarge, Answer{Rejected: []Rejection{}, Error: msg, Limit: &l}
}

// handleStream is the WebSocket form of /v1/events: each text message is a
// body as /v1/events takes it, and each is answered, in order, with the same
// JSON answer once its events are durable.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(s.MaxBodyBytes)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.Stopping, cancel)()
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusMessageTooBig {
				return
			}
			if ctx.Err() != nil {
				c.Close(websocket.StatusGoingAway, "agent stopping")
			}
			return
		}
		var status int
		var ans Answer
		switch ok, reason := s.enter(ctx); {
		case ok:
			status, ans = s.ingestBody(ctx, "stream", msg, s.prepareEvent)
		case reason != "":
			status, ans = s.refuseBody("stream", reason, msg)
		default:
			return // the agent stops or the client left
		}
		out, _ := json.Marshal(struct {
			Status int `json:"status"`
			Answer
		}{status, ans})
		if err := c.Write(ctx, websocket.MessageText, out); err != nil {
			return
		}
	}
}
