package envelope

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// ClientSource is data.client_source of every envelope the agent stamps.
const ClientSource = "edgerelay"

// IdentityKeys are the identity fields that live flat inside data
// (spec/envelope.md). They are omitted when unknown: never "" or null.
var IdentityKeys = []string{
	"host", "node_id", "region", "orchestrator_address", "gpu_id", "pipeline",
	"model_id", "stream_id", "request_id", "session_id", "connection_id",
}

// Identity is what the agent knows about where an event was born. Empty
// fields are unknown and are not written.
type Identity map[string]string

// StamperOptions configures a Stamper.
type StamperOptions struct {
	Node    Identity         // host, node_id, region, orchestrator_address
	Gateway string           // the envelope's gateway field
	Now     func() time.Time // nil means time.Now
	// Session returns the identity of an attached session, nil when none;
	// Prepare adds it to events whose data names the session. nil means no
	// sessions.
	Session func(id string) Identity
	// MaxBytes is the largest envelope Prepare accepts; 0 means no limit.
	// LimitBy says what set it, for the error of a larger event.
	MaxBytes int
	LimitBy  string
	// Mapping, when set, is applied to every envelope the stamper builds,
	// as it builds it (the agent's NAAP mode, agent/naap); the size check
	// sees the mapped envelope. Envelopes a producer built are never
	// mapped.
	Mapping *Mapping
}

// Stamper turns events into envelopes: it is the one place where an envelope
// is stamped. It is safe for concurrent use.
type Stamper struct {
	o StamperOptions
	// nodeMember is `"key":"value"` for each of o.Node's identity keys by
	// IdentityKeys position (nil when unknown), written once for the fast
	// path; with a mapping, the address is written lower-cased.
	nodeMember [maxIdentityKeys][]byte
	rand       randReader // UUID randomness, read from crypto/rand in blocks
	m          *mapping   // o.Mapping, nil when off
}

// NewStamper returns a stamper.
func NewStamper(o StamperOptions) *Stamper {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Session == nil {
		o.Session = func(string) Identity { return nil }
	}
	st := &Stamper{o: o, m: newMapping(o.Mapping, o.Node)}
	for i, k := range IdentityKeys {
		if v := o.Node[k]; v != "" {
			st.nodeMember[i] = appendMember(nil, k, v)
		}
	}
	if a := st.nodeMember[addressIndex]; st.m != nil && a != nil {
		lowerASCII(a) // as the mapping writes it, once rather than per event
	}
	return st
}

// randReader is crypto/rand read a block at a time: a UUID per event would
// otherwise cost a getrandom call each. Safe for concurrent use.
type randReader struct {
	mu  sync.Mutex
	buf [4096]byte
	n   int // unread bytes at the end of buf
}

func (r *randReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n < len(p) {
		if _, err := io.ReadFull(rand.Reader, r.buf[:]); err != nil {
			return 0, err
		}
		r.n = len(r.buf)
	}
	n := copy(p, r.buf[len(r.buf)-r.n:])
	clear(r.buf[len(r.buf)-r.n : len(r.buf)-r.n+n]) // used randomness does not linger
	r.n -= n
	return n, nil
}

// Stamp builds an envelope for an event of the agent's own sources: a fresh
// UUIDv7, the current time in epoch milliseconds as a decimal string,
// data.type (unless data names a subtype), data.client_source, and identity
// from session then node for every key that data does not already carry;
// then the Mapping, when there is one.
// Values in data may be any JSON-marshalable value, including
// json.RawMessage and json.Number. Stamp modifies data.
func (s *Stamper) Stamp(typ string, data map[string]any, session Identity) ([]byte, error) {
	if strings.TrimSpace(typ) == "" {
		return nil, fieldErr("type", "must be a non-empty string")
	}
	id, err := uuid.NewV7FromReader(&s.rand)
	if err != nil {
		return nil, fmt.Errorf("stamp: uuid: %w", err)
	}
	for _, k := range IdentityKeys {
		if v, ok := data[k]; ok && isEmptyIdentity(v) {
			delete(data, k)
		}
		if _, ok := data[k]; ok {
			continue
		}
		if v := session[k]; v != "" {
			data[k] = v
		} else if v := s.o.Node[k]; v != "" {
			data[k] = v
		}
	}
	if _, ok := data["type"]; !ok {
		data["type"] = typ
	}
	data["client_source"] = ClientSource
	if s.m != nil {
		s.m.mapData(data)
	}
	body, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	return s.appendEnvelope(make([]byte, 0, len(body)+128), id, typ, body), nil
}

// Prepared is one ingest item made into an envelope.
type Prepared struct {
	Env       []byte
	Type      string
	SessionID string // data.session_id, "" when absent
}

// Prepare turns one item of the local API into an envelope. A prebuilt
// envelope (it has an "id") is checked and kept byte for byte (only a
// pretty-printed one is compacted onto one line); a {type, data} event is
// stamped, with the identity of the session its data names. raw must pass
// Validate (the local API checks every item first): a prebuilt envelope's
// members are checked, but what lies inside them is not looked at again.
// (Both stamping paths keep the last of a repeated data key, as a map
// does.) Errors name the field.
func (s *Stamper) Prepare(raw []byte) (Prepared, error) {
	if s.o.MaxBytes > 0 && len(raw) > s.o.MaxBytes {
		return Prepared{}, fmt.Errorf("event: %d bytes is over the limit of %d%s", len(raw), s.o.MaxBytes, s.by())
	}
	var top [8]member
	ms, ok := members(raw, top[:0])
	if !ok {
		return Prepared{}, errors.New("event: must be a JSON object")
	}
	if p, ok := s.prepareFast(raw, ms); ok {
		return p, nil
	}
	return s.prepareSlow(raw, ms)
}

// prepareSlow is the general path: any envelope or event, and the words of
// every error. prepareFast builds the same bytes for what it takes.
func (s *Stamper) prepareSlow(raw []byte, ms []member) (Prepared, error) {
	if slices.ContainsFunc(ms, func(m member) bool { return m.is("id") }) {
		c, _, err := checkMembers(raw, ms)
		if err != nil {
			return Prepared{}, err
		}
		// One envelope per line on every line-oriented sink: a pretty-printed
		// envelope is compacted (only whitespace between tokens changes).
		if bytes.ContainsAny(raw, "\n\r") {
			var buf bytes.Buffer
			if err := json.Compact(&buf, raw); err != nil {
				return Prepared{}, fmt.Errorf("event: %v", err)
			}
			raw = buf.Bytes()
		}
		return Prepared{Env: raw, Type: c.Type, SessionID: c.SessionID}, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return Prepared{}, fmt.Errorf("event: %v", err)
	}
	var errs []error
	var unknown []string
	for k := range m {
		if k != "type" && k != "data" {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		errs = append(errs, fieldErr(k, fmt.Sprintf("unknown field %q (an event has type and data; an envelope also has id and timestamp)", k)))
	}
	typ, err := nonEmptyString(m["type"], "type")
	if err != nil {
		errs = append(errs, err)
	}
	var data map[string]json.RawMessage
	switch d, ok := m["data"]; {
	case !ok:
		errs = append(errs, fieldErr("data", "missing"))
	case firstByte(d) != '{':
		errs = append(errs, fieldErr("data", "must be a JSON object"))
	default:
		if err := json.Unmarshal(d, &data); err != nil {
			errs = append(errs, fmt.Errorf("data: %v", err))
		}
	}
	if len(errs) > 0 {
		return Prepared{}, errors.Join(errs...)
	}
	fields := make(map[string]any, len(data)+8)
	for k, v := range data {
		fields[k] = v
	}
	var sess Identity
	var sid string
	if v, ok := data["session_id"]; ok {
		if json.Unmarshal(v, &sid) == nil && sid != "" {
			sess = s.o.Session(sid)
		}
	}
	env, err := s.Stamp(typ, fields, sess)
	if err != nil {
		return Prepared{}, err
	}
	if s.o.MaxBytes > 0 && len(env) > s.o.MaxBytes {
		return Prepared{}, fmt.Errorf("event: %d bytes once stamped is over the limit of %d%s", len(env), s.o.MaxBytes, s.by())
	}
	return Prepared{Env: env, Type: typ, SessionID: sid}, nil
}

func (s *Stamper) by() string {
	if s.o.LimitBy == "" {
		return ""
	}
	return " (" + s.o.LimitBy + ")"
}

// appendEnvelope writes the envelope in the field order of spec/envelope.md.
func (s *Stamper) appendEnvelope(b []byte, id uuid.UUID, typ string, data []byte) []byte {
	b = s.appendEnvelopeHead(b, id, typ)
	b = append(b, data...)
	return append(b, '}')
}

// appendEnvelopeHead appends the envelope up to its data: the caller
// appends data and the closing brace. typ is the event's family; the
// envelope's type is the mapping's for it.
func (s *Stamper) appendEnvelopeHead(b []byte, id uuid.UUID, typ string) []byte {
	b = append(b, `{"id":"`...)
	b = appendUUID(b, id)
	b = append(b, `","type":`...)
	b = appendJSONString(b, s.m.envType(typ))
	b = append(b, `,"timestamp":"`...)
	b = strconv.AppendInt(b, s.o.Now().UnixMilli(), 10)
	b = append(b, `","gateway":`...)
	b = appendJSONString(b, s.o.Gateway)
	return append(b, `,"data":`...)
}

// appendJSONString appends s as encoding/json writes a string (HTML-escaped).
func appendJSONString(b []byte, s string) []byte {
	if plain(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

func isEmptyIdentity(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return strings.TrimSpace(x) == ""
	case json.RawMessage:
		return isEmptyIdentityRaw(x)
	}
	return false
}

func isEmptyIdentityRaw(x []byte) bool {
	t := bytes.TrimSpace(x)
	return len(t) == 0 || string(t) == "null" || string(t) == `""`
}

// appendUUID appends the canonical text form of id (as id.String, without
// the allocation).
func appendUUID(b []byte, id uuid.UUID) []byte {
	const hex = "0123456789abcdef"
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hex[c>>4], hex[c&0xf])
	}
	return b
}
