package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// FieldError says which part of an envelope or frame is at fault. Field names
// the top-level member ("id", "timestamp", "data", "event.id", "frame", …);
// readers that count rejections group them by Field. Path, when set, says
// exactly where inside it ("data.samples[3].unit") and is what the message
// names.
type FieldError struct {
	Field   string
	Problem string
	Path    string

	cause error // a syntax error (IsSyntax), when the bytes are not JSON
}

func (e *FieldError) Error() string {
	if e.Path != "" {
		return e.Path + ": " + e.Problem
	}
	return e.Field + ": " + e.Problem
}

func (e *FieldError) Unwrap() error { return e.cause }

func fieldErr(field, problem string) error { return &FieldError{Field: field, Problem: problem} }

// Checked is what Check learned about a prebuilt envelope.
type Checked struct {
	ID        string
	Type      string
	SessionID string // data.session_id when it is a string, else ""
}

// envelopeFields are the only top-level keys of an envelope (spec/envelope.md).
var envelopeFields = []string{"id", "type", "timestamp", "gateway", "data"}

// MaxIDBytes is the longest id a prebuilt envelope may carry (a UUID has
// 36 bytes): the id travels twice to Kafka, as the record's key and inside
// its value, so the agent's event limit must leave room for it.
const MaxIDBytes = 128

// maxTimestampDigits keeps a millisecond timestamp inside int64.
const maxTimestampDigits = 19

// Check validates a prebuilt envelope without changing it: JSON that passes
// Validate (no repeated key anywhere, valid UTF-8, finite numbers, at most
// MaxDepth levels), non-empty string id (at most MaxIDBytes) and type, timestamp a string of
// decimal digits (Unix milliseconds), gateway a string if present, data an
// object or an array, and no other top-level member. Every problem of the
// envelope's members is reported, each a *FieldError naming its field; a
// Validate problem alone.
func Check(raw []byte) (Checked, error) {
	if err := validate(raw, MaxDepth, "envelope", false); err != nil {
		return Checked{}, err
	}
	var buf [8]member
	ms, ok := members(raw, buf[:0])
	if !ok {
		return Checked{}, fieldErr("envelope", "must be a JSON object")
	}
	c, _, err := checkMembers(raw, ms)
	return c, err
}

// checkMembers is Check on the members of a valid JSON object; it also
// returns the index of data among ms (-1 when missing).
func checkMembers(raw []byte, ms []member) (Checked, int, error) {
	var (
		c    Checked
		errs []error
		seen [5]int // index of each envelope field in ms, -1 when absent
	)
	for i := range seen {
		seen[i] = -1
	}
	var unknown []string
	for i, m := range ms {
		name := m.name()
		f := slices.Index(envelopeFields, name)
		if f < 0 {
			unknown = append(unknown, name)
			continue
		}
		if seen[f] >= 0 {
			errs = append(errs, fieldErr(name, "repeated (a reader keeping the first and one keeping the last would disagree)"))
			continue
		}
		seen[f] = i
	}
	val := func(f int) []byte {
		if seen[f] < 0 {
			return nil
		}
		return raw[ms[seen[f]].valStart:ms[seen[f]].end]
	}
	var err error
	if c.ID, err = nonEmptyString(val(0), "id"); err != nil {
		errs = append(errs, err)
	} else if len(c.ID) > MaxIDBytes {
		errs = append(errs, fieldErr("id", fmt.Sprintf("%d bytes is over the limit of %d (the id is the Kafka record key, and counts against its size)", len(c.ID), MaxIDBytes)))
	}
	if c.Type, err = nonEmptyString(val(1), "type"); err != nil {
		errs = append(errs, err)
	}
	if ts := val(2); ts == nil {
		errs = append(errs, fieldErr("timestamp", "missing"))
	} else if s, ok := jsonString(ts); !ok || !isDigits(s) {
		errs = append(errs, fieldErr("timestamp", "must be a string of digits (milliseconds since the Unix epoch)"))
	}
	if gw := val(3); gw != nil {
		if _, ok := jsonString(gw); !ok {
			errs = append(errs, fieldErr("gateway", "must be a string"))
		}
	}
	data := val(4)
	switch {
	case data == nil:
		errs = append(errs, fieldErr("data", "missing"))
	case data[0] == '{':
		c.SessionID = sessionID(data)
	case data[0] == '[':
	default:
		errs = append(errs, fieldErr("data", "must be a JSON object or array"))
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		errs = append(errs, fieldErr(k, fmt.Sprintf("unknown field %q (an envelope has id, type, timestamp, gateway, data)", k)))
	}
	return c, seen[4], errors.Join(errs...)
}

// sessionID returns data.session_id of a data object when it is a string.
func sessionID(data []byte) string {
	var buf [32]member
	ms, _ := members(data, buf[:0])
	for _, m := range ms {
		if m.is("session_id") {
			s, _ := jsonString(data[m.valStart:m.end])
			return s
		}
	}
	return ""
}

// nonEmptyString decodes raw as a string that is not blank.
func nonEmptyString(raw []byte, field string) (string, error) {
	if raw == nil {
		return "", fieldErr(field, "missing")
	}
	s, ok := jsonString(raw)
	if !ok || strings.TrimSpace(s) == "" {
		return "", fieldErr(field, "must be a non-empty string")
	}
	return s, nil
}

func isDigits(s string) bool {
	if s == "" || len(s) > maxTimestampDigits {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ID returns the top-level "id" of an envelope when it is a string, without
// decoding the rest: sinks use it as a record key and in log lines. The id
// may come after data (key order is not fixed). Of repeated ids (which Check
// refuses, but an old spool may hold) the last counts, as for encoding/json,
// Python and JavaScript readers. Without escapes the result aliases b.
//
// Bytes that are not one whole JSON object have no id: a record cut short
// must not lend the sink a key or a log line an id that it does not carry.
func ID(b []byte) ([]byte, bool) {
	var buf [8]member
	ms, ok := members(b, buf[:0])
	if !ok {
		return nil, false
	}
	for i := len(ms) - 1; i >= 0; i-- {
		m := ms[i]
		if !m.is("id") {
			continue
		}
		v := b[m.valStart:m.end]
		if len(v) < 2 || v[0] != '"' {
			return nil, false
		}
		if inner := v[1 : len(v)-1]; bytes.IndexByte(inner, '\\') < 0 {
			return inner, true
		}
		s, ok := jsonString(v)
		return []byte(s), ok
	}
	return nil, false
}
