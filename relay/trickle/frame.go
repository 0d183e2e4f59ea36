package trickle

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// FrameTelemetry is the frame type that carries one envelope
// (spec/envelope.md, "Frame on a trickle events channel").
const FrameTelemetry = "telemetry"

// Relay annotation added to data by AnnotateRelay (spec/envelope.md,
// "Prebuilt envelopes are forwarded verbatim").
const (
	RelayedVia           = "trickle"
	keyRelayedVia        = "relayed_via"
	keyRelayReceivedTS   = "relay_received_timestamp"
	telemetryFramePrefix = `{"type":"telemetry","event":`
)

// FrameError says why a frame or the envelope in it was rejected. Field
// names the part at fault ("frame", "type", "event", "event.id",
// "event.type", "event.timestamp", "event.data"); the subscriber counts
// rejected frames by it.
type FrameError struct {
	Field   string
	Problem string
}

func (e *FrameError) Error() string { return "trickle frame: " + e.Field + ": " + e.Problem }

func frameErr(field, problem string) error { return &FrameError{Field: field, Problem: problem} }

// ParseFrame reads one frame line: a JSON object with a non-empty string
// "type" and, for telemetry frames, an "event" object. Surrounding
// whitespace is ignored. event aliases line and is nil when the frame has no
// "event". Keys match exactly (not case-folded, unlike encoding/json), and a
// repeated "type" or "event" is an error, so every reader of the line agrees
// on what it says. It is safe for concurrent use.
func ParseFrame(line []byte) (typ string, event json.RawMessage, err error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return "", nil, frameErr("frame", "empty")
	}
	if !json.Valid(line) {
		return "", nil, frameErr("frame", "not valid JSON")
	}
	if line[0] != '{' {
		return "", nil, frameErr("frame", "not a JSON object")
	}
	var buf [8]member
	ms := objectMembers(line, buf[:0])
	var typRaw, ev []byte
	for _, m := range ms {
		switch {
		case m.is("type"):
			if typRaw != nil {
				return "", nil, frameErr("type", "repeated")
			}
			typRaw = line[m.valStart:m.end]
		case m.is("event"):
			if ev != nil {
				return "", nil, frameErr("event", "repeated")
			}
			ev = line[m.valStart:m.end]
		}
	}
	if typRaw == nil {
		return "", nil, frameErr("type", "missing")
	}
	typ, ok := jsonString(typRaw)
	if !ok {
		return "", nil, frameErr("type", "not a string")
	}
	if typ == "" {
		return "", nil, frameErr("type", "empty")
	}
	if typ == FrameTelemetry {
		if ev == nil {
			return "", nil, frameErr("event", "missing")
		}
		if ev[0] != '{' {
			return "", nil, frameErr("event", "not an object")
		}
	}
	return typ, ev, nil
}

// WrapTelemetry appends to dst the telemetry frame of env,
// {"type":"telemetry","event":<env>}, without a trailing newline. env must
// be one JSON object; it is copied verbatim.
func WrapTelemetry(dst, env []byte) []byte {
	dst = append(dst, telemetryFramePrefix...)
	dst = append(dst, env...)
	return append(dst, '}')
}

// AnnotateRelay checks env against the rules for prebuilt envelopes
// (spec/envelope.md: non-empty string id and type, timestamp a string of
// decimal digits) and returns a copy with two members added to data:
// "relayed_via":"trickle" and "relay_received_timestamp":"<received in Unix
// ms>". Everything else is kept byte for byte; data must be an object, since
// the annotation lives in it. A relay annotation already in data (an
// envelope relayed twice) is replaced, so keys stay unique.
func AnnotateRelay(env []byte, received time.Time) ([]byte, error) {
	env = bytes.TrimSpace(env)
	if len(env) == 0 || !json.Valid(env) {
		return nil, frameErr("event", "not valid JSON")
	}
	out, _, err := annotate(nil, env, received)
	return out, err
}

// annotate is AnnotateRelay appending to dst, also returning the envelope
// id. env must be valid JSON without surrounding whitespace: an event from
// ParseFrame is, and validating it again would double the subscriber's cost.
func annotate(dst, env []byte, received time.Time) ([]byte, string, error) {
	if env[0] != '{' {
		return nil, "", frameErr("event", "not an object")
	}
	var buf [16]member
	ms := objectMembers(env, buf[:0])
	var idRaw, typRaw, tsRaw []byte
	data := -1
	for i, m := range ms {
		var slot *[]byte
		var field string
		switch {
		case m.is("id"):
			slot, field = &idRaw, "event.id"
		case m.is("type"):
			slot, field = &typRaw, "event.type"
		case m.is("timestamp"):
			slot, field = &tsRaw, "event.timestamp"
		case m.is("data"):
			if data >= 0 {
				return nil, "", frameErr("event.data", "repeated")
			}
			data = i
			continue
		default:
			continue
		}
		if *slot != nil {
			return nil, "", frameErr(field, "repeated")
		}
		*slot = env[m.valStart:m.end]
	}
	id, err := nonEmptyString(idRaw, "event.id")
	if err != nil {
		return nil, "", err
	}
	if _, err := nonEmptyString(typRaw, "event.type"); err != nil {
		return nil, "", err
	}
	ts, err := nonEmptyString(tsRaw, "event.timestamp")
	if err != nil {
		return nil, "", err
	}
	for i := 0; i < len(ts); i++ {
		if ts[i] < '0' || ts[i] > '9' {
			return nil, "", frameErr("event.timestamp", "not a string of decimal digits (Unix ms)")
		}
	}
	if data < 0 {
		return nil, "", frameErr("event.data", "missing")
	}
	dm := ms[data]
	d := env[dm.valStart:dm.end]
	if d[0] != '{' {
		return nil, "", frameErr("event.data", "not an object")
	}

	var dbuf [32]member
	dms := objectMembers(d, dbuf[:0])
	existing := false
	for _, m := range dms {
		if m.is(keyRelayedVia) || m.is(keyRelayReceivedTS) {
			existing = true
			break
		}
	}
	annotation := func(b []byte) []byte {
		b = append(b, `"relayed_via":"trickle","relay_received_timestamp":"`...)
		b = strconv.AppendInt(b, received.UnixMilli(), 10)
		return append(b, '"')
	}
	if dst == nil {
		dst = make([]byte, 0, len(env)+80)
	}
	dst = append(dst, env[:dm.valStart]...)
	switch {
	case existing:
		// Rebuild data from its other members, then the annotation.
		dst = append(dst, '{')
		for _, m := range dms {
			if m.is(keyRelayedVia) || m.is(keyRelayReceivedTS) {
				continue
			}
			dst = append(dst, d[m.start:m.end]...)
			dst = append(dst, ',')
		}
		dst = annotation(dst)
		dst = append(dst, '}')
	case len(dms) == 0:
		dst = append(dst, '{')
		dst = annotation(dst)
		dst = append(dst, d[1:]...) // whitespace and '}'
	default:
		// Insert after the last member; keep every original byte.
		last := dms[len(dms)-1].end
		dst = append(dst, d[:last]...)
		dst = append(dst, ',')
		dst = annotation(dst)
		dst = append(dst, d[last:]...)
	}
	dst = append(dst, env[dm.end:]...)
	return dst, id, nil
}

func nonEmptyString(raw []byte, field string) (string, error) {
	if raw == nil {
		return "", frameErr(field, "missing")
	}
	s, ok := jsonString(raw)
	if !ok {
		return "", frameErr(field, "not a string")
	}
	if s == "" {
		return "", frameErr(field, "empty")
	}
	return s, nil
}

// jsonString decodes raw, one valid JSON value, if it is a string.
func jsonString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	// Escapes, or invalid UTF-8, which encoding/json turns into U+FFFD:
	// decode as it does, so every reader agrees on the value.
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// member is one key/value pair of a JSON object, as offsets into the
// object's bytes.
type member struct {
	key      []byte // the key's bytes between its quotes, still escaped
	escaped  bool   // key contains a backslash escape
	start    int    // the key's opening quote
	valStart int    // first byte of the value
	end      int    // one past the value's last byte
}

// is reports whether the member's decoded key equals name.
func (m member) is(name string) bool {
	if !m.escaped {
		return string(m.key) == name
	}
	k, ok := jsonString(append(append([]byte{'"'}, m.key...), '"'))
	return ok && k == name
}

// objectMembers appends the members of obj to dst. obj must be valid JSON
// (json.Valid) starting with '{'; the scan relies on that and checks nothing.
func objectMembers(obj []byte, dst []member) []member {
	i := skipSpace(obj, 1)
	if obj[i] == '}' {
		return dst
	}
	for {
		keyEnd := stringEnd(obj, i)
		m := member{key: obj[i+1 : keyEnd-1], start: i}
		m.escaped = bytes.IndexByte(m.key, '\\') >= 0
		i = skipSpace(obj, keyEnd) + 1 // past ':'
		i = skipSpace(obj, i)
		m.valStart = i
		i = valueEnd(obj, i)
		m.end = i
		dst = append(dst, m)
		i = skipSpace(obj, i)
		if obj[i] == '}' {
			return dst
		}
		i = skipSpace(obj, i+1) // past ','
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns one past the closing quote of the string at b[i].
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// valueEnd returns one past the end of the value starting at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); {
			switch b[j] {
			case '"':
				j = stringEnd(b, j)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
			j++
		}
		return len(b)
	default: // number, true, false, null
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j
			}
			j++
		}
		return j
	}
}
