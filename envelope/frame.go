package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// FrameTelemetry is the frame type that carries one envelope on a trickle
// events channel (spec/envelope.md, "Frame on a trickle events channel").
const FrameTelemetry = "telemetry"

// The relay annotation, added to data by an agent that received the
// envelope from another agent over a trickle channel (spec/envelope.md,
// "Prebuilt envelopes are forwarded verbatim").
const (
	RelayedVia         = "trickle"
	KeyRelayedVia      = "relayed_via"
	KeyRelayReceivedTS = "relay_received_timestamp"
)

// TelemetryFramePrefix is what WrapTelemetry writes before the envelope;
// the frame adds len(TelemetryFramePrefix)+1 bytes to it.
const TelemetryFramePrefix = `{"type":"telemetry","event":`

// WrapTelemetry appends to dst the telemetry frame of env,
// {"type":"telemetry","event":<env>}, without a trailing newline. env must
// be one JSON object; it is copied verbatim.
func WrapTelemetry(dst, env []byte) []byte {
	dst = append(dst, TelemetryFramePrefix...)
	dst = append(dst, env...)
	return append(dst, '}')
}

// ParseFrame reads one frame line: a JSON object with a non-empty string
// "type" and, for telemetry frames, an "event" object. Surrounding JSON
// whitespace is ignored (exactly what encoding/json ignores). event aliases
// line and is nil when the frame has no "event". Keys match exactly (not
// case-folded, unlike encoding/json), and the line must pass Validate's
// rules (with three more levels, for a gateway document), so every reader
// of the line agrees on what it says: a repeated "type" or "event" is an
// error like any repeated key. Errors are *FieldError with Field "frame" (not
// JSON), "type", "event", or the member where a Validate rule is broken.
func ParseFrame(line []byte) (typ string, event json.RawMessage, err error) {
	line = trimJSONSpace(line)
	if len(line) == 0 {
		return "", nil, fieldErr("frame", "empty")
	}
	if err := validate(line, MaxFrameDepth, "frame", false); err != nil {
		if isSyntax(err) {
			return "", nil, &FieldError{Field: "frame", Problem: "not valid JSON", cause: errors.Unwrap(err)}
		}
		return "", nil, err
	}
	var buf [8]member
	ms, ok := members(line, buf[:0])
	if !ok {
		return "", nil, fieldErr("frame", "not a JSON object")
	}
	var typRaw, ev []byte
	for _, m := range ms { // validate refused repeated keys
		switch {
		case m.is("type"):
			typRaw = line[m.valStart:m.end]
		case m.is("event"):
			ev = line[m.valStart:m.end]
		}
	}
	if typRaw == nil {
		return "", nil, fieldErr("type", "missing")
	}
	typ, ok = jsonString(typRaw)
	if !ok {
		return "", nil, fieldErr("type", "not a string")
	}
	if typ == "" {
		return "", nil, fieldErr("type", "empty")
	}
	if typ == FrameTelemetry {
		if ev == nil {
			return "", nil, fieldErr("event", "missing")
		}
		if ev[0] != '{' {
			return "", nil, fieldErr("event", "not an object")
		}
	}
	return typ, ev, nil
}

// trimJSONSpace trims the whitespace JSON allows around a value (space, tab,
// CR, LF), and nothing else: a form feed is not JSON whitespace.
func trimJSONSpace(b []byte) []byte {
	return bytes.Trim(b, " \t\r\n")
}

// AnnotateRelay checks env as a prebuilt envelope (Check) whose data is an
// object, and returns a copy with two members added to data:
// "relayed_via":"trickle" and "relay_received_timestamp":"<received in Unix
// ms>". Everything else is kept byte for byte. A relay annotation already in
// data (an envelope relayed twice) is replaced, so keys stay unique. Errors
// are *FieldError with Field "event" or "event.<field>".
func AnnotateRelay(env []byte, received time.Time) ([]byte, Checked, error) {
	env = trimJSONSpace(env)
	if len(env) == 0 {
		return nil, Checked{}, fieldErr("event", "not valid JSON")
	}
	if err := validate(env, MaxDepth, "", false); err != nil {
		if isSyntax(err) {
			return nil, Checked{}, &FieldError{Field: "event", Problem: "not valid JSON", cause: errors.Unwrap(err)}
		}
		return nil, Checked{}, prefixFields(err, "event.")
	}
	return annotate(nil, env, received)
}

// annotate is AnnotateRelay appending to dst. env must be valid JSON without
// surrounding whitespace: an event from ParseFrame is.
func annotate(dst, env []byte, received time.Time) ([]byte, Checked, error) {
	var buf [16]member
	ms, ok := members(env, buf[:0])
	if !ok {
		return nil, Checked{}, fieldErr("event", "not an object")
	}
	c, data, err := checkMembers(env, ms)
	if err != nil {
		return nil, Checked{}, prefixFields(err, "event.")
	}
	dm := ms[data]
	d := env[dm.valStart:dm.end]
	if d[0] != '{' {
		return nil, Checked{}, fieldErr("event.data", "not an object (the relay annotation lives in it)")
	}
	var dbuf [32]member
	dms, _ := members(d, dbuf[:0])
	existing := false
	for _, m := range dms {
		if m.is(KeyRelayedVia) || m.is(KeyRelayReceivedTS) {
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
			if m.is(KeyRelayedVia) || m.is(KeyRelayReceivedTS) {
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
	return dst, c, nil
}

// prefixFields returns err with every FieldError's Field prefixed, keeping
// the order of a joined error.
func prefixFields(err error, prefix string) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, prefixFields(e, prefix))
		}
		return errors.Join(out...)
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		f, p := prefix+fe.Field, fe.Path
		if fe.Field == "" { // the whole value
			f = strings.TrimSuffix(prefix, ".")
		}
		if p != "" {
			p = prefix + p
		}
		return &FieldError{Field: f, Problem: fe.Problem, Path: p, cause: fe.cause}
	}
	return err
}

// QueueEventType is the family the go-livepeer gateway gives the Kafka
// record of a gateway frame: ai_stream_events, which the analytics pipeline
// keeps whatever the event's own type (spec/naap.md).
const QueueEventType = "ai_stream_events"

// AppendGatewayFrame appends to dst one document in the go-livepeer
// gateway's shape (spec/trickle.md, "Readers"):
//
//	{"queue_event_type":"ai_stream_events","event":{"type":"<family>","client_source":"edgerelay","envelopes":[<env>,...]}}
//
// The gateway re-stamps the event (a new id and timestamp) and adds the
// stream's identity to it; the envelopes inside keep their own id, type and
// timestamp, so the Kafka record can be traced to ours, and the event's type
// is the family of the envelopes it carries. envs must be JSON objects; they
// are copied verbatim.
func AppendGatewayFrame(dst []byte, family string, envs [][]byte) []byte {
	dst = append(dst, `{"queue_event_type":"`+QueueEventType+`","event":{"type":`...)
	dst = appendJSONString(dst, family)
	dst = append(dst, `,"client_source":"`+ClientSource+`","envelopes":[`...)
	for i, e := range envs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, e...)
	}
	return append(dst, "]}}"...)
}

// GatewayFrameLen is len(AppendGatewayFrame(nil, family, envs)) for envs
// holding n envelopes of envBytes bytes in all.
func GatewayFrameLen(family string, n, envBytes int) int {
	return len(AppendGatewayFrame(nil, family, nil)) + envBytes + max(n-1, 0)
}

// ParseGatewayFrame reads a document in the gateway's shape and returns the
// envelopes of its event (aliasing doc), or ok false when doc is not a
// gateway frame of ours (no queue_event_type, or an event without an
// envelopes array). doc must be valid JSON.
func ParseGatewayFrame(doc []byte) (envs [][]byte, ok bool) {
	var buf [8]member
	ms, isObj := members(doc, buf[:0])
	if !isObj {
		return nil, false
	}
	var qet, ev []byte
	for _, m := range ms {
		switch {
		case m.is("queue_event_type"):
			qet = doc[m.valStart:m.end]
		case m.is("event"):
			ev = doc[m.valStart:m.end]
		}
	}
	if qet == nil || ev == nil {
		return nil, false
	}
	var ebuf [8]member
	ems, isObj := members(ev, ebuf[:0])
	if !isObj {
		return nil, false
	}
	for _, m := range ems {
		if m.is("envelopes") {
			envs, ok = elements(ev[m.valStart:m.end], nil)
			return envs, ok
		}
	}
	return nil, false
}

// TypeOf returns the top-level "type" of an envelope (or a frame) when it is
// a string, without decoding the rest.
func TypeOf(b []byte) (string, bool) {
	var buf [8]member
	ms, _ := members(b, buf[:0])
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].is("type") {
			return jsonString(b[ms[i].valStart:ms[i].end])
		}
	}
	return "", false
}
