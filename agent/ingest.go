package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/livepeer/edgerelay/envelope"
)

// item is one element of an ingest body, before validation.
type item struct {
	raw  json.RawMessage
	line int   // 1-based line for JSON lines bodies, 0 otherwise
	err  error // the item could not even be parsed
}

// errEmptyBody is returned by splitItems for a body with no items.
var errEmptyBody = errors.New("body: empty (send a JSON object, an array, or JSON lines)")

// splitItems cuts an ingest body into items: a JSON array (its elements), a
// single JSON value, or JSON lines (one value per non-blank line). A body
// that is neither one valid JSON document nor valid line by line yields
// per-line errors, so one bad line rejects only itself. The raw bytes of each
// element are kept exactly as sent.
func splitItems(body []byte) ([]item, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, errEmptyBody
	}
	if json.Valid(trimmed) {
		if trimmed[0] != '[' {
			return []item{{raw: trimmed}}, nil
		}
		elems, _ := envelope.Elements(trimmed) // valid JSON: a byte scan cuts it exactly
		if len(elems) == 0 {
			return nil, errEmptyBody
		}
		items := make([]item, len(elems))
		for i, e := range elems {
			items[i] = item{raw: e}
		}
		return items, nil
	}
	if trimmed[0] == '[' {
		// An array that is not valid JSON cannot be cut into elements safely.
		var v any
		err := json.Unmarshal(trimmed, &v)
		return nil, fmt.Errorf("body: invalid JSON array: %v", err)
	}
	var items []item
	for n, line := range bytes.Split(body, []byte{'\n'}) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		it := item{raw: line, line: n + 1}
		if !json.Valid(line) {
			var v any
			err := json.Unmarshal(line, &v)
			it.err = fmt.Errorf("line %d: invalid JSON: %v", n+1, err)
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil, errEmptyBody
	}
	return items, nil
}

// Rejection is one refused item of an ingest request.
type Rejection struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// IngestAnswer is the body of every ingest response.
type IngestAnswer struct {
	Accepted int         `json:"accepted"`
	Rejected []Rejection `json:"rejected"`
	Durable  *bool       `json:"durable,omitempty"` // false when accepted items are held in memory only
	Error    string      `json:"error,omitempty"`   // why nothing was accepted, when it is not per item
}

// prepared is an item ready for the ring.
type prepared struct {
	index   int
	env     []byte
	typ     string
	session string // data.session_id, for routing to the session's channel
}

// prepareFunc validates one item and makes it an envelope.
type prepareFunc func(json.RawMessage) (prepared, error)

// prepareEvent turns one /v1/events item into an envelope (see
// envelope.Stamper.Prepare).
func (a *Agent) prepareEvent(raw json.RawMessage) (prepared, error) {
	p, err := a.stamper.Prepare(raw)
	return prepared{env: p.Env, typ: p.Type, session: p.SessionID}, err
}

// readBody reads a request body up to limit bytes. It reports errTooLarge
// when the body is over the limit.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, errTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, errTooLarge
	}
	return body, err
}

var errTooLarge = errors.New("body: over the size limit")

// ingest validates items with prepare, submits the good ones, waits until
// they are in the spool (or the request ends), and builds the answer.
func (a *Agent) ingest(ctx context.Context, source string, items []item, prepare prepareFunc) (int, IngestAnswer) {
	ans := IngestAnswer{Rejected: []Rejection{}}
	good := make([]prepared, 0, len(items))
	for i, it := range items {
		if it.err != nil {
			ans.Rejected = append(ans.Rejected, Rejection{Index: i, Error: it.err.Error()})
			continue
		}
		p, err := prepare(it.raw)
		if err != nil {
			msg := err.Error()
			if it.line > 0 {
				msg = fmt.Sprintf("line %d: %s", it.line, msg)
			}
			ans.Rejected = append(ans.Rejected, Rejection{Index: i, Error: strings.ReplaceAll(msg, "\n", "; ")})
			continue
		}
		p.index = i
		good = append(good, p)
	}
	a.counters.rejected.add(source, uint64(len(ans.Rejected)))
	if len(good) == 0 {
		ans.Error = "no acceptable item"
		return http.StatusBadRequest, ans
	}
	w, err := a.submit(source, good)
	if err != nil {
		ans.Error = err.Error()
		return http.StatusServiceUnavailable, ans
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		return http.StatusServiceUnavailable, ans // the client left; nothing to answer
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed != nil {
		ans.Error = "spool write failed: " + w.failed.Error()
		return http.StatusServiceUnavailable, ans
	}
	dropped := make(map[int]bool, len(w.dropped))
	for _, i := range w.dropped {
		dropped[i] = true
		ans.Rejected = append(ans.Rejected, Rejection{Index: good[i].index, Error: "dropped before it was stored: ring full (the agent is overloaded)"})
	}
	ans.Accepted = len(good) - len(dropped)
	durable := a.durable() && !w.notDurable
	ans.Durable = &durable
	if ans.Accepted == 0 {
		return http.StatusServiceUnavailable, ans
	}
	return http.StatusAccepted, ans
}
