package trickletest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The readers of an events channel, as they really behave (spec/trickle.md,
// "Readers, as they really behave"). A test runs one against a Server to see
// what a real reader would have made of a publisher's channel: what it
// parsed, what it skipped, and whether it gave up.

// ReaderKind is which real reader a Reader behaves as.
type ReaderKind int

const (
	// GatewayReader is go-livepeer's gateway (startEventsSubscribe): from
	// the live edge, one JSON document {queue_event_type, event} per
	// segment; a document it cannot parse is skipped; after any read error
	// (a 470 included, after which it jumps to Lp-Trickle-Latest) it
	// pauses 300 ms; an error that follows more than 5 in a row stops
	// the stream; 30 s without a parsed event stops it too; 404 or
	// Lp-Trickle-Closed ends it.
	GatewayReader ReaderKind = iota
	// JSONLReader is livepeer-python-gateway's JSONLReader (Scope's events
	// loop): from the current segment (-2), JSON lines as they arrive; a
	// segment over 1,048,576 bytes, or a line that is not a JSON object,
	// ends it; empty segments are fine; a 470 resets to the live edge.
	JSONLReader
	// ChannelReader is livepeer-python-gateway's ChannelReader: from the
	// current segment, one JSON object per segment; an empty segment, or
	// one that is not one JSON object, ends it.
	ChannelReader
)

func (k ReaderKind) String() string {
	return [...]string{"gateway", "jsonl", "channel"}[k]
}

// Reader limits taken from the real readers.
const (
	GatewayRetryPause  = 300 * time.Millisecond
	GatewayMaxRetries  = 5
	GatewayMaxEventGap = 30 * time.Second
	PythonMaxSegment   = 1 << 20
	PythonMaxRetries   = 5
	pythonRetryPause   = 500 * time.Millisecond
)

// ReaderStats is what a Reader saw.
type ReaderStats struct {
	Segments   int      // segments read to their end
	Events     [][]byte // gateway: each document's event; jsonl: each line; channel: each document
	Unparsed   int      // gateway: segments it could not parse (skipped, no liveness)
	Errors     int      // read errors, 470s included
	MaxInRow   int      // the most errors in a row
	Jumps      int      // 470s that moved it to the live edge
	Skipped    int      // segments those jumps skipped
	MaxSegment int      // the largest segment seen, in bytes
	Empty      int      // empty segments seen
	MaxGap     time.Duration
	// Stopped says why the reader gave up ("" while it reads): a real
	// reader in that state has ended the session or the stream.
	Stopped string
}

// Reader reads a channel of a Server as one of the real readers does.
type Reader struct {
	kind   ReaderKind
	url    string
	client *http.Client

	mu        sync.Mutex
	st        ReaderStats
	lastEvent time.Time
	done      chan struct{}
}

// NewReader returns a reader of kind for channel name; Run reads.
func (s *Server) NewReader(kind ReaderKind, name string) *Reader {
	return &Reader{
		kind:   kind,
		url:    s.ChannelURL(name),
		client: &http.Client{Transport: &http.Transport{DialContext: s.DialContext}},
		done:   make(chan struct{}),
	}
}

// Stats returns a copy of what the reader saw.
func (r *Reader) Stats() ReaderStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	st.Events = append([][]byte(nil), r.st.Events...)
	return st
}

// Done is closed when Run has returned.
func (r *Reader) Done() <-chan struct{} { return r.done }

// Run reads until ctx ends or the reader gives up (Stats().Stopped).
func (r *Reader) Run(ctx context.Context) {
	defer close(r.done)
	defer r.client.CloseIdleConnections()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if r.kind == GatewayReader {
		// The gateway checks every 10 s that an event came in the last
		// 30 s, whatever its reader is doing.
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		wg.Go(func() {
			t := time.NewTicker(10 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if r.gap() > GatewayMaxEventGap {
						r.stop("timeout waiting for events")
						cancel()
						return
					}
				}
			}
		})
	}
	seq := -2
	if r.kind == GatewayReader {
		seq = -1
	}
	r.mu.Lock()
	r.lastEvent = time.Now()
	r.mu.Unlock()
	inRow := 0
	fail := func(err error) bool { // false: stop
		inRow++
		r.mu.Lock()
		r.st.Errors++
		r.st.MaxInRow = max(r.st.MaxInRow, inRow)
		r.mu.Unlock()
		over := inRow > PythonMaxRetries
		pause := pythonRetryPause
		if r.kind == GatewayReader {
			// The gateway tests the errors before this one
			// (retries > maxRetries, then retries++): it takes six in a
			// row and stops at the seventh.
			over, pause = inRow-1 > GatewayMaxRetries, GatewayRetryPause
		}
		if over {
			r.stop(fmt.Sprintf("too many errors reading events: %v", err))
			return false
		}
		t := time.NewTimer(pause)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		body, served, latest, status, err := r.get(ctx, seq)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !fail(err) {
				return
			}
			continue
		case status == http.StatusNotFound:
			r.stop("channel not found")
			return
		case status == -1:
			r.stop("channel closed")
			return
		case status == StatusNotHeld:
			from := seq
			if from < 0 {
				from = served
			}
			r.mu.Lock()
			r.st.Jumps++
			if from >= 0 && latest > from {
				r.st.Skipped += latest - from
			}
			r.mu.Unlock()
			seq = latest
			if r.kind == GatewayReader {
				if !fail(fmt.Errorf("seq %d not held, latest %d", from, latest)) {
					return
				}
			}
			continue
		}
		inRow = 0
		if served >= 0 {
			seq = served + 1
		}
		if stop := r.take(body); stop != "" {
			r.stop(stop)
			return
		}
	}
}

func (r *Reader) gap() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Since(r.lastEvent)
}

func (r *Reader) stop(why string) {
	r.mu.Lock()
	if r.st.Stopped == "" {
		r.st.Stopped = why
	}
	r.mu.Unlock()
}

// get reads one segment whole. status is the HTTP status, or -1 for
// Lp-Trickle-Closed.
func (r *Reader) get(ctx context.Context, seq int) (body []byte, served, latest, status int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/"+strconv.Itoa(seq), nil)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	defer resp.Body.Close()
	served, _ = strconv.Atoi(resp.Header.Get(HeaderSeq))
	latest, _ = strconv.Atoi(resp.Header.Get(HeaderLatest))
	if resp.Header.Get(HeaderClosed) != "" {
		return nil, served, latest, -1, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, served, latest, resp.StatusCode, nil
	}
	limit := int64(PythonMaxSegment) + 1
	if r.kind == GatewayReader {
		limit = 64 << 20
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, served, latest, 0, err
	}
	return body, served, latest, http.StatusOK, nil
}

// take handles one whole segment as the reader does; a non-empty answer is
// why the reader gives up.
func (r *Reader) take(body []byte) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.Segments++
	r.st.MaxSegment = max(r.st.MaxSegment, len(body))
	if len(body) == 0 {
		r.st.Empty++
	}
	now := time.Now()
	event := func(e []byte) {
		r.st.Events = append(r.st.Events, append([]byte(nil), e...))
		r.st.MaxGap = max(r.st.MaxGap, now.Sub(r.lastEvent))
		r.lastEvent = now
	}
	switch r.kind {
	case GatewayReader:
		var w struct {
			QueueEventType string          `json:"queue_event_type"`
			Event          json.RawMessage `json:"event"`
		}
		if json.Unmarshal(body, &w) != nil {
			r.st.Unparsed++
			return ""
		}
		if len(w.Event) == 0 || string(w.Event) == "null" {
			// No "event": the whole body is the event.
			var m map[string]any
			if json.Unmarshal(body, &m) != nil {
				r.st.Unparsed++
				return ""
			}
			w.Event = body
		}
		event(w.Event)
	case JSONLReader:
		if len(body) > PythonMaxSegment {
			return fmt.Sprintf("segment of %d bytes is over the reader's %d", len(body), PythonMaxSegment)
		}
		for _, line := range bytes.Split(body, []byte{'\n'}) {
			if line = bytes.TrimSpace(line); len(line) == 0 {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				return fmt.Sprintf("JSONL decode failed: %v", err)
			}
			event(line)
		}
	case ChannelReader:
		if len(body) > PythonMaxSegment {
			return fmt.Sprintf("segment of %d bytes is over the reader's %d", len(body), PythonMaxSegment)
		}
		if len(body) == 0 {
			return "Trickle event segment was empty"
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			return fmt.Sprintf("Trickle event JSON decode failed: %v", err)
		}
		event(body)
	}
	return ""
}

// Wait waits until the reader has parsed n events, given up, or ctx ended;
// it reports whether it has n.
func (r *Reader) Wait(ctx context.Context, n int) bool {
	for {
		st := r.Stats()
		if len(st.Events) >= n {
			return true
		}
		if st.Stopped != "" {
			return false
		}
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-r.done:
			t.Stop()
			return len(r.Stats().Events) >= n
		case <-t.C:
		}
	}
}
