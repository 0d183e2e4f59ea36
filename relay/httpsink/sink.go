package httpsink

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/livepeer/edgerelay/internal/logthrottle"
	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// Pause reasons, the edgerelay_sink_paused reason label.
const (
	PauseUnauthorized  = "unauthorized"
	PauseMisconfigured = "misconfigured"
)

// DropNotAccepted is the drop reason (stage "sink") of events in a request
// that the API answered with success but counted fewer accepted than sent
// (spec/metrics-api.md: such an answer acknowledges the batch, and is
// counted and logged). The answer does not say which events it left out;
// the count is exact, the ids in the log line are the request's range.
const DropNotAccepted = "not_accepted"

const (
	snippetLen     = 256      // bytes of an error answer quoted in the error
	drainLimit     = 64 << 10 // answer bytes read so the connection can be reused
	dropLogPerMin  = 10       // drop lines per minute before they are summarised
	bodyReleaseMax = time.Second
)

// Sink posts batches to the metrics API. It implements relay.Sink.
//
// Send is called from one goroutine (the forwarder's); it is not safe for
// concurrent Sends. For several requests in flight, each lane (see Lane)
// has its own goroutine. Reload, Resume, WatchKey, Limits and Close are safe to
// call from any goroutine at any time.
type Sink struct {
	url       string // the configured endpoint
	logURL    string // relay.RedactURL(url): scheme://host/path, for logs and errors
	prefix    []byte // `{"app":…,"host":…,"events":[`
	maxEvents int
	maxBody   int
	gzip      bool
	timeout   time.Duration
	pollEvery time.Duration
	client    *http.Client
	stats     *relay.Stats
	log       *slog.Logger
	keys      *keySource

	// Shared by the sink's lanes (lane.go) and safe for concurrent use.
	rate  *bucket    // the request budget
	limit *bodyLimit // the body size requests are cut at, learned from 413s

	// Owned by the Send goroutine.
	answer        []byte       // the start of the last success answer (cap answerKeep); reused
	buf           []byte       // the last body built; reused
	zbuf          bytes.Buffer // the last gzipped body; reused
	zw            *gzip.Writer
	snip          [snippetLen]byte
	dropLog       *logthrottle.Throttle
	misconfLogged bool   // the URL was logged for this run of 404/405s
	alive         func() // Options.Alive
}

// New checks opts, reads the key file if one is set, and returns a Sink.
// It starts no goroutine; run WatchKey to notice key file changes while the
// sink is paused.
func New(opts Options) (*Sink, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	log := o.Logger // the agent adds the sink's name, as relay.Forwarder does
	keys, err := newKeySource(o.APIKey, o.APIKeyFile, log)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(o.URL) // Validate parsed it
	s := &Sink{
		url:       o.URL,
		logURL:    relay.RedactURL(o.URL),
		prefix:    bodyPrefix(o.App, o.Host),
		maxEvents: o.MaxEvents,
		maxBody:   o.MaxBody,
		gzip:      o.Gzip,
		timeout:   o.Timeout,
		pollEvery: o.KeyPollInterval,
		client:    relay.NewHTTPClient(relay.HTTPClientOptions{Insecure: o.InsecureSkipVerify, HTTP2: true, PromptAnswers: true}),
		stats:     o.Stats,
		log:       log,
		keys:      keys,
		rate:      newBucket(o.RatePerMinute),
		limit:     newBodyLimit(o.MaxBody),
		alive:     o.Alive,
	}
	s.own()
	if o.InsecureSkipVerify && u.Scheme == "https" {
		log.Warn("TLS certificate checks are off for the metrics API", "url", s.logURL)
	}
	return s, nil
}

// Limits returns the relay.Forwarder Batch and MaxBytes (record bytes) that
// make every batch it reads fit one request of MaxBody: MaxBody less the
// wrapper and the commas between MaxEvents events. (Under a limit learned
// from a 413 a batch goes out in several requests.) Tune sets them.
func (s *Sink) Limits() (batch, maxBytes int) {
	return s.maxEvents, s.maxBody - len(s.prefix) - len(bodySuffix) - (s.maxEvents - 1)
}

// Resume returns the channel to pass as relay.Forwarder.Resume: it receives
// when the key changed (WatchKey, or a request's own check) or on Reload,
// so a paused forwarder tries again at once instead of at its next probe.
func (s *Sink) Resume() <-chan struct{} { return s.keys.resume }

// Reload re-reads the key file (on SIGHUP) and ends a pause whether or not
// the key changed: the operator may have fixed the key on the peer's side.
// An unreadable file keeps the previous key and is returned as an error
// naming the file.
func (s *Sink) Reload() error {
	_, err := s.keys.refresh(true)
	s.keys.signal()
	if err != nil {
		return fmt.Errorf("APIKeyFile: %w", err)
	}
	return nil
}

// WatchKey reads the key file every KeyPollInterval until ctx ends, so that
// a rotated key ends a pause within about that interval. It returns
// ctx.Err(); without a key file it just waits for ctx.
func (s *Sink) WatchKey(ctx context.Context) error {
	return s.keys.watch(ctx, s.pollEvery)
}

// Close releases idle connections; it is idempotent. Call it after the
// forwarder has stopped: a later Send would open a new connection.
func (s *Sink) Close() {
	s.client.CloseIdleConnections()
}

// Send delivers recs in as few requests as the limits allow, in order, and
// reports the settled prefix (see the package doc). It returns when ctx
// ends, with what was settled before.
func (s *Sink) Send(ctx context.Context, recs []spool.Record) relay.Result {
	var res relay.Result
	if limit, raised := s.limit.at(time.Now()); raised {
		s.log.Info("trying a larger request body: the limit learned from a 413 may have gone up", "limit_bytes", limit, "max_body", s.maxBody)
	}
	plen := len(s.prefix)
	start, data := 0, 0 // recs[start:i] is the request being filled, holding data bytes
	for i := 0; i <= len(recs); i++ {
		if i < len(recs) {
			n := len(recs[i].Data)
			// The limit now, not a copy: a 413 earlier in this Send (or in
			// another lane) lowers it.
			if i-start < s.maxEvents && bodySize(plen, i-start+1, data+n) <= s.limit.current() {
				data += n
				continue
			}
		}
		if i > start {
			n, err := s.deliver(ctx, recs[start:i], &res.Dropped, false)
			res.Settled += n
			if err != nil {
				res.Err = err
				return res
			}
		}
		if i == len(recs) {
			break
		}
		start, data = i, len(recs[i].Data)
		if bodySize(plen, 1, data) > s.maxBody {
			// Alone it would break the configured body limit: the API would
			// refuse it, so it is dropped without spending a request. (One
			// over a learned limit only goes alone: the API may take it.)
			s.drop(&res.Dropped, recs[i], relay.DropOversize, 0)
			res.Settled++
			start, data = i+1, 0
		}
	}
	return res
}

// deliver sends recs as one request and, on a poison or 413 answer, splits
// them in two and delivers each half, depth first and left to right. It
// returns how many leading recs are settled (delivered, or dropped and
// appended to drops) and the error that stopped it.
//
// refused says the caller already knows the peer refuses recs as a whole:
// recs is the right half of a poison batch whose left half went through
// without a drop, so the poison must be here and the request for the whole
// is skipped. Likewise recs no smaller than a body the peer refused with
// 413 are split without a request. A single event is never dropped on
// inference: it is dropped only after the peer refused it alone, so a flaky
// peer costs requests, not events.
func (s *Sink) deliver(ctx context.Context, recs []spool.Record, drops *[]relay.Drop, refused bool) (int, error) {
	var (
		out      = Poison
		accepted int
		err      error
	)
	switch {
	case refused && len(recs) > 1:
		// The poison is in recs: split without a request.
	case len(recs) > 1 && s.limit.refusedBefore(requestSize(s.prefix, recs)):
		out = TooLarge // as large as a body refused before: split without a request
	default:
		out, accepted, err = s.post(ctx, recs)
	}
	var reason string
	switch out {
	case Success:
		if accepted < len(recs) {
			s.notAccepted(drops, recs, accepted)
		}
		return len(recs), nil
	case Poison:
		reason = relay.DropRejected
	case TooLarge:
		reason = relay.DropOversize
	default:
		return 0, err
	}
	if len(recs) == 1 {
		code := 0
		var se *StatusError
		if errors.As(err, &se) {
			code = se.Code
		}
		s.drop(drops, recs[0], reason, code)
		return 1, nil
	}
	mid := len(recs) / 2
	before := len(*drops)
	n, err := s.deliver(ctx, recs[:mid], drops, false)
	if err != nil {
		return n, err
	}
	// A 413 says nothing about which half is too large, so only poison
	// narrows the search.
	inferred := out == Poison && len(*drops) == before
	m, err := s.deliver(ctx, recs[mid:], drops, inferred)
	return n + m, err
}

// post makes one request carrying recs. It returns the outcome, how many
// events a success answer says were accepted (len(recs) when it does not
// say), and the error explaining the outcome unless it is Success.
func (s *Sink) post(ctx context.Context, recs []spool.Record) (Outcome, int, error) {
	if err := s.rate.take(ctx); err != nil {
		return Transient, 0, err
	}
	if s.alive != nil {
		s.alive()
	}
	// Drop a stale resume signal before reading the key: if the key changes
	// after this point the signal is raised again and ends the next pause.
	s.keys.drain()
	key, err := s.keys.get()
	if err != nil {
		return Unauthorized, 0, &relay.PausedError{Reason: PauseUnauthorized, Err: err}
	}

	s.buf = appendBody(s.buf[:0], s.prefix, recs)
	size := len(s.buf) // what the body limit counts: uncompressed bytes
	body := s.buf
	if s.gzip {
		s.zbuf.Reset()
		s.zw.Reset(&s.zbuf)
		s.zw.Write(body) // writes to a bytes.Buffer cannot fail
		s.zw.Close()
		body = s.zbuf.Bytes()
	}

	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rb := &sentBody{done: make(chan struct{})}
	rb.r.Reset(body)
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, s.url, rb)
	if err != nil {
		panic("BUG: httpsink: request for a validated URL: " + relay.RedactError(err).Error())
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "edgerelay")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if s.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}

	resp, err := s.client.Do(req)
	if err != nil {
		cancel()
		s.reclaim(rb)
		s.stats.AddRequest(relay.RequestCode(ctx, err))
		return Transient, 0, fmt.Errorf("metrics request (%d events): %w", len(recs), relay.RedactError(err))
	}
	code := resp.StatusCode
	out := Classify(code)
	if out == Success {
		// Success only once the whole answer is in (spec/metrics-api.md): an
		// answer that breaks off may come from a peer that failed after all,
		// and the batch goes again (receivers de-duplicate by id).
		accepted, got, err := s.readAnswer(resp, len(recs))
		resp.Body.Close()
		cancel()
		s.reclaim(rb)
		if err != nil {
			s.stats.AddRequest(relay.RequestCode(ctx, err))
			return Transient, 0, fmt.Errorf("metrics request (%d events): the %d answer broke off after %d bytes, so the events are not taken as delivered: %w", len(recs), code, got, relay.RedactError(err))
		}
		s.stats.AddRequest(strconv.Itoa(code))
		s.misconfLogged = false
		s.limit.accepted(size)
		return Success, accepted, nil
	}
	n, _ := io.ReadFull(resp.Body, s.snip[:])
	snippet := redact(strings.ToValidUTF8(string(s.snip[:n]), "?"), key)
	io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
	resp.Body.Close()
	cancel()
	s.reclaim(rb)
	s.stats.AddRequest(strconv.Itoa(code))

	serr := &StatusError{Code: code, Body: snippet}
	switch out {
	case Throttled:
		return out, 0, &relay.ThrottledError{RetryAfter: relay.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), Err: serr}
	case Unauthorized:
		return out, 0, &relay.PausedError{Reason: PauseUnauthorized, Err: serr}
	case Misconfigured:
		if !s.misconfLogged {
			s.misconfLogged = true
			s.log.Error("metrics API refuses the URL; sink paused, events kept, probing until the configuration is fixed", "url", s.logURL, "status", code)
		}
		return out, 0, &relay.PausedError{Reason: PauseMisconfigured, Err: serr}
	case TooLarge:
		if cur, changed := s.limit.refused(size, time.Now()); changed {
			s.log.Info("metrics API refused a request body as too large; later requests are cut to the learned limit",
				"refused_bytes", size, "limit_bytes", cur, "max_body", s.maxBody, "reprobe_in", ReprobeAfter)
		}
	}
	return out, 0, serr
}

// readAnswer reads a success answer to its end. It returns how many events
// the answer says were accepted (sent when it does not say, or says more),
// and how many bytes arrived. An answer that breaks off is an error: a
// reset or a timeout mid-body, fewer bytes than its Content-Length, a
// chunked body without its last chunk (all reported by the transport), or a
// close-delimited JSON object cut short (answerCut).
func (s *Sink) readAnswer(resp *http.Response, sent int) (accepted int, got int64, err error) {
	b := s.answer[:0]
	var spill [512]byte // past answerKeep: read to the end, not kept
	for {
		p := spill[:]
		if len(b) < cap(b) {
			p = b[len(b):cap(b)]
		}
		n, err := resp.Body.Read(p)
		if len(b) < cap(b) {
			b = b[:len(b)+n]
		}
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, got, err
		}
	}
	if answerCut(resp, b, got) {
		return 0, got, io.ErrUnexpectedEOF
	}
	if n, ok := parseAccepted(b); ok && n < sent {
		return n, got, nil
	}
	return sent, got, nil
}

// notAccepted records recs[accepted:] as dropped (DropNotAccepted) after a
// success answer that counted fewer events accepted than sent, and logs the
// request once (throttled with the other drop lines).
func (s *Sink) notAccepted(drops *[]relay.Drop, recs []spool.Record, accepted int) {
	for _, r := range recs[accepted:] {
		*drops = append(*drops, relay.Drop{Seq: r.Seq, ID: envelopeID(r.Data), Reason: DropNotAccepted})
	}
	if !s.dropLog.Allow() {
		return
	}
	s.log.Warn("metrics API accepted fewer events than sent; the rest are counted as dropped", "reason", DropNotAccepted,
		"sent", len(recs), "accepted", accepted, "first_id", envelopeID(recs[0].Data), "last_id", envelopeID(recs[len(recs)-1].Data),
		"first_seq", recs[0].Seq, "last_seq", recs[len(recs)-1].Seq, "suppressed", s.dropLog.Suppressed())
}

// reclaim makes the body buffer safe to reuse. The transport may close the
// body from its own goroutine after Do returns (an early answer, an abort);
// the request's context is cancelled by now, so that happens promptly. If it
// has not happened within bodyReleaseMax the buffer is abandoned to the
// transport and a new one is grown next time.
func (s *Sink) reclaim(rb *sentBody) {
	t := time.NewTimer(bodyReleaseMax)
	defer t.Stop()
	select {
	case <-rb.done:
	case <-t.C:
		s.log.Warn("request body not released by the transport; buffer abandoned", "bytes", rb.r.Size())
		if s.gzip {
			s.zbuf = bytes.Buffer{}
		} else {
			s.buf = nil
		}
	}
}

// drop records one dropped event and logs its id, throttled.
func (s *Sink) drop(drops *[]relay.Drop, r spool.Record, reason string, code int) {
	id := envelopeID(r.Data)
	*drops = append(*drops, relay.Drop{Seq: r.Seq, ID: id, Reason: reason})
	if !s.dropLog.Allow() {
		return
	}
	if code == 0 {
		s.log.Warn("event dropped without sending: larger than the request body limit", "id", id, "seq", r.Seq, "reason", reason, "bytes", len(r.Data), "max_body", s.maxBody, "suppressed", s.dropLog.Suppressed())
		return
	}
	s.log.Warn("event dropped: the metrics API refuses it on its own", "id", id, "seq", r.Seq, "reason", reason, "status", code, "bytes", len(r.Data), "suppressed", s.dropLog.Suppressed())
}

// sentBody is a request body that says when the transport is done with it.
type sentBody struct {
	r    bytes.Reader
	done chan struct{}
	once sync.Once
}

func (b *sentBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *sentBody) Close() error {
	b.once.Do(func() { close(b.done) })
	return nil
}

// redacted stands in for the key in text quoted from the peer.
const redacted = "[redacted]"

// redact blanks the key out of text quoted from the peer, including a
// trailing part of it cut by the quote's length limit. It repeats until no
// copy is left, since a replacement can join its neighbours into a new copy;
// each pass shortens the text when the key is longer than the placeholder,
// and a key that short is not a secret worth the loop.
func redact(text, key string) string {
	if key == "" {
		return text
	}
	for strings.Contains(text, key) {
		text = strings.ReplaceAll(text, key, redacted)
		if len(key) <= len(redacted) {
			break
		}
	}
	for n := min(len(key)-1, len(text)); n >= 4; n-- {
		if strings.HasSuffix(text, key[:n]) {
			return text[:len(text)-n] + redacted
		}
	}
	return text
}
