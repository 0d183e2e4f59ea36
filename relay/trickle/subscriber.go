package trickle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/internal/logthrottle"

	"github.com/cenkalti/backoff/v4"

	"github.com/livepeer/edgerelay/relay"
)

// Malformed reasons counted by the subscriber besides FrameError fields.
const (
	MalformedTruncated = "truncated" // a frame cut off by the end of its segment
	MalformedOversize  = "oversize"  // a line longer than MaxFrameBytes
)

// Reasons in SubscriberStats.Ended.
const (
	EndedNotFound = "not_found" // 404: unknown, deleted, swept, or the server restarted
	EndedClosed   = "closed"    // Lp-Trickle-Closed
)

// maxFrameTypes bounds the Frames counter's keys: frame types come from the
// channel, and a hostile writer must not grow the map without bound.
const maxFrameTypes = 32

// errIdle cancels a GET that brought nothing for IdleTimeout.
var errIdle = errors.New("trickle: no byte for the idle timeout")

// heldSegments is how many segments a go-livepeer server keeps per
// channel (spec/trickle.md).
const heldSegments = 5

// jumpsBeforeBackoff is how many 470 jumps in a row are taken at once;
// more means the server keeps pointing at seqs it does not hold, and the
// subscriber backs off instead of spinning.
const jumpsBeforeBackoff = 3

// SubscriberStats are a subscriber's counters since NewSubscriber.
type SubscriberStats struct {
	Requests   map[string]uint64 // GETs by status code, or "error"
	Segments   uint64            // segments read to their end
	Frames     map[string]uint64 // frames by type (32 types at most, the rest under "other")
	Relayed    uint64            // telemetry envelopes handed to OnEnvelope
	Duplicates uint64            // telemetry envelopes skipped: id seen within the dedupe window
	Malformed  map[string]uint64 // rejected frames by reason: a FrameError field, "truncated", "oversize"
	Reconnects uint64            // GETs retried after a transient error
	Jumps      uint64            // jumps to Lp-Trickle-Latest after a 470 that skip segments
	Skipped    uint64            // segments those jumps skipped: lost to this reader
	Gone       uint64            // times a Persistent channel answered 404 or Lp-Trickle-Closed and was probed until back
	Ended      string            // why Run returned relay.ErrClosed (EndedNotFound, EndedClosed); "" before
}

// MalformedTotal sums Malformed over reasons.
func (s SubscriberStats) MalformedTotal() uint64 {
	var n uint64
	for _, v := range s.Malformed {
		n += v
	}
	return n
}

// Subscriber follows one trickle channel from its live edge and relays the
// telemetry frames it carries: each envelope is checked, annotated with
// relayed_via and relay_received_timestamp (AnnotateRelay), and handed to
// OnEnvelope in channel order. Other frames are counted and ignored;
// malformed ones are counted by reason and never stop it.
//
// Run is called by one goroutine at a time; Stats is safe for concurrent
// use.
type Subscriber struct {
	opts   SubscriberOptions // defaults applied
	client *http.Client
	log    *slog.Logger

	mu sync.Mutex      // guards st
	st SubscriberStats // maps never nil
}

// NewSubscriber checks opts and returns a subscriber; nothing is read
// before Run.
func NewSubscriber(opts SubscriberOptions) (*Subscriber, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	s := &Subscriber{
		opts:   o,
		client: relay.NewHTTPClient(relay.HTTPClientOptions{Insecure: o.Insecure, Dial: o.DialContext}),
		log:    o.Logger.With("channel", relay.RedactURL(o.URL)),
		st: SubscriberStats{
			Requests:  make(map[string]uint64),
			Frames:    make(map[string]uint64),
			Malformed: make(map[string]uint64),
		},
	}
	if o.Insecure && strings.HasPrefix(o.URL, "https:") {
		s.log.Warn("TLS certificate verification is off for this trickle channel (EDGERELAY_TRICKLE_INSECURE)")
	}
	return s, nil
}

// Stats returns a copy of the counters.
func (s *Subscriber) Stats() SubscriberStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Requests = maps.Clone(s.st.Requests)
	st.Frames = maps.Clone(s.st.Frames)
	st.Malformed = maps.Clone(s.st.Malformed)
	return st
}

func (s *Subscriber) count(f func(st *SubscriberStats)) {
	s.mu.Lock()
	f(&s.st)
	s.mu.Unlock()
}

// Run follows the channel until ctx ends (returning ctx.Err()) or the
// channel ends: 404 or Lp-Trickle-Closed (returning relay.ErrClosed). It
// starts at the live edge (GET <chan>/-1), reads each segment as it is
// written, jumps to Lp-Trickle-Latest on a 470 (a slow reader loses the
// segments it skipped), and after a transient error asks again with backoff,
// resuming a half-read segment where it stopped.
func (s *Subscriber) Run(ctx context.Context) error {
	defer s.client.CloseIdleConnections()
	r := &subRun{
		s:          s,
		seq:        -1,
		dead:       -1,
		partialSeq: -1,
		bo:         s.opts.NewBackOff(),
		buf:        make([]byte, 32<<10),
		dedupe:     newDedupe(s.opts.DedupeWindow),
		warnNet:    logthrottle.New(time.Minute, 1),
		warnFrame:  logthrottle.New(time.Minute, 1),
	}
	s.log.Info("trickle subscriber started", "seq", "live edge")
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := r.segment(ctx)
		switch {
		case err == nil:
		case errors.Is(err, relay.ErrClosed) && s.opts.Persistent:
			// A static channel comes back (a restarted orchestrator creates
			// it again at seq 0): probe until it does.
			if r.probe == 0 {
				s.log.Warn("trickle channel gone; probing until it is back", "reason", s.Stats().Ended, "seq", r.seq)
				r.probe = time.Second
			} else {
				r.probe = min(2*r.probe, ProbeMax)
			}
			s.count(func(st *SubscriberStats) { st.Gone++ })
			r.endSegment()
			r.seq, r.partialSeq, r.partialBytes, r.dead = 0, -1, 0, -1
			t := time.NewTimer(r.probe)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		case errors.Is(err, relay.ErrClosed):
			s.log.Info("trickle channel ended; subscriber stops", "reason", s.Stats().Ended, "seq", r.seq)
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			d := r.bo.NextBackOff()
			s.count(func(st *SubscriberStats) { st.Reconnects++ })
			if r.warnNet.Allow() {
				s.log.Warn("trickle read failed; reconnecting", "seq", r.seq, "retry_in", d, "suppressed", r.warnNet.Suppressed(), "err", err)
			}
			r.failing = true
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}

// subRun is the state of one Run; only the Run goroutine touches it.
type subRun struct {
	s   *Subscriber
	bo  backoff.BackOff
	buf []byte

	seq          int64 // the seq to GET next; -1 is the live edge
	dead         int64 // last seq found abandoned at the write position, -1 when none
	partialSeq   int64 // seq read partly before a transient error, -1 when none
	partialBytes int64 // bytes of partialSeq already consumed
	jumpsInRow   int
	probe        time.Duration // the next probe wait of a gone Persistent channel; 0 when not gone
	failing      bool

	line     []byte // the current line, carried within one segment
	oversize bool   // skipping the rest of a line over MaxFrameBytes
	doc      []byte // a frame spanning lines (a pretty-printed segment document)

	dedupe    *dedupe
	warnNet   *logthrottle.Throttle
	warnFrame *logthrottle.Throttle
}

// segment reads one segment (or learns where to jump). nil means the
// segment was read to its end; relay.ErrClosed ends the channel; any other
// error is transient.
func (r *subRun) segment(ctx context.Context) error {
	s := r.s
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := time.AfterFunc(s.opts.IdleTimeout, func() { cancel(errIdle) })
	defer idle.Stop()

	req, err := http.NewRequestWithContext(rctx, http.MethodGet, s.opts.URL+"/"+strconv.FormatInt(r.seq, 10), nil)
	if err != nil {
		panic("BUG: trickle: segment request: " + err.Error()) // the URL was validated
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.count(func(st *SubscriberStats) { st.Requests["error"]++ })
		return cause(rctx, relay.RedactError(err))
	}
	defer resp.Body.Close()
	s.count(func(st *SubscriberStats) { st.Requests[statusCode(resp.StatusCode)]++ })

	// Lp-Trickle-Closed first: a closed channel's answer is not data.
	if resp.Header.Get(headerClosed) != "" {
		s.count(func(st *SubscriberStats) { st.Ended = EndedClosed })
		return relay.ErrClosed
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		s.count(func(st *SubscriberStats) { st.Ended = EndedNotFound })
		return relay.ErrClosed
	case statusNotHeld:
		latest, ok := headerInt(resp.Header, headerLatest)
		if !ok || latest < 0 {
			return fmt.Errorf("GET %d answered 470 without Lp-Trickle-Latest", r.seq)
		}
		from := r.seq
		if n, ok := headerInt(resp.Header, headerSeq); ok && from < 0 {
			from = n // the seq the live edge resolved to
		}
		return r.jump(from, latest)
	default:
		return fmt.Errorf("GET %d answered %d", r.seq, resp.StatusCode)
	}
	r.jumpsInRow = 0

	served := r.seq
	if n, ok := headerInt(resp.Header, headerSeq); ok && n >= 0 {
		served = n
	}
	skip := int64(0)
	if served >= 0 && served == r.partialSeq {
		skip = r.partialBytes // the server streams from byte 0 again
	} else {
		r.endSegment() // a half-read segment we will not see again
		r.partialSeq, r.partialBytes = served, 0
	}
	r.seq = served
	got := false // any byte of the segment came
	for {
		n, err := resp.Body.Read(r.buf)
		got = got || n > 0
		if n > 0 {
			// The idle clock measures the server, not OnEnvelope.
			idle.Stop()
			p := r.buf[:n]
			if skip > 0 {
				k := min(skip, int64(len(p)))
				p, skip = p[k:], skip-k
			}
			r.partialBytes += int64(len(p))
			r.feed(p)
			idle.Reset(s.opts.IdleTimeout)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if served < 0 {
				r.endSegment() // no seq to resume: what was half-read is lost
				r.partialSeq, r.partialBytes = -1, 0
			}
			return cause(rctx, err)
		}
	}
	r.endSegment()
	r.partialSeq, r.partialBytes = -1, 0
	s.count(func(st *SubscriberStats) { st.Segments++ })
	if served >= 0 {
		r.seq = served + 1
		// The go-livepeer server answers 200 with no body for a segment
		// ended before its first byte (DELETEd, reset, its slot taken):
		// if it was abandoned, the write position stays on it and the
		// next seq answers 470 naming it. That is not a restarted server
		// to read again from its oldest segment (jump would bounce
		// between the two without a pause): remember it.
		if r.dead = -1; !got {
			r.dead = served
		}
	} else {
		r.seq = -1
	}
	r.bo.Reset()
	if r.probe > 0 {
		r.probe = 0
		s.log.Info("trickle channel back; reading again", "seq", served)
	}
	if r.failing {
		r.failing = false
		r.warnNet.Reset()
		s.log.Info("trickle reading recovered", "seq", served)
	}
	return nil
}

// cause prefers the idle timeout's cause to the transport's wording.
func cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); errors.Is(c, errIdle) {
		return c
	}
	return err
}

// jump moves to the server's write position after a 470: the seq asked for
// is no longer (or not yet) held.
func (r *subRun) jump(from, latest int64) error {
	r.endSegment()
	r.partialSeq, r.partialBytes = -1, 0
	switch {
	case from >= 0 && latest == from:
		// The server holds from but it is dead: abandoned before its first
		// byte, so the write position stayed there. The writer goes on at
		// from+1.
		r.seq, r.dead = from+1, from
		return nil
	case from >= 0 && latest == from+1:
		// Nothing skipped: from is the next write.
		r.seq, r.jumpsInRow = latest, 0
		return nil
	case from >= 0 && latest < from && latest == r.dead:
		// Still stuck at the dead seq: jumping back would bounce, and
		// could skip from once it is written. Wait here.
		return fmt.Errorf("waiting for seq %d: the write position is still at the abandoned seq %d", from, latest)
	case from < 0:
		r.seq = latest // not anywhere yet: nothing skipped
		return nil
	case from >= 0 && latest < from:
		// The write position went back: a restarted server (its channel
		// starts again at 0) or a publisher that reset. Read what it holds
		// from the oldest segment it keeps.
		r.seq = max(0, latest-heldSegments+1)
		skipped := uint64(max(0, latest-heldSegments+1))
		r.s.count(func(st *SubscriberStats) { st.Skipped += skipped })
		r.s.log.Info("trickle write position went back (a restarted server?); reading the channel again from its oldest held segment",
			"from_seq", from, "latest", latest, "to_seq", r.seq)
		return nil
	}
	r.seq = latest
	r.jumpsInRow++
	skipped := uint64(0)
	if from >= 0 && latest > from {
		skipped = uint64(latest - from)
	}
	r.s.count(func(st *SubscriberStats) { st.Jumps++; st.Skipped += skipped })
	if r.warnNet.Allow() {
		r.s.log.Warn("trickle reader fell behind; segments skipped are lost", "channel", relay.RedactURL(r.s.opts.URL),
			"from_seq", from, "to_seq", latest, "skipped", skipped, "suppressed", r.warnNet.Suppressed())
	}
	if r.jumpsInRow > jumpsBeforeBackoff {
		return fmt.Errorf("%d jumps in a row (last to %d)", r.jumpsInRow, latest)
	}
	return nil
}

// feed splits segment bytes into lines; a partial last line waits for the
// rest of the segment.
func (r *subRun) feed(p []byte) {
	max := r.s.opts.MaxFrameBytes
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if !r.oversize {
				if len(r.line)+len(p) > max {
					r.malformed(MalformedOversize, nil)
					r.oversize, r.line = true, r.line[:0]
				} else {
					r.line = append(r.line, p...)
				}
			}
			return
		}
		switch {
		case r.oversize:
			r.oversize = false
		case len(r.line)+i > max:
			r.malformed(MalformedOversize, nil)
			r.line = r.line[:0]
		case len(r.line) == 0:
			r.handleLine(p[:i])
		default:
			r.line = append(r.line, p[:i]...)
			r.handleLine(r.line)
			r.line = r.line[:0]
		}
		p = p[i+1:]
	}
}

// endSegment handles what the segment's end leaves: an unterminated last
// line is a frame (a segment that is one JSON document without '\n'); an
// unfinished multi-line document is truncated. Nothing carries over to the
// next segment.
func (r *subRun) endSegment() {
	if len(r.line) > 0 && !r.oversize {
		r.handleLine(r.line)
	}
	r.line, r.oversize = r.line[:0], false
	if len(r.doc) > 0 {
		r.malformed(MalformedTruncated, nil)
		r.doc = r.doc[:0]
	}
}

// handleLine takes one line. Most lines are whole frames; a line that
// starts a JSON value it does not finish begins a multi-line document,
// which go-livepeer's one-document-per-segment framing allows.
func (r *subRun) handleLine(line []byte) {
	t := bytes.TrimSpace(line)
	if len(t) == 0 {
		return
	}
	max := r.s.opts.MaxFrameBytes
	if len(r.doc) > 0 {
		if t[0] == '{' && json.Valid(t) {
			// A whole frame line: the document before it was cut off.
			r.malformed(MalformedTruncated, nil)
			r.doc = r.doc[:0]
			r.frame(t)
			return
		}
		r.doc = append(r.doc, '\n')
		r.doc = append(r.doc, t...)
		switch {
		case json.Valid(r.doc):
			r.frame(r.doc)
			r.doc = r.doc[:0]
		case len(r.doc) > max:
			r.malformed(MalformedOversize, nil)
			r.doc = r.doc[:0]
		}
		return
	}
	typ, event, err := envelope.ParseFrame(t)
	var fe *envelope.FieldError
	if errors.As(err, &fe) && fe.Field == "frame" && t[0] == '{' && unfinished(t) {
		r.doc = append(r.doc[:0], t...)
		return
	}
	if errors.As(err, &fe) && fe.Field == "type" && r.gatewayFrame(t) {
		return
	}
	r.take(typ, event, err)
}

// unfinished reports whether b is the start of a JSON value that ends
// later, rather than invalid JSON.
func unfinished(b []byte) bool {
	var v json.RawMessage
	err := json.NewDecoder(bytes.NewReader(b)).Decode(&v)
	return errors.Is(err, io.ErrUnexpectedEOF)
}

// frame takes one complete frame.
func (r *subRun) frame(b []byte) {
	typ, event, err := envelope.ParseFrame(b)
	var fe *envelope.FieldError
	if errors.As(err, &fe) && fe.Field == "type" && r.gatewayFrame(b) {
		return
	}
	r.take(typ, event, err)
}

// gatewayFrame takes a document in the gateway's shape, when b is one of
// ours, and reports whether it was.
func (r *subRun) gatewayFrame(b []byte) bool {
	if !json.Valid(b) {
		return false
	}
	envs, ok := envelope.ParseGatewayFrame(b)
	if !ok {
		return false
	}
	r.countFrame(FrameGateway)
	for _, e := range envs {
		r.relay(e)
	}
	return true
}

// FrameGateway is the Frames key of documents in the gateway's shape.
const FrameGateway = "gateway"

// take acts on a parsed frame: counts it, relays telemetry.
func (r *subRun) take(typ string, event json.RawMessage, err error) {
	if err != nil {
		r.malformed("", err)
		return
	}
	r.countFrame(typ)
	if typ != envelope.FrameTelemetry {
		return
	}
	r.relay(event)
}

// countFrame counts a frame by type (at most maxFrameTypes keys).
func (r *subRun) countFrame(typ string) {
	key := typ
	if len(key) > 64 {
		key = "other"
	}
	r.s.count(func(st *SubscriberStats) {
		if _, ok := st.Frames[key]; !ok && len(st.Frames) >= maxFrameTypes {
			key = "other"
		}
		st.Frames[key]++
	})
}

// relay checks and annotates one envelope and hands it on, unless it is a
// duplicate.
func (r *subRun) relay(event []byte) {
	env, checked, err := envelope.AnnotateRelay(event, r.s.opts.Now())
	if err != nil {
		r.malformed("", err)
		return
	}
	if r.dedupe.seen(checked.ID) {
		r.s.count(func(st *SubscriberStats) { st.Duplicates++ })
		return
	}
	// Counted first: whoever OnEnvelope hands the envelope to (a test's
	// collector, the agent's pipeline) then never sees it before its count.
	r.s.count(func(st *SubscriberStats) { st.Relayed++ })
	r.s.opts.OnEnvelope(env, checked)
}

// malformed counts a rejected frame under reason, or under the field of
// err's FrameError.
func (r *subRun) malformed(reason string, err error) {
	var fe *envelope.FieldError
	if errors.As(err, &fe) {
		reason = fe.Field
	}
	r.s.count(func(st *SubscriberStats) { st.Malformed[reason]++ })
	if r.warnFrame.Allow() {
		r.s.log.Warn("trickle frame rejected; skipped", "reason", reason, "seq", r.seq, "suppressed", r.warnFrame.Suppressed(), "err", err)
	}
}

// dedupe remembers the last n envelope ids. A nil dedupe remembers nothing.
type dedupe struct {
	ids  map[string]struct{}
	ring []string
	next int
}

func newDedupe(n int) *dedupe {
	if n <= 0 {
		return nil
	}
	return &dedupe{ids: make(map[string]struct{}, n), ring: make([]string, 0, n)}
}

// seen reports whether id is among the remembered ids, and remembers it.
func (d *dedupe) seen(id string) bool {
	if d == nil {
		return false
	}
	if _, ok := d.ids[id]; ok {
		return true
	}
	if len(d.ring) < cap(d.ring) {
		d.ring = append(d.ring, id)
	} else {
		delete(d.ids, d.ring[d.next])
		d.ring[d.next] = id
		d.next = (d.next + 1) % len(d.ring)
	}
	d.ids[id] = struct{}{}
	return false
}
