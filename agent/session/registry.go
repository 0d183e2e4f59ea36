package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livepeer/edgerelay/agent/pipeline"
	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/trickle"
	"github.com/livepeer/edgerelay/spool"
)

// channelMemCap bounds one session channel's in-memory log.
const channelMemCap = 16 << 20

// Errors of AppendFrames.
var (
	ErrUnknown       = errors.New("session is not attached")
	ErrNoChannel     = errors.New("session has no events_url")
	ErrChannelEnded  = errors.New("the session's events channel has ended")
	errAlreadyClosed = errors.New("session channel closed")
)

// Options configures a Registry.
type Options struct {
	// Sinks runs the session channels' forwarders with every other sink,
	// so they are counted in the same reports.
	Sinks *relay.Group
	// SinkCtx ends when the sinks must stop; session channels run under it.
	SinkCtx context.Context
	// SourceCtx ends when intake stops; session subscribers run under it.
	SourceCtx context.Context
	// NewForwarder returns a forwarder with the agent's defaults for a sink
	// reading q (Name, Queue, Stats and Logger set).
	NewForwarder func(name string, q relay.Queue) *relay.Forwarder
	// Subscribe follows a channel (a session's subscribe_url) until ctx
	// ends; it returns once the subscriber runs.
	Subscribe func(ctx context.Context, url, session string) error
	// KeepAliveEvent returns the envelope of the channels' keep-alive
	// frames (the agent's status); see trickle.PublisherOptions.
	KeepAliveEvent func() []byte
	// Dropped counts envelopes that could not go to an ended channel.
	Dropped  func(reason string, n uint64)
	Framing  string        // the channels' trickle framing
	Insecure bool          // TLS verification off for the channels
	Grace    time.Duration // how long a detach may flush the channel
	Logger   *slog.Logger
}

// Registry holds the attached sessions: their identity, stamped into their
// events, and their trickle events channels. A session channel is one more
// sink of the relay.Group, reading its own memory log: the spool writer
// hands it the session's envelopes after each commit (Route), and the
// runner's own frames join the same log in arrival order (AppendFrames), so
// the agent is the channel's only writer. The log lives only as long as the
// session: a restarted agent could not write to the channel again anyway.
//
// Registry is safe for concurrent use.
type Registry struct {
	o        Options
	channels atomic.Int32 // attached sessions with a channel; lets Route skip the lock

	mu sync.RWMutex // guards m
	m  map[string]*entry

	idMu sync.Mutex         // guards ids
	ids  map[string]*idLock // the session ids being attached or detached
}

// idLock serializes the attach and detach of one session id: a detach
// still flushing the old channel must not stop or retire the sink of a
// channel attached again under the same name.
type idLock struct {
	mu    sync.Mutex
	users int // holders and waiters, guarded by Registry.idMu
}

// lockID takes the lock of session id; the returned func releases it.
func (r *Registry) lockID(id string) (unlock func()) {
	r.idMu.Lock()
	l := r.ids[id]
	if l == nil {
		l = &idLock{}
		r.ids[id] = l
	}
	l.users++
	r.idMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		r.idMu.Lock()
		if l.users--; l.users == 0 {
			delete(r.ids, id)
		}
		r.idMu.Unlock()
	}
}

type entry struct {
	sess   *Session
	gpu    string             // the GPU its processes were last seen on (sess.GPUID unset); guarded by Registry.mu
	ch     *channel           // nil without events_url
	unsubs context.CancelFunc // ends the subscriber of subscribe_url, nil without
}

// channel is the publisher side of one session's events channel.
type channel struct {
	name string // its sink name, "session:<id>"
	mem  *spool.Memory
	pub  *trickle.Publisher

	mu     sync.Mutex // guards closed and serializes appends (arrival order)
	closed bool       // the channel ended or the session detached
}

// New returns an empty registry.
func New(o Options) *Registry {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{o: o, m: map[string]*entry{}, ids: map[string]*idLock{}}
}

// Identity returns the identity of a session, nil if it is not attached.
// Its gpu_id is the one it attached with, else the GPU its processes were
// last seen on (ForGPU).
func (r *Registry) Identity(id string) envelope.Identity {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e, ok := r.m[id]; ok {
		ident := e.sess.Identity()
		if ident["gpu_id"] == "" {
			ident["gpu_id"] = e.gpu
		}
		return ident
	}
	return nil
}

// ForGPU returns the session using a GPU: the one attached with its UUID,
// else the one whose runner (PID) is among pids, the GPU's processes and
// their ancestors; of several, the latest attached. A session found by its
// processes takes the GPU as its gpu_id (Identity). uuid "" matches by pids
// only (a single process's session).
func (r *Registry) ForGPU(uuid string, pids []int) (*Session, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var best *entry
	for _, e := range r.m {
		if uuid != "" && e.sess.GPUID == uuid && (best == nil || later(e, best)) {
			best = e
		}
	}
	if best == nil && len(pids) > 0 {
		for _, e := range r.m {
			if e.sess.PID > 0 && slices.Contains(pids, e.sess.PID) && (best == nil || later(e, best)) {
				best = e
			}
		}
		if best != nil && uuid != "" && best.sess.GPUID == "" {
			best.gpu = uuid
		}
	}
	if best == nil {
		return nil, false
	}
	return best.sess, true
}

// later orders entries by attach time, then id, so that a choice among
// several is the same every time.
func later(a, b *entry) bool {
	if !a.sess.Attached.Equal(b.sess.Attached) {
		return a.sess.Attached.After(b.sess.Attached)
	}
	return a.sess.SessionID > b.sess.SessionID
}

// Runner is a session's runner process, for its network figures.
type Runner struct {
	SessionID string
	PID       int
}

// Runners returns the sessions that named (or were attached by) a runner
// process, in session id order.
func (r *Registry) Runners() []Runner {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []Runner
	for id, e := range r.m {
		if e.sess.PID > 0 {
			out = append(out, Runner{SessionID: id, PID: e.sess.PID})
		}
	}
	slices.SortFunc(out, func(a, b Runner) int { return strings.Compare(a.SessionID, b.SessionID) })
	return out
}

// Count returns the number of attached sessions.
func (r *Registry) Count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.m)
}

// Attach registers a session and starts its events channel publisher and
// its subscriber, when it names them. Re-attaching a session replaces it;
// it waits for a detach of the same session still flushing its channel.
func (r *Registry) Attach(s *Session) error {
	defer r.lockID(s.SessionID)()
	if r.has(s.SessionID) {
		r.detach(s.SessionID, r.o.Grace, false)
	}
	e := &entry{sess: s}
	if s.EventsURL != "" {
		ch, err := r.startChannel(s)
		if err != nil {
			return err
		}
		e.ch = ch
	}
	if s.SubscribeURL != "" {
		ctx, cancel := context.WithCancel(r.o.SourceCtx)
		if err := r.o.Subscribe(ctx, s.SubscribeURL, s.SessionID); err != nil {
			cancel()
			if e.ch != nil {
				r.stopChannel(s, e.ch, 0, "", false)
			}
			return fmt.Errorf("subscribe_url: %w", err)
		}
		e.unsubs = cancel
	}
	r.mu.Lock()
	r.m[s.SessionID] = e
	r.mu.Unlock()
	if e.ch != nil {
		r.channels.Add(1)
	}
	r.o.Logger.Info("session attached", "session_id", s.SessionID, "stream_id", s.StreamID, "gpu_id", s.GPUID, "pid", s.PID,
		"events_channel", s.EventsURL != "", "subscribed", s.SubscribeURL != "")
	return nil
}

func (r *Registry) has(id string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.m[id]
	return ok
}

// startChannel starts the publisher of a session's events channel: a
// forwarder over its own memory log, run by the sink group.
func (r *Registry) startChannel(s *Session) (*channel, error) {
	name := "session:" + s.SessionID
	mem := spool.NewMemory(channelMemCap)
	if err := mem.AddSink(name); err != nil {
		return nil, err
	}
	f := r.o.NewForwarder(name, mem)
	pub, err := trickle.NewPublisher(trickle.PublisherOptions{
		URL: s.EventsURL, Framing: r.o.Framing, Insecure: r.o.Insecure, KeepAliveEvent: r.o.KeepAliveEvent,
		Wrap: false, Stats: f.Stats, Alive: f.Alive, Logger: r.o.Logger.With("sink", name),
	})
	if err != nil {
		return nil, fmt.Errorf("events_url: %w", err)
	}
	f.Sink = pub
	pub.Tune(f)
	f.Init()
	ch := &channel{name: name, mem: mem, pub: pub}
	r.o.Sinks.Start(r.o.SinkCtx, relay.Member{
		Name: name, Kind: "session", Fwd: f,
		Stat:   func() (spool.SinkStat, error) { return mem.SinkStat(name) },
		Remove: func() (spool.SinkStat, error) { return mem.RemoveSink(name) },
		Closed: func() bool {
			ch.close()
			r.o.Logger.Warn("session channel ended; its envelopes still go to the other sinks", "session_id", s.SessionID)
			return true
		},
		Done:      pub.Close,
		Aggregate: "sessions",
	})
	return ch, nil
}

func (ch *channel) close() {
	ch.mu.Lock()
	ch.closed = true
	ch.mu.Unlock()
}

// append adds frames to the channel's log unless it has ended.
func (ch *channel) append(frames [][]byte) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return errAlreadyClosed
	}
	return ch.mem.Append(frames)
}

// Route hands committed envelopes to their sessions' channels, wrapped as
// telemetry frames. It is the pipeline's Committed hook: it runs on the
// spool writer's goroutine, before the producers are told their events are
// stored, so a runner's next frame lands after its telemetry.
func (r *Registry) Route(group []pipeline.Entry) {
	if r.channels.Load() == 0 {
		return
	}
	// A run of envelopes of one session (the common case: a runner's
	// batch) costs one look-up and one append, not one per envelope.
	var (
		ch     *channel
		cur    string
		frames [][]byte
	)
	flush := func() {
		if len(frames) > 0 && ch.append(frames) != nil {
			r.o.Dropped(relay.DropChannelClosed, uint64(len(frames)))
		}
		frames = nil // the log keeps the slice's frames, not the slice
	}
	for _, e := range group {
		if e.Session == "" {
			continue
		}
		if e.Session != cur {
			flush()
			cur, ch = e.Session, nil
			r.mu.RLock()
			if en := r.m[cur]; en != nil {
				ch = en.ch
			}
			r.mu.RUnlock()
		}
		if ch != nil {
			frames = append(frames, envelope.WrapTelemetry(nil, e.Env))
		}
	}
	flush()
}

// AppendFrames writes the runner's own frames, verbatim and in arrival
// order, into its session's channel.
func (r *Registry) AppendFrames(id string, frames [][]byte) error {
	r.mu.RLock()
	en := r.m[id]
	r.mu.RUnlock()
	switch {
	case en == nil:
		return ErrUnknown
	case en.ch == nil:
		return ErrNoChannel
	}
	if en.ch.append(frames) != nil {
		return ErrChannelEnded
	}
	return nil
}

// HasChannel reports whether a session is attached with an events channel
// (and whether it is attached at all).
func (r *Registry) HasChannel(id string) (attached, channel bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	en := r.m[id]
	return en != nil, en != nil && en.ch != nil
}

// Detach flushes the session's channel (for at most the grace), deletes it
// if the session owns it, stops its subscriber and forgets the session.
func (r *Registry) Detach(id string) bool {
	defer r.lockID(id)()
	if !r.detach(id, r.o.Grace, true) {
		return false
	}
	r.o.Logger.Info("session detached", "session_id", id)
	return true
}

// DetachAll retires every session channel at shutdown, after the sinks have
// stopped: what they had not sent is counted as dropped ("shutdown");
// channels are not deleted (the sessions may go on).
func (r *Registry) DetachAll() {
	r.mu.RLock()
	ids := make([]string, 0, len(r.m))
	for id := range r.m {
		ids = append(ids, id)
	}
	r.mu.RUnlock()
	for _, id := range ids {
		unlock := r.lockID(id)
		r.detach(id, 0, false)
		unlock()
	}
}

// detach retires a session; the caller holds its lockID.
func (r *Registry) detach(id string, grace time.Duration, deleteOwned bool) bool {
	r.mu.Lock()
	en := r.m[id]
	delete(r.m, id)
	r.mu.Unlock()
	if en == nil {
		return false
	}
	if en.unsubs != nil {
		en.unsubs()
	}
	if en.ch != nil {
		r.channels.Add(-1)
		reason := relay.DropChannelClosed
		if !deleteOwned && grace == 0 {
			reason = "shutdown"
		}
		r.stopChannel(en.sess, en.ch, grace, reason, deleteOwned)
	}
	return true
}

// stopChannel sends what the channel holds at once for at most grace, stops
// its forwarder, deletes the channel if asked and owned, and retires the
// sink (what it still held is counted as dropped for reason).
func (r *Registry) stopChannel(s *Session, ch *channel, grace time.Duration, reason string, deleteOwned bool) {
	if grace > 0 {
		ctx, cancel := context.WithTimeout(r.o.SinkCtx, grace)
		r.o.Sinks.DrainOne(ctx, ch.name)
		cancel()
	}
	ch.close()
	r.o.Sinks.Stop(ch.name)
	if deleteOwned && s.OwnsChannel {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := ch.pub.DeleteChannel(dctx); err != nil {
			r.o.Logger.Warn("could not delete the session's channel", "session_id", s.SessionID, "err", err)
		}
		cancel()
	}
	if reason == "" {
		reason = relay.DropChannelClosed
	}
	r.o.Sinks.Retire(ch.name, reason)
}
