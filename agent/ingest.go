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
		items := splitArray(trimmed) // valid JSON: a byte scan cuts it exactly
		if len(items) == 0 {
			return nil, errEmptyBody
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

// prepareEvent turns one /v1/events item into an envelope: a prebuilt
// envelope (it has an "id") is checked and kept byte for byte; a {type, data}
// event is stamped, with the identity of the session its data names.
func (a *Agent) prepareEvent(raw json.RawMessage) (prepared, error) {
	env, typ, session, err := a.prepareEventParts(raw)
	return prepared{env: env, typ: typ, session: session}, err
}

func (a *Agent) prepareEventParts(raw json.RawMessage) ([]byte, string, string, error) {
	if len(raw) > a.cfg.MaxEventBytes {
		return nil, "", "", fmt.Errorf("event: %d bytes is over the limit of %d", len(raw), a.cfg.MaxEventBytes)
	}
	if env, typ, sid, ok := a.prepareFast(raw); ok {
		return env, typ, sid, nil
	}
	return a.prepareSlow(raw)
}

// prepareSlow is the general path: any envelope or event, and the words of
// every error. prepareFast must build the same bytes for what it takes.
func (a *Agent) prepareSlow(raw json.RawMessage) ([]byte, string, string, error) {
	if firstByte(raw) != '{' {
		return nil, "", "", errors.New("event: must be a JSON object")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, "", "", fmt.Errorf("event: %v", err)
	}
	if _, ok := m["id"]; ok {
		ce, err := checkEnvelopeFields(m)
		if err != nil {
			return nil, "", "", err
		}
		// One envelope per line on every line-oriented sink: a pretty-printed
		// envelope is compacted (only whitespace between tokens changes; a
		// compact envelope, the normal case, is kept byte for byte).
		if bytes.ContainsAny(raw, "\n\r") {
			var buf bytes.Buffer
			if err := json.Compact(&buf, raw); err != nil {
				return nil, "", "", fmt.Errorf("event: %v", err)
			}
			raw = buf.Bytes()
		}
		return raw, ce.Type, ce.SessionID, nil
	}
	var errs []error
	for k := range m {
		if k != "type" && k != "data" {
			errs = append(errs, fmt.Errorf("unknown field %q (an event has type and data; an envelope also has id and timestamp)", k))
		}
	}
	typ, err := nonEmptyString(m, "type")
	if err != nil {
		errs = append(errs, err)
	}
	var data map[string]json.RawMessage
	switch d, ok := m["data"]; {
	case !ok:
		errs = append(errs, errors.New("data: missing"))
	case firstByte(d) != '{':
		errs = append(errs, errors.New("data: must be a JSON object"))
	default:
		if err := json.Unmarshal(d, &data); err != nil {
			errs = append(errs, fmt.Errorf("data: %v", err))
		}
	}
	if len(errs) > 0 {
		return nil, "", "", errors.Join(errs...)
	}
	fields := make(map[string]any, len(data)+8)
	for k, v := range data {
		fields[k] = v
	}
	var sess Identity
	var sessionID string
	if sid, ok := data["session_id"]; ok {
		if json.Unmarshal(sid, &sessionID) == nil && sessionID != "" {
			sess = a.sessions.identity(sessionID)
		}
	}
	env, err := a.stamper.Stamp(typ, fields, sess)
	if err != nil {
		return nil, "", "", err
	}
	if len(env) > a.cfg.MaxEventBytes {
		return nil, "", "", fmt.Errorf("event: %d bytes once stamped is over the limit of %d", len(env), a.cfg.MaxEventBytes)
	}
	return env, typ, sessionID, nil
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
