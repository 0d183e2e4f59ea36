package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/trickle"
	"github.com/livepeer/edgerelay/spool"
)

// Trickle in the agent.
//
// A static channel (EDGERELAY_TRICKLE_URL) is one more sink reading the
// spool: every envelope, wrapped as a telemetry frame.
//
// A session channel (POST /v1/sessions with events_url) carries only that
// session's envelopes (data.session_id matches) and the runner's own frames
// (POST /v1/sessions/{id}/frames), in arrival order: the agent is the
// channel's only writer. Its log is in memory, not in the spool: the
// channel lives only as long as the session and the orchestrator keep it,
// and a restarted agent could not write to it again anyway. Envelopes are
// routed to it when accepted, so it is a live view; the spool still holds
// them for every other sink.

// sessionMemCap bounds one session channel's in-memory log.
const sessionMemCap = 16 << 20

// sessionSink is the publisher of one attached session's channel.
type sessionSink struct {
	sess   *Session
	h      *sinkHandle
	mem    *spool.Memory
	pub    *trickle.Publisher
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed and serializes appends (arrival order)
	closed bool       // the channel ended or the session detached
}

// sessionSinks maps session id to its channel publisher.
type sessionSinks struct {
	mu sync.Mutex
	m  map[string]*sessionSink
}

func (a *Agent) startStaticTrickle() error {
	if a.cfg.TrickleURL == "" {
		return nil
	}
	h, err := a.newSinkHandle(a.store, "trickle", "trickle")
	if err != nil {
		return err
	}
	f := a.newForwarder(h)
	pub, err := trickle.NewPublisher(trickle.PublisherOptions{
		URL: a.cfg.TrickleURL, Framing: a.cfg.TrickleFraming, Insecure: a.cfg.TrickleInsecure,
		Wrap: true, Stats: h.stats, Alive: f.Alive, Logger: a.log.With("sink", "trickle"),
	})
	if err != nil {
		return fmt.Errorf("EDGERELAY_TRICKLE_URL: %w", err)
	}
	if a.cfg.TrickleInsecure {
		a.log.Warn("trickle: TLS verification is off (EDGERELAY_TRICKLE_INSECURE)")
	}
	f.Sink = pub
	pub.Tune(f)
	f.Init()
	h.drain, h.stalled = f.Drain, f.Stalled
	a.runSink(h, func(ctx context.Context) error {
		err := f.Run(ctx)
		pub.Close()
		if errors.Is(err, relay.ErrClosed) {
			a.log.Error("trickle channel ended (404 or closed); the static trickle sink stops until restart", "url", relay.RedactURL(a.cfg.TrickleURL))
			a.retireSink(h, relay.DropChannelClosed)
		}
		return err
	})
	return nil
}

// retireSink removes a sink whose loop has returned: its cursor leaves the
// store, what it had not delivered is counted as dropped for reason, and
// its final report is kept so totals stay whole.
func (a *Agent) retireSink(h *sinkHandle, reason string) {
	final, err := h.st.RemoveSink(h.name)
	if err != nil {
		return
	}
	if final.Pending > 0 {
		h.stats.AddDropped(reason, final.Pending)
		a.log.Warn("sink retired with undelivered events", "sink", h.name, "events", final.Pending, "reason", reason)
	}
	final.Acked += final.Pending
	final.Pending = 0
	rep := relay.Account(h.kind, h.stats.Snapshot(), final)
	a.sinksMu.Lock()
	delete(a.sinks, h.name)
	if a.finished == nil {
		a.finished = map[string]SinkReport{}
	}
	a.finished[h.name] = rep
	a.sinksMu.Unlock()
}

// attachSessionChannel starts the publisher of a session's events channel.
func (a *Agent) attachSessionChannel(s *Session) error {
	name := "session:" + s.SessionID
	mem := spool.NewMemory(sessionMemCap)
	h, err := a.newSinkHandle(mem, name, "session")
	if err != nil {
		return err
	}
	f := a.newForwarder(h)
	pub, err := trickle.NewPublisher(trickle.PublisherOptions{
		URL: s.EventsURL, Framing: a.cfg.TrickleFraming, Insecure: a.cfg.TrickleInsecure,
		Wrap: false, Stats: h.stats, Alive: f.Alive, Logger: a.log.With("sink", name),
	})
	if err != nil {
		return fmt.Errorf("events_url: %w", err)
	}
	f.Sink = pub
	pub.Tune(f)
	f.Init()
	h.drain, h.stalled = f.Drain, f.Stalled
	ctx, cancel := context.WithCancel(a.sinkCtx)
	ss := &sessionSink{sess: s, h: h, mem: mem, pub: pub, cancel: cancel}
	a.sessSinks.mu.Lock()
	if a.sessSinks.m == nil {
		a.sessSinks.m = map[string]*sessionSink{}
	}
	a.sessSinks.m[s.SessionID] = ss
	a.sessSinks.mu.Unlock()
	a.runSink(h, func(context.Context) error {
		err := f.Run(ctx)
		pub.Close()
		if errors.Is(err, relay.ErrClosed) {
			ss.mu.Lock()
			ss.closed = true
			ss.mu.Unlock()
			a.log.Warn("session channel ended; its envelopes still go to the other sinks", "session_id", s.SessionID)
			a.retireSink(h, relay.DropChannelClosed)
		}
		return err
	})
	return nil
}

// routeToSession appends an accepted envelope to its session's channel log,
// wrapped as a telemetry frame.
func (a *Agent) routeToSession(sessionID string, env []byte) {
	if sessionID == "" || a.sessSinkCount.Load() == 0 {
		return
	}
	a.sessSinks.mu.Lock()
	ss := a.sessSinks.m[sessionID]
	a.sessSinks.mu.Unlock()
	if ss == nil {
		return
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		a.counters.dropped.add("session/"+relay.DropChannelClosed, 1)
		return
	}
	ss.mem.Append([][]byte{envelope.WrapTelemetry(nil, env)})
}

// handleFrames takes the runner's own events-channel messages for a session
// and writes them, verbatim and in arrival order, into the session's channel.
func (a *Agent) handleFrames(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	a.sessSinks.mu.Lock()
	ss := a.sessSinks.m[id]
	a.sessSinks.mu.Unlock()
	if ss == nil {
		if _, ok := a.sessions.get(id); ok {
			writeJSON(w, http.StatusConflict, IngestAnswer{Rejected: []Rejection{}, Error: fmt.Sprintf("session %q has no events_url", id)})
		} else {
			writeJSON(w, http.StatusNotFound, IngestAnswer{Rejected: []Rejection{}, Error: fmt.Sprintf("session %q is not attached", id)})
		}
		return
	}
	body, err := readBody(w, r, a.cfg.MaxBodyBytes)
	if err != nil {
		writeBodyError(w, err)
		return
	}
	items, err := splitItems(body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, IngestAnswer{Rejected: []Rejection{}, Error: err.Error()})
		return
	}
	ans := IngestAnswer{Rejected: []Rejection{}}
	var frames [][]byte
	for i, it := range items {
		if it.err == nil {
			it.err = checkFrame(it.raw, a.cfg.MaxEventBytes)
		}
		if it.err != nil {
			ans.Rejected = append(ans.Rejected, Rejection{Index: i, Error: it.err.Error()})
			continue
		}
		frames = append(frames, compactLine(it.raw))
	}
	if len(frames) == 0 {
		ans.Error = "no acceptable frame"
		writeJSON(w, http.StatusBadRequest, ans)
		return
	}
	ss.mu.Lock()
	closed := ss.closed
	if !closed {
		ss.mem.Append(frames)
	}
	ss.mu.Unlock()
	if closed {
		ans.Error = "the session's events channel has ended"
		writeJSON(w, http.StatusGone, ans)
		return
	}
	ans.Accepted = len(frames)
	durable := false // frames live in the session channel's memory log
	ans.Durable = &durable
	writeJSON(w, http.StatusAccepted, ans)
}

// checkFrame accepts one frame of the channel's framing (envelope.ParseFrame).
func checkFrame(raw []byte, max int) error {
	if len(raw) > max {
		return fmt.Errorf("frame: %d bytes is over the limit of %d", len(raw), max)
	}
	_, _, err := envelope.ParseFrame(raw)
	return err
}

// detachSessionChannel flushes a session's channel for at most grace, stops
// its publisher, deletes the channel if the session owns it, and retires the
// sink.
func (a *Agent) detachSessionChannel(id string, grace time.Duration, reason string, deleteOwned bool) {
	a.sessSinks.mu.Lock()
	ss := a.sessSinks.m[id]
	delete(a.sessSinks.m, id)
	a.sessSinks.mu.Unlock()
	if ss == nil {
		return
	}
	a.sessSinkCount.Add(-1)
	// Send what is held at once (no linger), for at most grace.
	ss.h.drain()
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	for {
		st, err := ss.mem.SinkStat(ss.h.name)
		if err != nil || st.Pending == 0 {
			break
		}
		select {
		case <-ss.h.done: // the channel ended
		case <-deadline.C:
		case <-a.sinkCtx.Done():
		case <-time.After(10 * time.Millisecond):
			continue
		}
		break
	}
	ss.mu.Lock()
	ss.closed = true
	ss.mu.Unlock()
	ss.cancel()
	<-ss.h.done
	if deleteOwned && ss.sess.OwnsChannel {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := ss.pub.DeleteChannel(dctx); err != nil {
			a.log.Warn("could not delete the session's channel", "session_id", id, "err", err)
		}
		dcancel()
	}
	a.retireSink(ss.h, reason)
}

// startSubscriber follows a channel and relays its telemetry frames into the
// pipeline (source "trickle"), until ctx ends or the channel does.
func (a *Agent) startSubscriber(ctx context.Context, u string) error {
	sub, err := trickle.NewSubscriber(trickle.SubscriberOptions{
		URL: u, Insecure: a.cfg.TrickleInsecure, Logger: a.log.With("source", "trickle", "url", relay.RedactURL(u)),
		OnEnvelope: func(env []byte, ce envelope.Checked) {
			if len(env) > a.cfg.MaxEventBytes {
				a.counters.rejected.add("trickle", 1)
				return
			}
			a.pushEnvelope("trickle", ce.Type, env, ce.SessionID)
		},
	})
	if err != nil {
		return err
	}
	a.subsMu.Lock()
	a.subs = append(a.subs, subscriberRef{name: relay.RedactURL(u), sub: sub})
	a.subsMu.Unlock()
	a.sources.Add(1)
	go func() {
		defer a.sources.Done()
		if err := sub.Run(ctx); errors.Is(err, relay.ErrClosed) {
			a.log.Info("subscribed channel ended", "url", relay.RedactURL(u), "why", sub.Stats().Ended)
		}
	}()
	return nil
}

type subscriberRef struct {
	name string
	sub  *trickle.Subscriber
}

// compactLine removes line breaks between tokens, so a frame is one line.
func compactLine(raw []byte) []byte {
	for _, c := range raw {
		if c == '\n' || c == '\r' {
			var buf bytes.Buffer
			if json.Compact(&buf, raw) == nil {
				return buf.Bytes()
			}
			return raw
		}
	}
	return raw
}
