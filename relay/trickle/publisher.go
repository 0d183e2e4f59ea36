package trickle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livepeer/edgerelay/envelope"

	"github.com/cenkalti/backoff/v4"

	"github.com/livepeer/edgerelay/relay"
)

// probeSeq is the far-ahead seq whose 470 tells a legacy server's write
// position (servers without /next; spec/trickle.md, "Restart position").
const probeSeq = 1<<31 - 1

// Publisher writes the records of one cursor to a trickle channel, as
// frame lines streamed into numbered segments.
//
// A record is acknowledged on the cursor only when the POST of the segment
// that carried it is answered 200. A failed segment is retried under the same
// seq only when none of its bytes left; otherwise its seq is DELETEd and its
// records go again in the next seq (readers de-duplicate by envelope id), so
// a completed seq is never POSTed twice. 404 or Lp-Trickle-Closed ends the
// channel: Run returns relay.ErrClosed and the records not acknowledged stay
// in the spool.
//
// Run is called by one goroutine at a time; Flush, DeleteChannel and Stats
// are safe for concurrent use with it.
type Publisher struct {
	opts   PublisherOptions // defaults applied
	client *http.Client
	log    *slog.Logger
	flushc chan chan error // Flush requests, received by Run

	mu      sync.Mutex
	running chan struct{} // guarded by mu; closed when the current Run returns, nil when none runs
}

// NewPublisher checks opts and returns a publisher; nothing is sent before
// Run.
func NewPublisher(opts PublisherOptions) (*Publisher, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	p := &Publisher{
		opts:   o,
		client: newClient(o.Insecure, o.DialContext),
		log:    o.Logger.With("channel", RedactURL(o.URL), "framing", o.Framing),
		flushc: make(chan chan error),
	}
	if o.Insecure && strings.HasPrefix(o.URL, "https:") {
		p.log.Warn("TLS certificate verification is off for this trickle channel (EDGERELAY_TRICKLE_INSECURE)")
	}
	return p, nil
}

// Stats returns the counters the publisher updates: requests by status code
// (every POST, GET and DELETE), retries, delivered and dropped records.
func (p *Publisher) Stats() *relay.Stats { return p.opts.Stats }

// Run publishes records from cur until ctx ends (returning ctx.Err()) or the
// channel ends (returning relay.ErrClosed). It first learns the server's
// write position (GET <chan>/next; on servers without it, the 470 of a
// far-ahead seq) and marks its first POST with Lp-Trickle-Reset: 1. A segment
// open when ctx ends is abandoned unacknowledged: its records stay in the
// spool, and the next publisher's reset unblocks its readers. Call Flush
// first to end it cleanly.
func (p *Publisher) Run(ctx context.Context, cur relay.Cursor) error {
	done := make(chan struct{})
	p.mu.Lock()
	if p.running != nil {
		p.mu.Unlock()
		return errors.New("trickle: Publisher.Run called while running")
	}
	p.running = done
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.running = nil
		p.mu.Unlock()
		close(done)
	}()
	defer p.client.CloseIdleConnections()

	r := &pubRun{
		p:        p,
		cur:      cur,
		bo:       p.opts.NewBackOff(),
		warn:     relay.NewLogThrottle(time.Minute, 1),
		lastPost: time.Now(),
	}
	err := r.loop(ctx)
	r.abort(err)
	r.answerFlush(err)
	return err
}

// Flush ends the open segment now: the records readable from the cursor at
// that moment (up to one read batch) are written into it first, then it is
// closed and its POST awaited. It returns nil once that segment is
// acknowledged, or when Run is not running; the segment's error if it failed;
// ctx.Err() if ctx ends first. Records still pending afterwards go out in
// later segments: a draining agent calls Flush until the sink's pending count
// is zero or its deadline passes, then cancels Run.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	done := p.running
	p.mu.Unlock()
	if done == nil {
		return nil
	}
	reply := make(chan error, 1)
	select {
	case p.flushc <- reply:
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
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
		p.opts.Stats.AddRequest(errorCode(err))
		return 0, nil, err
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

func errorCode(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return "error"
}

// pubRun is the state of one Run; only the Run goroutine touches it.
type pubRun struct {
	p    *Publisher
	cur  relay.Cursor
	bo   backoff.BackOff
	warn *relay.LogThrottle

	seq      int64        // the seq the next segment is POSTed to
	reset    bool         // send Lp-Trickle-Reset on the next POST (until one succeeds)
	seg      *openSegment // the segment being written, nil when none
	pending  []byte       // frames framed but not yet written into seg
	written  uint64       // last record seq framed (into seg, or settled)
	acked    uint64       // last record seq acknowledged on the cursor
	lastPost time.Time    // when the last segment ended, for the keep-alive
	failing  bool         // the last segment failed, for logging the recovery once
	compact  bytes.Buffer // scratch for records that span lines

	flushing bool         // a Flush asked to end the open segment
	flushers []chan error // Flush callers to answer
}

// openSegment is one segment's POST in flight.
type openSegment struct {
	seq    int64
	pw     *io.PipeWriter // the streamed body's write end; nil for a whole body
	pr     *io.PipeReader
	body   *bodyReader     // nil for an empty segment
	res    chan postResult // buffered; the POST goroutine sends once
	early  *postResult     // the answer, when it came before the body ended
	cancel context.CancelFunc
	opened time.Time
	bytes  int          // frame bytes put into the segment
	frames int          // records framed into it (delivered on 200)
	drops  []relay.Drop // records it settles as dropped
	last   uint64       // last record seq it covers
}

func (s *openSegment) records() int { return s.frames + len(s.drops) }

type postResult struct {
	status int
	closed bool // Lp-Trickle-Closed
	err    error
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

func (b *bodyReader) Close() error {
	if c, ok := b.r.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// mayHaveLeft reports whether any of the segment may have reached the
// server. An empty segment's end is not observable: count it as sent.
func (s *openSegment) mayHaveLeft() bool {
	return s.body == nil || s.body.n.Load() > 0 || s.body.eof.Load()
}

// errAnswered ends the body of a POST that the server already answered.
var errAnswered = errors.New("trickle: the server answered before the segment ended")

// transientError is a failed segment or request; the loop backs off and
// goes on.
type transientError struct {
	seq       int64
	abandoned bool // seq was DELETEd; its records go in the next seq
	records   int
	err       error
}

func (e *transientError) Error() string {
	return fmt.Sprintf("trickle segment %d: %v", e.seq, e.err)
}
func (e *transientError) Unwrap() error { return e.err }

func (r *pubRun) loop(ctx context.Context) error {
	if err := r.start(ctx); err != nil {
		return err
	}
	for {
		err := r.step(ctx)
		if err == nil {
			continue
		}
		var te *transientError
		if !errors.As(err, &te) {
			return err
		}
		r.answerFlush(err)
		d := r.bo.NextBackOff()
		r.p.opts.Stats.AddRetry(relay.ClassTransient.String())
		r.failing = true
		if r.warn.Allow() {
			r.p.log.Warn("trickle segment failed; retrying", "seq", te.seq, "abandoned", te.abandoned,
				"records", te.records, "next_seq", r.seq, "retry_in", d, "suppressed", r.warn.Suppressed(), "err", te.err)
		}
		if err := r.sleep(ctx, d); err != nil {
			return err
		}
	}
}

// start learns the write position, retrying transient failures.
func (r *pubRun) start(ctx context.Context) error {
	for {
		seq, legacy, err := r.resolve(ctx)
		if err == nil {
			r.seq, r.reset = seq, true
			r.p.log.Info("trickle publisher started", "seq", seq, "legacy_server", legacy)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d := r.bo.NextBackOff()
		r.p.opts.Stats.AddRetry(relay.ClassTransient.String())
		if r.warn.Allow() {
			r.p.log.Warn("trickle write position unknown; retrying", "retry_in", d, "suppressed", r.warn.Suppressed(), "err", err)
		}
		if err := r.sleep(ctx, d); err != nil {
			return err
		}
	}
}

// resolve asks GET <chan>/next; a 400 marks a server older than v0.8.11,
// which tells its position in the 470 of a far-ahead seq. A 404 means the
// channel does not exist yet: start at 0 and let the first POST create it
// (autocreate servers) or end the channel (orchestrators).
func (r *pubRun) resolve(ctx context.Context) (seq int64, legacy bool, err error) {
	code, h, err := r.p.request(ctx, http.MethodGet, r.p.opts.URL+"/next")
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
		return 0, false, fmt.Errorf("GET /next answered %d", code)
	}
	code, h, err = r.p.request(ctx, http.MethodGet, r.p.opts.URL+"/"+strconv.Itoa(probeSeq))
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
	return 0, true, fmt.Errorf("470 probe answered %d", code)
}

// step does one round: frame what the cursor has, end the segment a Flush
// asked for, or wait for records, a timer or an answer.
func (r *pubRun) step(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// A busy publisher may never reach wait: look for a Flush here too.
	select {
	case reply := <-r.p.flushc:
		r.flushers = append(r.flushers, reply)
		r.flushing = true
	default:
	}
	progressed, err := r.pump(ctx)
	if err != nil {
		return err
	}
	if r.flushing {
		r.flushing = false
		var err error
		if r.seg != nil {
			err = r.finish(ctx)
		}
		r.answerFlush(err)
		return err
	}
	if progressed {
		return nil
	}
	return r.wait(ctx)
}

// pump frames the cursor's new records into segments, writing them at once
// so readers see them live. It reports whether there were any.
func (r *pubRun) pump(ctx context.Context) (bool, error) {
	inflight := 0
	if r.seg != nil {
		inflight = r.seg.records()
	}
	// The cursor reads from the acknowledged position: skip what the open
	// segment already carries.
	recs, err := r.cur.Read(inflight+readBatch, 0)
	if err != nil {
		return false, &transientError{seq: r.seq, err: fmt.Errorf("spool read: %w", err)}
	}
	i := 0
	for i < len(recs) && recs[i].Seq <= r.written {
		i++
	}
	fresh := recs[i:]
	if len(fresh) == 0 {
		return false, nil
	}
	maxBytes := r.p.opts.SegmentMaxBytes
	segmentFraming := r.p.opts.Framing == FramingSegment
	for _, rec := range fresh {
		data, ok := r.line(rec.Data)
		r.written = rec.Seq
		if !ok {
			r.drop(rec.Seq)
			continue
		}
		n := frameLen(data, r.p.opts.Wrap)
		if segmentFraming {
			// The segment is whole before its POST: send it with a
			// length, in one write, instead of streaming it.
			body := make([]byte, 0, n)
			body = r.appendFrame(body, data)
			if err := r.postWhole(ctx, &openSegment{frames: 1, bytes: n, last: rec.Seq}, body); err != nil {
				return true, err
			}
			continue
		}
		if r.seg != nil && r.seg.bytes > 0 && r.seg.bytes+n > maxBytes {
			if err := r.finish(ctx); err != nil {
				return true, err
			}
		}
		if r.seg == nil {
			r.open(ctx)
		}
		r.pending = r.appendFrame(r.pending, data)
		r.seg.bytes += n
		r.seg.frames++
		r.seg.last = rec.Seq
	}
	if r.seg != nil {
		if err := r.writePending(ctx); err != nil {
			return true, err
		}
		if r.seg != nil && r.seg.bytes >= maxBytes {
			return true, r.finish(ctx)
		}
	}
	return true, nil
}

// line returns a record's bytes as one line: records that span lines are
// compacted (raw newlines in valid JSON are insignificant whitespace).
// Empty records and multi-line records that are not JSON cannot be framed.
func (r *pubRun) line(data []byte) ([]byte, bool) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, false
	}
	if bytes.IndexByte(data, '\n') < 0 && bytes.IndexByte(data, '\r') < 0 {
		return data, true
	}
	r.compact.Reset()
	if err := json.Compact(&r.compact, data); err != nil {
		return nil, false
	}
	return r.compact.Bytes(), true
}

// appendFrame appends a record's frame line.
func (r *pubRun) appendFrame(dst, data []byte) []byte {
	if r.p.opts.Wrap {
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

// drop settles a record that cannot be framed: with the open segment, or at
// once when none is open.
func (r *pubRun) drop(seq uint64) {
	d := relay.Drop{Seq: seq, Reason: relay.DropRejected}
	if r.warn.Allow() {
		r.p.log.Warn("record dropped: it cannot be written as one frame line", "record_seq", seq, "reason", d.Reason, "suppressed", r.warn.Suppressed())
	}
	if r.seg != nil {
		r.seg.drops = append(r.seg.drops, d)
		r.seg.last = seq
		return
	}
	if err := r.p.opts.Stats.SettleRange(seq, seq, []relay.Drop{d}, func() (uint64, error) { return relay.AckFrom(r.cur, seq) }); err != nil {
		r.p.log.Error("spool ack failed", "record_seq", seq, "err", err)
	}
	r.acked = seq
}

// open starts the POST of a new jsonl segment at r.seq, its body a pipe
// that pump writes frames into as they come.
func (r *pubRun) open(ctx context.Context) {
	pr, pw := io.Pipe()
	seg := &openSegment{pw: pw, pr: pr, body: &bodyReader{r: pr}, opened: time.Now()}
	r.send(ctx, seg, r.p.opts.RequestTimeout+r.p.opts.SegmentInterval)
	r.seg = seg
}

// postWhole POSTs a segment whose body is complete (segment framing, or an
// empty keep-alive when body is nil), waits for the answer and settles it.
func (r *pubRun) postWhole(ctx context.Context, seg *openSegment, body []byte) error {
	if body != nil {
		seg.body = &bodyReader{r: bytes.NewReader(body)}
	}
	seg.opened = time.Now()
	r.send(ctx, seg, r.p.opts.RequestTimeout)
	res := <-seg.res
	seg.cancel()
	r.lastPost = time.Now()
	return r.settle(ctx, seg, res)
}

// send sends seg's POST at r.seq from its own goroutine.
func (r *pubRun) send(ctx context.Context, seg *openSegment, timeout time.Duration) {
	o := &r.p.opts
	seg.seq = r.seq
	seg.res = make(chan postResult, 1)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	seg.cancel = cancel
	var body io.Reader = http.NoBody
	if seg.body != nil {
		body = seg.body
	}
	req, err := http.NewRequestWithContext(pctx, http.MethodPost, o.URL+"/"+strconv.FormatInt(seg.seq, 10), body)
	if err != nil {
		panic("BUG: trickle: segment request: " + err.Error()) // the URL was validated
	}
	switch {
	case seg.pw != nil:
		// Chunked, explicitly: with an unknown length the transport
		// would otherwise wait up to 200 ms for the first byte to decide.
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
		req.Header.Set("Content-Type", "application/jsonl")
	case seg.body != nil:
		req.ContentLength = seg.body.r.(*bytes.Reader).Size()
		req.Header.Set("Content-Type", "application/json")
	}
	if r.reset {
		req.Header.Set(headerReset, "1")
	}
	go r.p.post(req, seg)
}

// post runs one segment's request; the Run goroutine always receives its
// result.
func (p *Publisher) post(req *http.Request, seg *openSegment) {
	resp, err := p.client.Do(req)
	res := postResult{err: err}
	if err == nil {
		res.status = resp.StatusCode
		res.closed = resp.Header.Get(headerClosed) != ""
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
	}
	if seg.pr != nil {
		// Unblock a writer still feeding a body the server no longer reads.
		seg.pr.CloseWithError(errAnswered)
	}
	seg.res <- res
}

// writePending writes the framed bytes into the open segment. A failed
// write means the POST ended: its outcome is collected at once.
func (r *pubRun) writePending(ctx context.Context) error {
	if len(r.pending) == 0 {
		return nil
	}
	_, err := r.seg.pw.Write(r.pending)
	r.pending = r.pending[:0]
	if err != nil {
		return r.finish(ctx)
	}
	return nil
}

// finish ends the open segment's body, waits for its answer and settles it.
func (r *pubRun) finish(ctx context.Context) error {
	seg := r.seg
	if len(r.pending) > 0 {
		seg.pw.Write(r.pending) // a failure shows in the answer
		r.pending = r.pending[:0]
	}
	seg.pw.Close()
	res := seg.early
	if res == nil {
		got := <-seg.res
		res = &got
	}
	seg.cancel()
	r.seg = nil
	r.lastPost = time.Now()
	return r.settle(ctx, seg, *res)
}

// settle acts on a segment's answer: 200 acknowledges its records; 404 or
// Lp-Trickle-Closed ends the channel; anything else is transient.
func (r *pubRun) settle(ctx context.Context, seg *openSegment, res postResult) error {
	st := r.p.opts.Stats
	if res.err != nil {
		st.AddRequest(errorCode(res.err))
	} else {
		st.AddRequest(statusCode(res.status))
	}
	switch {
	case res.err == nil && (res.closed || res.status == http.StatusNotFound):
		r.p.log.Info("trickle channel ended; publisher stops", "status", res.status, "closed_header", res.closed,
			"seq", seg.seq, "unacknowledged_records", seg.records())
		return relay.ErrClosed
	case res.err == nil && res.status == http.StatusOK:
		if seg.records() > 0 {
			last := seg.last
			// The segment holds the records after the last acked one, up to
			// last; SettleRange leaves out any the spool evicted meanwhile.
			var err error
			if first := r.acked + 1; last >= first && last-first+1 == uint64(seg.records()) {
				err = st.SettleRange(first, last, seg.drops, func() (uint64, error) { return relay.AckFrom(r.cur, last) })
			} else {
				err = st.Settle(seg.frames, seg.drops, func() error { return r.cur.Ack(last) })
			}
			if err != nil {
				r.p.log.Error("spool ack failed; the segment's records may be sent again", "seq", seg.seq, "record_seq", last, "err", err)
			}
			r.acked = last
		} else {
			st.MarkSuccess()
		}
		r.seq = seg.seq + 1
		r.reset = false
		r.bo.Reset()
		if r.failing {
			r.p.log.Info("trickle publishing recovered", "seq", seg.seq)
			r.failing = false
			r.warn.Reset()
		}
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := res.err
	if err == nil {
		err = fmt.Errorf("POST answered %d", res.status)
	}
	// Retry the same seq only if no byte of it left; once bytes went out
	// the server may hold part of it (or all of it), and re-POSTing a
	// written seq drops the data. DELETE it and move on.
	abandon := seg.mayHaveLeft()
	if abandon {
		if err := r.deleteSeq(ctx, seg.seq); err != nil {
			return err
		}
		r.seq = seg.seq + 1
	}
	r.written = r.acked // its records go again in the next segment
	return &transientError{seq: seg.seq, abandoned: abandon, records: seg.records(), err: err}
}

// deleteSeq closes a half-written segment so its readers move on. Failure
// is not fatal: gaps are harmless and the next reset also unblocks readers.
func (r *pubRun) deleteSeq(ctx context.Context, seq int64) error {
	code, _, err := r.p.request(ctx, http.MethodDelete, r.p.opts.URL+"/"+strconv.FormatInt(seq, 10))
	switch {
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		r.p.log.Debug("DELETE of a failed segment failed", "seq", seq, "err", err)
	case code == http.StatusNotFound:
		r.p.log.Info("trickle channel ended; publisher stops", "status", code, "seq", seq)
		return relay.ErrClosed
	}
	return nil
}

// wait blocks until records arrive, the open segment's time is up, the
// keep-alive is due, the server answers early, a Flush asks, or ctx ends.
func (r *pubRun) wait(ctx context.Context) error {
	var (
		deadline time.Time
		resc     <-chan postResult
	)
	if r.seg != nil {
		deadline = r.seg.opened.Add(r.p.opts.SegmentInterval)
		if r.seg.early == nil {
			resc = r.seg.res
		}
	} else {
		deadline = r.lastPost.Add(r.p.opts.KeepAlive)
	}
	d := time.Until(deadline)
	if d <= 0 {
		return r.due(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.cur.Ready():
		return nil
	case <-t.C:
		return r.due(ctx)
	case res := <-resc:
		r.seg.early = &res
		return r.finish(ctx)
	case reply := <-r.p.flushc:
		r.flushers = append(r.flushers, reply)
		r.flushing = true
		return nil
	}
}

// due ends the open segment at its interval, or sends the keep-alive: an
// empty segment, which is valid and advances the seq.
func (r *pubRun) due(ctx context.Context) error {
	if r.seg == nil {
		return r.postWhole(ctx, &openSegment{}, nil)
	}
	return r.finish(ctx)
}

// sleep waits d; a Flush cuts the wait short (and is served next step).
func (r *pubRun) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	case reply := <-r.p.flushc:
		r.flushers = append(r.flushers, reply)
		r.flushing = true
	}
	return nil
}

// abort ends an open segment when Run returns: its body is cut, so the
// server does not complete it; its records stay unacknowledged.
func (r *pubRun) abort(cause error) {
	if r.seg == nil {
		return
	}
	r.seg.pw.CloseWithError(cause)
	r.seg.cancel()
	if r.seg.early == nil {
		<-r.seg.res
	}
	r.seg = nil
}

func (r *pubRun) answerFlush(err error) {
	for _, c := range r.flushers {
		c <- err
	}
	r.flushers = r.flushers[:0]
}
