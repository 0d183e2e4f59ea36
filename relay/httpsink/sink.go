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

const (
	snippetLen     = 256      // bytes of an error answer quoted in the error
	drainLimit     = 64 << 10 // answer bytes read so the connection can be reused
	dropLogPerMin  = 10       // drop lines per minute before they are summarised
	bodyReleaseMax = time.Second
)

// Sink posts batches to the metrics API. It implements relay.Sink.
//
// Send is called from one goroutine (the forwarder's); it is not safe for
// concurrent Sends. Reload, Resume, WatchKey, Limits and Close are safe to
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

	// Owned by the Send goroutine.
	rate          bucket
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
		client:    relay.NewHTTPClient(relay.HTTPClientOptions{Insecure: o.InsecureSkipVerify, HTTP2: true}),
		stats:     o.Stats,
		log:       log,
		keys:      keys,
		rate:      newBucket(o.RatePerMinute),
		dropLog:   logthrottle.New(time.Minute, dropLogPerMin),
		alive:     o.Alive,
	}
	if s.gzip {
		// BestSpeed: the node's CPU belongs to the GPU workload, and JSON
		// compresses well at any level.
		s.zw, _ = gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // the level is valid
	}
	if o.InsecureSkipVerify && u.Scheme == "https" {
		log.Warn("TLS certificate checks are off for the metrics API", "url", s.logURL)
	}
	return s, nil
}

// Limits returns the relay.Forwarder Batch and MaxBytes (record bytes) that
// make every batch it reads fit one request: MaxBody less the wrapper and
// the commas between MaxEvents events.
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
	plen := len(s.prefix)
	start, data := 0, 0 // recs[start:i] is the request being filled, holding data bytes
	for i := 0; i <= len(recs); i++ {
		if i < len(recs) {
			n := len(recs[i].Data)
			if i-start < s.maxEvents && bodySize(plen, i-start+1, data+n) <= s.maxBody {
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
			// Alone it would break the body limit: the API would refuse it,
			// so it is dropped without spending a request.
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
// is skipped. A single event is never dropped on inference: it is dropped
// only after the peer refused it alone, so a flaky peer costs requests, not
// events.
func (s *Sink) deliver(ctx context.Context, recs []spool.Record, drops *[]relay.Drop, refused bool) (int, error) {
	out, err := Poison, error(nil)
	if !refused || len(recs) == 1 {
		out, err = s.post(ctx, recs)
	}
	var reason string
	switch out {
	case Success:
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

// post makes one request carrying recs. It returns the outcome, and the
// error explaining it unless the outcome is Success.
func (s *Sink) post(ctx context.Context, recs []spool.Record) (Outcome, error) {
	if err := s.rate.take(ctx); err != nil {
		return Transient, err
	}
	if s.alive != nil {
		s.alive()
	}
	// Drop a stale resume signal before reading the key: if the key changes
	// after this point the signal is raised again and ends the next pause.
	s.keys.drain()
	key, err := s.keys.get()
	if err != nil {
		return Unauthorized, &relay.PausedError{Reason: PauseUnauthorized, Err: err}
	}

	s.buf = appendBody(s.buf[:0], s.prefix, recs)
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
		return Transient, fmt.Errorf("metrics request (%d events): %w", len(recs), relay.RedactError(err))
	}
	code := resp.StatusCode
	var snippet string
	if Classify(code) != Success {
		n, _ := io.ReadFull(resp.Body, s.snip[:])
		snippet = redact(strings.ToValidUTF8(string(s.snip[:n]), "?"), key)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
	resp.Body.Close()
	cancel()
	s.reclaim(rb)
	s.stats.AddRequest(strconv.Itoa(code))

	out := Classify(code)
	if out == Success {
		s.misconfLogged = false
		return Success, nil
	}
	serr := &StatusError{Code: code, Body: snippet}
	switch out {
	case Throttled:
		return out, &relay.ThrottledError{RetryAfter: relay.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), Err: serr}
	case Unauthorized:
		return out, &relay.PausedError{Reason: PauseUnauthorized, Err: serr}
	case Misconfigured:
		if !s.misconfLogged {
			s.misconfLogged = true
			s.log.Error("metrics API refuses the URL; sink paused, events kept, probing until the configuration is fixed", "url", s.logURL, "status", code)
		}
		return out, &relay.PausedError{Reason: PauseMisconfigured, Err: serr}
	}
	return out, serr
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
