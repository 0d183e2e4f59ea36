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
// them to Send, which writes them as whole segments; the forwarder's linger
// makes a jsonl segment gather what arrives within SegmentInterval, and its
// Idle hook sends the keep-alive (Tune sets both).
//
// A record is acknowledged only when the POST of the segment that carried it
// is answered 200. A failed segment is retried under the same seq only when
// none of its bytes left; otherwise its seq is DELETEd and its records go
// again in the next seq (readers de-duplicate by envelope id), so a
// completed seq is never POSTed twice. 404 or Lp-Trickle-Closed ends the
// channel: Send reports relay.ErrClosed.
//
// Send and KeepAlive are called by one goroutine (the forwarder);
// DeleteChannel and Stats are safe for concurrent use with them.
type Publisher struct {
	opts   PublisherOptions // defaults applied
	client *http.Client
	log    *slog.Logger

	// Owned by the forwarder's goroutine.
	seq     int64        // the seq the next segment is POSTed to; -1 until learned
	reset   bool         // send Lp-Trickle-Reset on the next POST (until one succeeds)
	body    []byte       // the segment being built; reused
	compact bytes.Buffer // scratch for records that span lines
	failing bool         // the last segment failed, to log the recovery once
	warn    *logthrottle.Throttle
}

// NewPublisher checks opts and returns a publisher; nothing is sent before
// the first Send or KeepAlive.
func NewPublisher(opts PublisherOptions) (*Publisher, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	p := &Publisher{
		opts:   o,
		client: relay.NewHTTPClient(relay.HTTPClientOptions{Insecure: o.Insecure, Dial: o.DialContext}),
		log:    o.Logger.With("channel", relay.RedactURL(o.URL), "framing", o.Framing),
		seq:    -1,
		warn:   logthrottle.New(time.Minute, 1),
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

// Tune sets the forwarder fields the publisher needs: batches that fill one
// segment, the linger that gathers a jsonl segment, and the keep-alive.
func (p *Publisher) Tune(f *relay.Forwarder) {
	f.Batch = readBatch
	f.MaxBytes = p.opts.SegmentMaxBytes * 15 / 16 // room for the frame wrappers
	if p.opts.Framing == FramingJSONL {
		// Segments are bounded by bytes: a count bound would cut a backlog
		// into many small segments, and a reader keeps only the last 5.
		f.Batch = jsonlBatch
		f.Linger = p.opts.SegmentInterval
	}
	f.Idle, f.IdleAfter = p.KeepAlive, p.opts.KeepAlive
}

// Send writes recs as whole segments, in order: jsonl packs frame lines into
// segments of at most SegmentMaxBytes (a larger frame goes alone); segment
// framing writes one frame per segment. Before its first segment it learns
// the server's write position (GET <chan>/next; on servers without it, the
// 470 of a far-ahead seq) and marks that POST with Lp-Trickle-Reset: 1.
// Records that cannot be one frame line are dropped (relay.DropRejected).
func (p *Publisher) Send(ctx context.Context, recs []spool.Record) relay.Result {
	if err := p.start(ctx); err != nil {
		return relay.Result{Err: err}
	}
	var (
		settled int
		drops   []relay.Drop
	)
	for settled < len(recs) {
		body, n, segDrops := p.nextSegment(recs[settled:])
		if n > len(segDrops) { // at least one frame
			if err := p.post(ctx, body, n); err != nil {
				return relay.Result{Settled: settled, Dropped: drops, Err: err}
			}
			if p.opts.Alive != nil {
				p.opts.Alive()
			}
		}
		settled += n
		drops = append(drops, segDrops...)
	}
	return relay.Result{Settled: settled, Dropped: drops}
}

// nextSegment frames the leading records of recs into p.body: it returns the
// body, how many records it covers (frames and drops), and the drops.
func (p *Publisher) nextSegment(recs []spool.Record) (body []byte, n int, drops []relay.Drop) {
	body = p.body[:0]
	frames := 0
	for _, rec := range recs {
		line, ok := p.line(rec.Data)
		if !ok {
			drops = append(drops, relay.Drop{Seq: rec.Seq, Reason: relay.DropRejected})
			if p.warn.Allow() {
				p.log.Warn("record dropped: it cannot be written as one frame line", "record_seq", rec.Seq,
					"reason", relay.DropRejected, "suppressed", p.warn.Suppressed())
			}
			n++
			continue
		}
		if frames > 0 && (p.opts.Framing == FramingSegment || len(body)+frameLen(line, p.opts.Wrap) > p.opts.SegmentMaxBytes) {
			break
		}
		body = p.appendFrame(body, line)
		frames++
		n++
	}
	p.body = body
	return body, n, drops
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

// appendFrame appends a record's frame line.
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

// KeepAlive sends an empty segment, which advances the seq and shows the
// server's idle sweep a live channel. It is the forwarder's Idle hook.
func (p *Publisher) KeepAlive(ctx context.Context) error {
	if err := p.start(ctx); err != nil {
		return err
	}
	return p.post(ctx, nil, 0)
}

// start learns the write position once (again after Reset).
func (p *Publisher) start(ctx context.Context) error {
	if p.seq >= 0 {
		return nil
	}
	seq, legacy, err := p.resolve(ctx)
	if err != nil {
		return fmt.Errorf("trickle write position unknown: %w", err)
	}
	p.seq, p.reset = seq, true
	p.log.Info("trickle publisher started", "seq", seq, "legacy_server", legacy)
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

// post POSTs one whole segment (records of them; body nil for an empty
// keep-alive) at p.seq and acts on the answer: 200 moves to the next seq;
// 404 or Lp-Trickle-Closed is relay.ErrClosed; anything else is an error
// for the forwarder to classify, after the seq was DELETEd if any byte of
// it may have left.
func (p *Publisher) post(ctx context.Context, body []byte, records int) error {
	seq := p.seq
	pctx, cancel := context.WithTimeout(ctx, p.opts.RequestTimeout)
	defer cancel()
	br := &bodyReader{r: bytes.NewReader(body)}
	var rb io.Reader = http.NoBody
	if len(body) > 0 {
		rb = br
	}
	req, err := http.NewRequestWithContext(pctx, http.MethodPost, p.opts.URL+"/"+strconv.FormatInt(seq, 10), rb)
	if err != nil {
		panic("BUG: trickle: segment request: " + err.Error()) // the URL was validated
	}
	req.ContentLength = int64(len(body))
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/jsonl")
	}
	if p.reset {
		req.Header.Set(headerReset, "1")
	}
	resp, err := p.client.Do(req)
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
		p.log.Info("trickle channel ended", "status", resp.StatusCode, "closed_header", closed, "seq", seq, "records", records)
		return fmt.Errorf("segment %d answered %d (closed: %v): %w", seq, resp.StatusCode, closed, relay.ErrClosed)
	case resp.StatusCode == http.StatusOK:
		if records == 0 {
			p.opts.Stats.MarkSuccess()
		}
		p.seq, p.reset = seq+1, false
		if p.failing {
			p.log.Info("trickle publishing recovered", "seq", seq)
			p.failing = false
			p.warn.Reset()
		}
		return nil
	}
	return p.failed(ctx, seq, br, records, statusError(fmt.Sprintf("segment %d", seq), resp.StatusCode, resp.Header))
}

// failed handles a segment that was not accepted. The same seq may be
// retried only if no byte of it left; once bytes went out the server may
// hold part of it, and re-POSTing a written seq drops the data. DELETE it
// and move on.
func (p *Publisher) failed(ctx context.Context, seq int64, br *bodyReader, records int, cause error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	abandon := br.n.Load() > 0 || br.eof.Load()
	if abandon {
		if err := p.deleteSeq(ctx, seq); err != nil {
			return err
		}
		p.seq = seq + 1
	}
	p.failing = true
	if p.warn.Allow() {
		p.log.Warn("trickle segment failed", "seq", seq, "abandoned", abandon, "records", records,
			"next_seq", p.seq, "suppressed", p.warn.Suppressed(), "err", cause)
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
		p.log.Info("trickle channel ended", "status", code, "seq", seq)
		return fmt.Errorf("DELETE of segment %d answered 404: %w", seq, relay.ErrClosed)
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
