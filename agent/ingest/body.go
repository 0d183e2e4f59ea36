package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

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
	if envelope.Valid(trimmed) {
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
		if !envelope.Valid(line) {
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

// Answer is the body of every ingest response.
type Answer struct {
	Accepted int         `json:"accepted"`
	Rejected []Rejection `json:"rejected"`
	Durable  *bool       `json:"durable,omitempty"` // false when accepted items are held in memory only
	Error    string      `json:"error,omitempty"`   // why nothing was accepted, when it is not per item
	// Refused is how many items an overloaded agent refused as a whole
	// (429 or 503): none was accepted, send them again after RetryAfter
	// seconds (also the Retry-After header).
	Refused    int `json:"refused,omitempty"`
	RetryAfter int `json:"retry_after,omitempty"`
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

func writeBodyError(w http.ResponseWriter, err error) {
	if errors.Is(err, errTooLarge) {
		writeJSON(w, http.StatusRequestEntityTooLarge, Answer{Rejected: []Rejection{}, Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusBadRequest, Answer{Rejected: []Rejection{}, Error: "body: " + err.Error()})
}
