package trickle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/internal/logthrottle"
	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// probeSeq is the far-ahead seq whose 470 tells a legacy server's write
// position (servers without /next; spec/trickle.md, "Restart position").
const probeSeq = 1<<31 - 1

// Publisher writes records to a trickle channel. It is a relay.Sink: the
// one delivery loop (relay.Forwarder) reads batches from the spool and hands
// them to Send, which writes them as whole segments, no two closer than
// Pace; the forwarder's linger gathers a batch for SegmentInterval, and its
// Idle hook sends the keep-alive (Tune sets both).
//
// A record is acknowledged only when the POST of the segment that carried it
// is answered 200. A failed segment is retried under the same seq only when
// none of its bytes left; otherwise its seq is DELETEd and its records go
// again in a later seq (readers de-duplicate by envelope id), so a completed
// seq is never POSTed twice. After a 404 or a transport failure the
// publisher learns the write position again (GET <chan>/next) and marks its
// next POST with Lp-Trickle-Reset, so that readers of a restarted server
// never wait on a stale seq. A 404 or Lp-Trickle-Closed ends a session's
// channel (relay.ErrClosed) and pauses a Persistent one, which then probes
// until the channel is back.
//
// Send and KeepAlive are called by one goroutine (the forwarder);
// DeleteChannel and Stats are safe for concurrent use with them.
type Publisher struct {
	opts   PublisherOptions // defaults applied
	client *http.Client
	log    *slog.Logger
	// contentType of the segments: JSON lines, or one JSON document in
	// gateway framing (as the orchestrator creates the gateway's channel).
	contentType string

	// Owned by the forwarder's goroutine.
	seq      int64         // the seq the next segment is POSTed to; -1 until learned
	reset    bool          // send Lp-Trickle-Reset on the next POST (until one succeeds)
	lastPost time.Time     // when the last segment's POST began, for Pace
	probe    time.Duration // the next probe wait of a gone Persistent channel; 0 when not gone
	learned  bool          // the position was learned since the last POST: any connection may carry the next
	body     []byte        // the segment being built; reused
	compact  bytes.Buffer  // scratch for records that span lines
	failing  bool          // the last segment failed, to log the recovery once
	warn     *logthrottle.Throttle
}

// NewPublisher checks opts and returns a publisher; nothing is sent before
// the first Send or KeepAlive.
func NewPublisher(opts PublisherOptions) (*Publisher, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	p := &Publisher{
		opts:        o,
		client:      relay.NewHTTPClient(relay.HTTPClientOptions{Insecure: o.Insecure, Dial: guardDial(o.DialContext)}),
		log:         o.Logger.With("channel", relay.RedactURL(o.URL), "framing", o.Framing),
		seq:         -1,
		warn:        logthrottle.New(time.Minute, 1),
		contentType: "application/jsonl",
	}
	if o.Framing == FramingGateway {
		p.contentType = "application/json"
	}
	if o.Insecure && strings.HasPrefix(o.URL, "https:") {
		p.log.Warn("TLS certificate verification is off for this trickle channel (EDGERELAY_TRICKLE_INSECURE)")
	}
	return p, nil
}

// Stats returns the counters the publisher updates: requests by status code
// (every POST, GET and DELETE). The forwarder counts records and retries in
// the same Stats.
func (p *Publisher) Stats() *relay.Stats { return p.opts.Stats }

// MaxEventBytes is the largest envelope this publisher can carry in one
// segment of SegmentMaxBytes, frame included: the agent refuses larger
// events at ingest, so nothing it acknowledges is undeliverable here.
func (p *Publisher) MaxEventBytes() int { return MaxEventBytes(p.opts.Framing, p.opts.SegmentMaxBytes) }

// MaxEventBytes is the largest envelope a publisher of framing carries in a
// segment of maxSegment bytes (0 means DefaultSegmentMaxBytes).
func MaxEventBytes(framing string, maxSegment int) int {
	if maxSegment == 0 {
		maxSegment = DefaultSegmentMaxBytes
	}
	if framing == FramingGateway || framing == FramingSegment {
		// The longest family name an envelope may carry counts too: the
		// event's type repeats it.
		return maxSegment - envelope.GatewayFrameLen(strings.Repeat("x", maxFamilyBytes), 1, 0) - 1
	}
	return maxSegment - frameLen(nil, true)
}

// maxFamilyBytes bounds the event type a gateway frame repeats; envelopes
// with a longer type travel under a shortened family.
const maxFamilyBytes = 64

// Tune sets the forwarder fields the publisher needs: batches that fill a
// segment, the linger that gathers one, and the keep-alive.
func (p *Publisher) Tune(f *relay.Forwarder) {
	f.Batch = readBatch
	f.MaxBytes = p.opts.SegmentMaxBytes * 15 / 16 // room for the frame wrappers
	if p.opts.Framing == FramingJSONL {
		// Segments are bounded by bytes: a count bound would cut a backlog
		// into many small segments, and a reader keeps only the last 5.
		f.Batch = jsonlBatch
	}
	f.Linger = p.opts.SegmentInterval
	f.Idle, f.IdleAfter = p.KeepAlive, p.opts.KeepAlive
}

// planned is one segment Send will write: its body and the batch indexes of
// the records it carries.
type planned struct {
	body []byte
	recs []int
}

// Send writes recs as whole segments. jsonl packs frame lines into
// segments of at most SegmentMaxBytes, in order; gateway framing gathers the
// envelopes of each family into one document per segment (a sampler tick's
// GPUs go together) and writes the runner's own frames alone, one per
// segment. Segments are paced (Pace apart). Before the first segment, and
// again after a fault, Send learns the server's write position (GET
// <chan>/next; on servers without it, the 470 of a far-ahead seq) and marks
// that POST with Lp-Trickle-Reset: 1. Records that cannot be a frame are
// dropped (relay.DropRejected), and so are frames larger than a segment
// (relay.DropOversize; the agent refuses such events at ingest).
func (p *Publisher) Send(ctx context.Context, recs []spool.Record) relay.Result {
	if err := p.start(ctx); err != nil {
		return relay.Result{Err: err}
	}
	done := make([]bool, len(recs))
	var drops []relay.Drop
	var plan []planned
	if p.opts.Framing == FramingGateway {
		plan = p.planGateway(recs, done, &drops)
	} else {
		plan = p.planJSONL(recs, done, &drops)
	}
	for _, seg := range plan {
		if err := p.pace(ctx); err != nil {
			return p.partial(recs, done, drops, err)
		}
		if err := p.post(ctx, seg.body, len(seg.recs)); err != nil {
			return p.partial(recs, done, drops, err)
		}
		for _, i := range seg.recs {
			done[i] = true
		}
		if p.opts.Alive != nil {
			p.opts.Alive()
		}
	}
	return relay.Result{Settled: len(recs), Dropped: drops}
}

// partial is the result of a Send that failed: the records settled are the
// leading ones whose segments were accepted (or that were dropped). Records
// of accepted segments after the first unsettled one go again later, as
// duplicates, which receivers drop by envelope id.
func (p *Publisher) partial(recs []spool.Record, done []bool, drops []relay.Drop, err error) relay.Result {
	n := 0
	for n < len(done) && done[n] {
		n++
	}
	var settledDrops []relay.Drop
	for _, d := range drops {
		if n > 0 && d.Seq <= recs[n-1].Seq {
			settledDrops = append(settledDrops, d)
		}
	}
	return relay.Result{Settled: n, Dropped: settledDrops, Err: err}
}

// drop settles record i as dropped for reason, without a segment.
func (p *Publisher) drop(recs []spool.Record, i int, reason string, done []bool, drops *[]relay.Drop) {
	done[i] = true
	*drops = append(*drops, relay.Drop{Seq: recs[i].Seq, Reason: reason})
	if p.warn.Allow() {
		p.log.Warn("record dropped: it cannot be sent as a frame", "record_seq", recs[i].Seq, "bytes", len(recs[i].Data),
			"reason", reason, "max_segment_bytes", p.opts.SegmentMaxBytes, "suppressed", p.warn.Suppressed())
	}
}

// planJSONL packs frame lines into segments of at most SegmentMaxBytes,
// in order.
func (p *Publisher) planJSONL(recs []spool.Record, done []bool, drops *[]relay.Drop) []planned {
	// Slices into body stay valid: body is sized for the whole batch first.
	size := 0
	for _, r := range recs {
		size += frameLen(r.Data, p.opts.Wrap)
	}
	body := slices.Grow(p.body[:0], size)
	var plan []planned
	start := 0 // where the current segment begins in body
	var cur []int
	flush := func() {
		if len(cur) > 0 {
			plan = append(plan, planned{body: body[start:len(body):len(body)], recs: cur})
			cur, start = nil, len(body)
		}
	}
	for i, rec := range recs {
		line, ok := p.line(rec.Data)
		if !ok {
			p.drop(recs, i, relay.DropRejected, done, drops)
			continue
		}
		n := frameLen(line, p.opts.Wrap)
		if n > p.opts.SegmentMaxBytes {
			p.drop(recs, i, relay.DropOversize, done, drops)
			continue
		}
		if len(cur) > 0 && len(body)-start+n > p.opts.SegmentMaxBytes {
			flush()
		}
		body = p.appendFrame(body, line)
		cur = append(cur, i)
	}
	flush()
	p.body = body
	return plan
}

// planGateway gathers the envelopes of each family into documents of at
// most SegmentMaxBytes, in the order the families first appear; records
// that are frames of the runner's own (a session channel) go alone.
func (p *Publisher) planGateway(recs []spool.Record, done []bool, drops *[]relay.Drop) []planned {
	type group struct {
		family string
		envs   [][]byte
		recs   []int
		bytes  int
	}
	var order []*group
	open := map[string]*group{}
	var plan []planned
	// Slices into body stay valid: body is sized for the whole batch first.
	size := 0
	for _, r := range recs {
		size += len(r.Data) + 256
	}
	body := slices.Grow(p.body[:0], size)
	emit := func(g *group) {
		start := len(body)
		body = envelope.AppendGatewayFrame(body, g.family, g.envs)
		plan = append(plan, planned{body: body[start:len(body):len(body)], recs: g.recs})
	}
	for i, rec := range recs {
		env, verbatim := p.gatewayEnvelope(rec.Data)
		switch {
		case verbatim != nil:
			if len(verbatim) > p.opts.SegmentMaxBytes {
				p.drop(recs, i, relay.DropOversize, done, drops)
				continue
			}
			start := len(body)
			body = append(body, verbatim...)
			plan = append(plan, planned{body: body[start:len(body):len(body)], recs: []int{i}})
			continue
		case env == nil:
			p.drop(recs, i, relay.DropRejected, done, drops)
			continue
		}
		family, _ := envelope.TypeOf(env)
		if len(family) > maxFamilyBytes {
			family = family[:maxFamilyBytes]
		}
		if envelope.GatewayFrameLen(family, 1, len(env)) > p.opts.SegmentMaxBytes {
			p.drop(recs, i, relay.DropOversize, done, drops)
			continue
		}
		g := open[family]
		if g != nil && envelope.GatewayFrameLen(family, len(g.envs)+1, g.bytes+len(env)) > p.opts.SegmentMaxBytes {
			emit(g)
			delete(open, family)
			g = nil
		}
		if g == nil {
			g = &group{family: family}
			open[family] = g
			order = append(order, g)
		}
		g.envs = append(g.envs, env)
		g.recs = append(g.recs, i)
		g.bytes += len(env)
	}
	for _, g := range order {
		if open[g.family] == g {
			emit(g)
		}
	}
	// Segments in the order of their first record, so that a failure
	// leaves the longest settled prefix.
	slices.SortStableFunc(plan, func(a, b planned) int { return a.recs[0] - b.recs[0] })
	p.body = body
	return plan
}

// gatewayEnvelope sorts a record for gateway framing: an envelope to gather
// (a stored envelope, or the event of a telemetry frame in a session's log),
// or a document of the runner's own to send verbatim. Both nil: the record
// cannot be sent.
func (p *Publisher) gatewayEnvelope(data []byte) (env, verbatim []byte) {
	line, ok := p.line(data)
	if !ok {
		return nil, nil
	}
	line = append([]byte(nil), line...) // p.line may return its scratch buffer
	if p.opts.Wrap {
		return line, nil
	}
	typ, ev, err := envelope.ParseFrame(line)
	if err == nil && typ == envelope.FrameTelemetry {
		return ev, nil
	}
	return nil, line
}

// line returns a record's bytes as one line: records that span lines are
// compacted (raw newlines in valid JSON are insignificant whitespace).
// Empty records and multi-line records that are not JSON cannot be framed.
func (p *Publisher) line(data []byte) ([]byte, bool) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, false
	}
	if bytes.IndexByte(data, '\n') < 0 && bytes.IndexByte(data, '\r') < 0 {
		return data, true
	}
	p.compact.Reset()
	if err := json.Compact(&p.compact, data); err != nil {
		return nil, false
	}
	return p.compact.Bytes(), true
}

// appendFrame appends a record's jsonl frame line.
func (p *Publisher) appendFrame(dst, data []byte) []byte {
	if p.opts.Wrap {
		dst = envelope.WrapTelemetry(dst, data)
	} else {
		dst = append(dst, data...)
	}
	return append(dst, '\n')
}

func frameLen(data []byte, wrap bool) int {
	n := len(data) + 1
	if wrap {
		n += len(envelope.TelemetryFramePrefix) + 1
	}
	return n
}

// KeepAlive sends a keep-alive frame: a real event (KeepAliveEvent) in the
// channel's framing, which every reader parses (an empty segment is not a
// keep-alive for the gateway and ends livepeer-python-gateway's reader). It
// is the forwarder's Idle hook.
func (p *Publisher) KeepAlive(ctx context.Context) error {
	if err := p.start(ctx); err != nil {
		return err
	}
	var env []byte
	if p.opts.KeepAliveEvent != nil {
		env = p.opts.KeepAliveEvent()
	}
	var body []byte
	switch {
	case env == nil && p.opts.Framing == FramingGateway:
		body = []byte(`{"queue_event_type":"` + envelope.QueueEventType + `","event":{"type":"keepalive","client_source":"` + envelope.ClientSource + `"}}`)
	case env == nil:
		body = []byte("{\"type\":\"keepalive\"}\n")
	case p.opts.Framing == FramingGateway:
		family, _ := envelope.TypeOf(env)
		body = envelope.AppendGatewayFrame(nil, family, [][]byte{env})
	default:
		body = append(envelope.WrapTelemetry(nil, env), '\n')
	}
	if err := p.pace(ctx); err != nil {
		return err
	}
	return p.post(ctx, body, 0)
}

// pace waits until Pace has passed since the last segment began.
func (p *Publisher) pace(ctx context.Context) error {
	if p.opts.Pace <= 0 || p.lastPost.IsZero() {
		return nil
	}
	wait := time.Until(p.lastPost.Add(p.opts.Pace))
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// start learns the write position when it is not known: at the first
// segment, and after a 404 or a transport failure.
func (p *Publisher) start(ctx context.Context) error {
	if p.seq >= 0 {
		return nil
	}
	seq, legacy, err := p.resolve(ctx)
	if err != nil {
		return fmt.Errorf("trickle write position unknown: %w", err)
	}
	p.seq, p.reset, p.learned = seq, true, true
	p.log.Info("trickle publisher at the write position", "seq", seq, "legacy_server", legacy)
	return nil
}

// resolve asks GET <chan>/next; a 400 marks a server older than v0.8.11,
// which tells its position in the 470 of a far-ahead seq. A 404 means the
// channel does not exist yet: start at 0 and let the first POST create it
// (autocreate servers) or end the channel (orchestrators).
func (p *Publisher) resolve(ctx context.Context) (seq int64, legacy bool, err error) {
	code, h, err := p.request(ctx, http.MethodGet, p.opts.URL+"/next")
	if err != nil {
		return 0, false, err
	}
	switch code {
	case http.StatusOK:
		if n, ok := headerInt(h, headerLatest); ok && n >= 0 {
			return n, false, nil
		}
		return 0, false, errors.New("GET /next: no Lp-Trickle-Latest")
	case http.StatusNotFound:
		return 0, false, nil
	case http.StatusBadRequest:
	default:
		return 0, false, statusError("GET /next", code, h)
	}
	code, h, err = p.request(ctx, http.MethodGet, p.opts.URL+"/"+strconv.Itoa(probeSeq))
	if err != nil {
		return 0, true, err
	}
	switch code {
	case statusNotHeld:
		if n, ok := headerInt(h, headerLatest); ok && n >= 0 {
			return n, true, nil
		}
		return 0, true, errors.New("470 probe: no Lp-Trickle-Latest")
	case http.StatusNotFound:
		return 0, true, nil
	}
	return 0, true, statusError("470 probe", code, h)
}

// post POSTs one whole segment (carrying records of the batch; body is
// never empty) at p.seq and acts on the answer: 200 moves to the next seq;
// 404 or Lp-Trickle-Closed is the channel gone (gone); anything else is an
// error for the forwarder to classify, after the seq was DELETEd if any byte
// of it may have left.
func (p *Publisher) post(ctx context.Context, body []byte, records int) error {
	seq := p.seq
	p.lastPost = time.Now()
	pctx, cancel := context.WithTimeout(ctx, p.opts.RequestTimeout)
	defer cancel()
	if !p.learned {
		// A new connection may mean a restarted server, whose channel
		// starts again at seq 0: readers waiting there would never see a
		// segment written at our old seq, and a POST there at our old seq
		// takes the slot of a reader's precreated segment. So this POST
		// may only use a connection already open: dialing a new one fails
		// (guardDial) before any byte of the request exists, and the
		// position is learned again first.
		pctx = context.WithValue(pctx, noFreshConn{}, true)
	}
	br := &bodyReader{r: bytes.NewReader(body)}
	req, err := http.NewRequestWithContext(pctx, http.MethodPost, p.opts.URL+"/"+strconv.FormatInt(seq, 10), br)
	if err != nil {
		panic("BUG: trickle: segment request: " + err.Error()) // the URL was validated
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", p.contentType)
	if p.reset {
		req.Header.Set(headerReset, "1")
	}
	resp, err := p.client.Do(req)
	if err != nil && errors.Is(err, errFreshConn) && br.n.Load() == 0 {
		p.seq = -1
		if err := p.start(ctx); err != nil {
			return err
		}
		return p.post(ctx, body, records)
	}
	p.learned = false
	if err != nil {
		p.opts.Stats.AddRequest(relay.RequestCode(ctx, err))
		return p.failed(ctx, seq, br, records, relay.RedactError(err))
	}
	closed := resp.Header.Get(headerClosed) != ""
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	p.opts.Stats.AddRequest(statusCode(resp.StatusCode))
	switch {
	case closed || resp.StatusCode == http.StatusNotFound:
		return p.gone(seq, resp.StatusCode, closed, records)
	case resp.StatusCode == http.StatusOK:
		if records == 0 {
			p.opts.Stats.MarkSuccess()
		}
		p.seq, p.reset = seq+1, false
		if p.failing || p.probe > 0 {
			p.log.Info("trickle publishing resumed", "seq", seq)
			p.failing, p.probe = false, 0
			p.warn.Reset()
		}
		return nil
	}
	return p.failed(ctx, seq, br, records, statusError(fmt.Sprintf("segment %d", seq), resp.StatusCode, resp.Header))
}

// errFreshConn gives up a POST about to go out on a new connection.
var errFreshConn = errors.New("trickle: a new connection: learn the write position first")

// noFreshConn is the context key of a request that may not dial.
type noFreshConn struct{}

// guardDial wraps dial (nil: a net.Dialer with a 10 s timeout) so that a
// request whose context carries noFreshConn gets errFreshConn instead of a
// new connection. The transport dials with the request's context values,
// so the refusal comes before the request is written: no header of it can
// reach a server it was not meant for. (Cancelling the request when
// httptrace reports a fresh connection, as before, races with the
// transport writing the headers.)
func guardDial(dial relay.DialFunc) relay.DialFunc {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if ctx.Value(noFreshConn{}) != nil {
			return nil, errFreshConn
		}
		return dial(ctx, network, addr)
	}
}

// gone handles a channel that answered 404 or Lp-Trickle-Closed: the
// position must be learned again (a restarted orchestrator starts the
// channel at seq 0); a session's channel ends (relay.ErrClosed), a
// Persistent one pauses and is probed on a backoff up to ProbeMax.
func (p *Publisher) gone(seq int64, status int, closed bool, records int) error {
	p.seq = -1
	cause := fmt.Errorf("segment %d answered %d (closed: %v)", seq, status, closed)
	if !p.opts.Persistent {
		p.log.Info("trickle channel ended", "status", status, "closed_header", closed, "seq", seq, "records", records)
		return fmt.Errorf("%w: %w", cause, relay.ErrClosed)
	}
	if p.probe == 0 {
		p.log.Warn("trickle channel gone; holding its events and probing until it is back", "status", status, "closed_header", closed, "seq", seq)
		p.probe = time.Second
	} else {
		p.probe = min(2*p.probe, ProbeMax)
	}
	return &relay.PausedError{Reason: PauseChannelGone, Err: cause, Probe: p.probe}
}

// PauseChannelGone is the edgerelay_sink_paused reason of a Persistent
// channel that answered 404 or Lp-Trickle-Closed.
const PauseChannelGone = "channel_gone"

// failed handles a segment that was not accepted. The same seq may be
// retried only if no byte of it left; once bytes went out the server may
// hold part of it, and re-POSTing a written seq drops the data: it is
// DELETEd. Either way the write position is learned again before the next
// POST (a transport failure may hide a server restart).
func (p *Publisher) failed(ctx context.Context, seq int64, br *bodyReader, records int, cause error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	abandon := br.n.Load() > 0 || br.eof.Load()
	if abandon {
		if err := p.deleteSeq(ctx, seq); err != nil {
			return err
		}
	}
	p.seq = -1
	p.failing = true
	if p.warn.Allow() {
		p.log.Warn("trickle segment failed", "seq", seq, "abandoned", abandon, "records", records,
			"suppressed", p.warn.Suppressed(), "err", cause)
	}
	return cause
}

// deleteSeq closes a half-written segment so its readers move on. Failure
// is not fatal: gaps are harmless and the next reset also unblocks readers.
func (p *Publisher) deleteSeq(ctx context.Context, seq int64) error {
	code, _, err := p.request(ctx, http.MethodDelete, p.opts.URL+"/"+strconv.FormatInt(seq, 10))
	switch {
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		p.log.Debug("DELETE of a failed segment failed", "seq", seq, "err", err)
	case code == http.StatusNotFound:
		return p.gone(seq, code, false, 0)
	}
	return nil
}

// statusError is the error of an unexpected answer: throttling with its
// Retry-After (the forwarder waits what the server asks), anything else
// transient.
func statusError(what string, code int, h http.Header) error {
	err := fmt.Errorf("%s answered %d", what, code)
	switch code {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		if ra := relay.ParseRetryAfter(h.Get("Retry-After"), time.Now()); ra > 0 || code == http.StatusTooManyRequests {
			return &relay.ThrottledError{RetryAfter: ra, Err: err}
		}
	}
	return err
}

// DeleteChannel closes and removes the channel (DELETE <chan>). That ends
// the session for an orchestrator: only the channel's owner may call it. An
// unknown channel (400 or 404) is not an error.
func (p *Publisher) DeleteChannel(ctx context.Context) error {
	defer p.client.CloseIdleConnections()
	code, _, err := p.request(ctx, http.MethodDelete, p.opts.URL)
	if err != nil {
		return fmt.Errorf("trickle: delete channel: %w", err)
	}
	switch code {
	case http.StatusOK, http.StatusBadRequest, http.StatusNotFound:
		return nil
	}
	return fmt.Errorf("trickle: delete channel: answered %d", code)
}

// Close releases idle connections.
func (p *Publisher) Close() { p.client.CloseIdleConnections() }

// request sends a request without a body under RequestTimeout, counts it,
// and returns the status and headers. A 200 to a GET without
// Lp-Trickle-Latest gets it from the body (/next carries the position in
// both).
func (p *Publisher) request(ctx context.Context, method, url string) (int, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		p.opts.Stats.AddRequest(relay.RequestCode(ctx, err))
		return 0, nil, relay.RedactError(err)
	}
	defer resp.Body.Close()
	p.opts.Stats.AddRequest(statusCode(resp.StatusCode))
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	if resp.StatusCode == http.StatusOK && resp.Header.Get(headerLatest) == "" && method == http.MethodGet {
		// A /next answer also carries the position in its body.
		if b := strings.TrimSpace(string(body)); b != "" {
			resp.Header.Set(headerLatest, b)
		}
	}
	return resp.StatusCode, resp.Header, nil
}

// bodyReader is a segment's request body. It records what the transport
// took: a segment may be retried under the same seq only if it took nothing
// and never saw the end of the body.
type bodyReader struct {
	r   io.Reader
	n   atomic.Int64
	eof atomic.Bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}
