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

// jsonSpace is the whitespace JSON allows around a value; bytes.TrimSpace
// would also take a form feed or a no-break space, which JSON does not.
const jsonSpace = " \t\r\n"

// splitItems cuts an ingest body into items: a JSON array (its elements), a
// single JSON value, or JSON lines (one value per non-blank line). A body
// that is neither one valid JSON document nor valid line by line yields
// per-line errors, so one bad line rejects only itself. Each item is checked
// with envelope.Validate (valid UTF-8, no repeated key, finite numbers, a
// sane depth): an item that breaks a rule carries the error, naming where.
// The raw bytes of each element are kept exactly as sent.
func splitItems(body []byte) ([]item, error) { return split(body, eventRules) }

// rules are the checks split applies: an event's (envelope.Validate) or a
// trickle frame's, which may nest deeper (envelope.ValidateFrame).
type rules struct {
	elements func(b []byte, dst [][]byte) ([][]byte, error)
	one      func(b []byte) error
}

var (
	eventRules = rules{envelope.ValidateElements, envelope.Validate}
	frameRules = rules{envelope.ValidateFrames, envelope.ValidateFrame}
)

// split is splitItems under the given rules.
func split(body []byte, r rules) ([]item, error) {
	trimmed := bytes.Trim(body, jsonSpace)
	if len(trimmed) == 0 {
		return nil, errEmptyBody
	}
	// One strict pass over the whole body; only a body that breaks a rule
	// is looked at again, to tell its shape and which items are at fault.
	// A valid array is cut into its elements on that same pass.
	var elems [][]byte
	if trimmed[0] == '[' {
		elems = make([][]byte, 0, 64)
	}
	elems, verr := r.elements(trimmed, elems)
	if verr == nil || (!envelope.IsSyntax(verr) && json.Valid(trimmed)) {
		if trimmed[0] != '[' {
			return []item{{raw: trimmed, err: verr}}, nil
		}
		if verr != nil {
			elems, _ = envelope.Elements(trimmed) // valid JSON: a byte scan cuts it exactly
		}
		if len(elems) == 0 {
			return nil, errEmptyBody
		}
		items := make([]item, len(elems))
		for i, e := range elems {
			items[i] = item{raw: e}
			if verr != nil {
				items[i].err = r.one(e)
			}
		}
		return items, nil
	}
	if trimmed[0] == '[' {
		// An array that is not valid JSON cannot be cut into elements safely.
		return nil, fmt.Errorf("body: invalid JSON array: %s", syntaxProblem(trimmed, verr))
	}
	var items []item
	for n, line := range bytes.Split(body, []byte{'\n'}) {
		line = bytes.Trim(line, jsonSpace)
		if len(line) == 0 {
			continue
		}
		it := item{raw: line, line: n + 1}
		if err := r.one(line); envelope.IsSyntax(err) {
			it.err = fmt.Errorf("line %d: invalid JSON: %s", n+1, syntaxProblem(line, err))
		} else if err != nil {
			it.err = fmt.Errorf("line %d: %w", n+1, err)
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil, errEmptyBody
	}
	return items, nil
}

// syntaxProblem words why b is not JSON: the validator's syntax error, or,
// when it stopped at a rule first, encoding/json's.
func syntaxProblem(b []byte, verr error) string {
	if envelope.IsSyntax(verr) {
		return errors.Unwrap(verr).Error()
	}
	var v any
	return fmt.Sprint(json.Unmarshal(b, &v))
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
	Limit    *Limit      `json:"limit,omitempty"`   // the limit that refused the request whole (413)
	// Refused is how many items an overloaded agent refused as a whole
	// (429 or 503): none was accepted, send them again after RetryAfter
	// seconds (also the Retry-After header). See admit.go.
	Refused    int `json:"refused,omitempty"`
	RetryAfter int `json:"retry_after,omitempty"`
}

// Limit is the limit that refused a request whole (413), so that a client
// can split the request and retry without guessing.
type Limit struct {
	Name string `json:"name"` // the setting (EDGERELAY_MAX_BODY_BYTES, …) or the fixed limit
	Unit string `json:"unit"` // "bytes" or "events"
	Max  int64  `json:"max"`  // the limit
	// Got is the request's figure that is over Max. For a chunked body (no
	// Content-Length), which is read only to just past the limit, it is
	// Max+1: "more than Max".
	Got int64 `json:"got"`
}

// limitError refuses a body whole for a byte limit.
type limitError struct{ Limit }

func (e *limitError) Error() string {
	got := fmt.Sprintf("%d bytes", e.Got)
	if e.Got == e.Max+1 {
		got = fmt.Sprintf("more than %d bytes", e.Max)
	}
	return fmt.Sprintf("body: %s is over the limit of %d bytes (%s); split it into smaller requests", got, e.Max, e.Name)
}

// readBody reads a request body up to limit bytes (the limit named name).
// A body over the limit is a *limitError; the answer to it is sent before
// the rest of the body is read, which the server's lingering close takes
// care of (linger.go).
func readBody(w http.ResponseWriter, r *http.Request, limit int64, name string) ([]byte, error) {
	tooLarge := func(got int64) error {
		return &limitError{Limit{Name: name, Unit: "bytes", Max: limit, Got: got}}
	}
	if r.ContentLength > limit {
		return nil, tooLarge(r.ContentLength)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, tooLarge(limit + 1)
	}
	return body, err
}

// Names of the body limits in answers.
const (
	limitBody      = "EDGERELAY_MAX_BODY_BYTES"
	limitAllocator = "allocator snapshot (fixed)"
	limitAttach    = "session attach (fixed)"
)

// writeBodyError answers a body that could not be read: 413 with the limit
// for one over a limit, 400 otherwise.
func writeBodyError(w http.ResponseWriter, err error) {
	var le *limitError
	if errors.As(err, &le) {
		writeError(w, http.StatusRequestEntityTooLarge, Answer{Rejected: []Rejection{}, Error: le.Error(), Limit: &le.Limit})
		return
	}
	writeError(w, http.StatusBadRequest, Answer{Rejected: []Rejection{}, Error: "body: " + err.Error()})
}
