// Package naap carries the agent's events in a shape the Livepeer analytics
// pipeline (NAAP) ingests (spec/naap.md): its raw ingest keeps only seven
// event families and puts every other one in ignored_raw_events as
// unsupported_event_family, so in NAAP mode an envelope of ours whose family
// is not one of them travels as ai_stream_events, with its own family as
// data.type (the pipeline records it as the event's subtype), and with the
// dimensions the pipeline joins on.
//
// The agent hands a Mapper every envelope it stamps (its own sources, the
// {type, data} events and the allocator records of the local API, the
// stormlog tail), and the Mapper rewrites those whose data.client_source is
// "edgerelay":
//
//   - type: an accepted family is kept; any other becomes ai_stream_events.
//   - data.type: set to the envelope's own family when data has none; an
//     existing data.type (a subtype the producer chose) is kept.
//   - data.orchestrator_address: lower-cased (the pipeline joins on the
//     lower-case hex address); set from the node's when absent.
//   - data.orchestrator_info: {address, url} as the go-livepeer gateway
//     writes it (hexutil.Encode of the address: lower-case "0x…", and the
//     orchestrator's service URI), when absent.
//   - data.region: the node's, when absent.
//
// id, timestamp, gateway and every other member of data are kept byte for
// byte, in their order. An event whose data says it was relayed
// (data.relayed_via) gets no node-level value of this agent.
//
// Envelopes a producer built (a runner's prebuilt envelopes, those another
// agent relays) never reach the Mapper: the envelope contract forwards them
// verbatim, so they travel under the family their producer chose.
package naap

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/livepeer/edgerelay/envelope"
)

// Family is the family the agent's other events travel under: the pipeline
// keeps it whatever its data.type.
const Family = "ai_stream_events"

// Families are the event families the pipeline's raw ingest accepts
// (spec/naap.md, "Accepted families").
var Families = []string{
	"stream_trace", "ai_stream_status", "ai_stream_events", "stream_ingest_metrics",
	"network_capabilities", "discovery_results", "create_new_payment",
}

// Accepted reports whether the pipeline's raw ingest accepts family.
func Accepted(family string) bool {
	for _, f := range Families {
		if f == family {
			return true
		}
	}
	return false
}

// Options are the node's dimensions. Empty values are unknown and not
// written.
type Options struct {
	// OrchestratorAddress is the orchestrator's Ethereum address; it is
	// lower-cased.
	OrchestratorAddress string
	// OrchestratorURL is the orchestrator's service URI as gateways see it
	// (go-livepeer -serviceAddr: "https://host:port").
	OrchestratorURL string
	// Region is the node's region.
	Region string
}

// Mapper rewrites envelopes into the pipeline's shape. It is safe for
// concurrent use.
type Mapper struct {
	addr, url, region []byte // JSON-encoded values, nil when unknown; read-only
	info              []byte // the encoded orchestrator_info object, nil when unknown
}

// New returns a Mapper for the node's dimensions.
func New(o Options) *Mapper {
	m := &Mapper{}
	addr := strings.ToLower(strings.TrimSpace(o.OrchestratorAddress))
	url := strings.TrimSpace(o.OrchestratorURL)
	m.addr = encodeString(addr)
	m.url = encodeString(url)
	m.region = encodeString(strings.TrimSpace(o.Region))
	m.info = orchestratorInfo(m.addr, m.url)
	return m
}

// encodeString is s as a JSON string without HTML escaping, nil for "".
func encodeString(s string) []byte {
	if s == "" {
		return nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'})
}

// orchestratorInfo is {"address":…,"url":…} with the known members, nil
// when neither is known.
func orchestratorInfo(addr, url []byte) []byte {
	if addr == nil && url == nil {
		return nil
	}
	b := []byte{'{'}
	if addr != nil {
		b = append(append(b, `"address":`...), addr...)
	}
	if url != nil {
		if addr != nil {
			b = append(b, ',')
		}
		b = append(append(b, `"url":`...), url...)
	}
	return append(b, '}')
}

// Growth is the most bytes Map adds to an envelope. (The agent maps before
// its size checks, so a mapped envelope fits every sink.)
func (m *Mapper) Growth() int {
	// type: `"F"` becomes `"ai_stream_events"` and `,"type":"F"` joins
	// data, so the family's own length cancels out.
	n := len(`"`+Family+`"`) + len(`,"type":`)
	for _, d := range []struct {
		key string
		val []byte
	}{{"orchestrator_address", m.addr}, {"region", m.region}} {
		if d.val != nil {
			n += len(`,"":`) + len(d.key) + len(d.val)
		}
	}
	// orchestrator_info: the node's, or one holding the event's own address.
	info := max(len(m.info), len(`{"address":}`)+maxAddressBytes)
	return n + len(`,"orchestrator_info":`) + info
}

// member is one member of a JSON object: its raw key (quotes included) and
// raw value.
type member struct {
	key []byte // decoded
	raw []byte // `"key":value`, as it was
	val []byte // value, as it was
}

// Map returns env in the pipeline's shape (see the package doc), or env
// itself when it is not an envelope the agent stamped or is not a JSON
// object with an object data. env must be a checked envelope
// (envelope.Check); it is not modified.
func (m *Mapper) Map(env []byte) []byte {
	top, err := objectMembers(env)
	if err != nil {
		return env
	}
	ti, di := last(top, "type"), last(top, "data")
	if ti < 0 || di < 0 {
		return env
	}
	family, ok := decodeString(top[ti].val)
	if !ok {
		return env
	}
	data, err := objectMembers(top[di].val)
	if err != nil {
		return env
	}
	if !ours(data) {
		return env
	}
	_, relayed := find(data, "relayed_via")

	out := make([]byte, 0, len(env)+m.Growth())
	out = append(out, '{')
	for i, mb := range top {
		if i > 0 {
			out = append(out, ',')
		}
		switch i {
		case ti:
			if Accepted(family) {
				out = append(out, mb.raw...)
			} else {
				out = append(out, `"type":"`+Family+`"`...)
			}
		case di:
			out = append(out, `"data":`...)
			out = m.appendData(out, data, top[ti].val, relayed)
		default:
			out = append(out, mb.raw...)
		}
	}
	return append(out, '}')
}

// appendData writes data with the mapping's changes: a lower-cased
// orchestrator address in place, the missing members at the end.
func (m *Mapper) appendData(out []byte, data []member, familyRaw []byte, relayed bool) []byte {
	out = append(out, '{')
	n := 0
	put := func(key string, val []byte) {
		if n > 0 {
			out = append(out, ',')
		}
		n++
		out = append(out, '"')
		out = append(out, key...)
		out = append(out, `":`...)
		out = append(out, val...)
	}
	addrIdx := last(data, "orchestrator_address")
	var addr []byte // the lower-case address the event names, JSON-encoded
	for i, mb := range data {
		if n > 0 {
			out = append(out, ',')
		}
		n++
		start := len(out)
		out = append(out, mb.raw...)
		if i == addrIdx && isString(mb.val) {
			// ASCII letters only, in place: the length stays, and inside a
			// JSON string an upper-case ASCII letter is either itself or a
			// \uXXXX hex digit, which is case-insensitive.
			v := out[start+len(mb.raw)-len(mb.val):]
			lowerASCII(v)
			addr = v
		}
	}
	if last(data, "type") < 0 {
		put("type", familyRaw)
	}
	if addr == nil && !relayed && m.addr != nil {
		addr = m.addr
		put("orchestrator_address", addr)
	}
	if last(data, "orchestrator_info") < 0 {
		switch {
		case !relayed && m.info != nil && (addr == nil || bytes.Equal(addr, m.addr)):
			put("orchestrator_info", m.info)
		case addr != nil && len(bytes.TrimSpace(addr)) <= maxAddressBytes:
			put("orchestrator_info", orchestratorInfo(bytes.TrimSpace(addr), nil))
		}
	}
	if last(data, "region") < 0 && !relayed && m.region != nil {
		put("region", m.region)
	}
	return append(out, '}')
}

// maxAddressBytes is the encoded length of an Ethereum address, "0x" and 40
// hex digits in quotes: an event's own address of at most this length is
// copied into the orchestrator_info it lacks.
const maxAddressBytes = 44

func isString(v []byte) bool {
	v = bytes.TrimSpace(v)
	return len(v) >= 2 && v[0] == '"'
}

func lowerASCII(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
}

// ours reports whether data was stamped by an edgerelay agent.
func ours(data []member) bool {
	v, ok := find(data, "client_source")
	if !ok {
		return false
	}
	s, ok := decodeString(v)
	return ok && s == envelope.ClientSource
}

// last returns the index of the last member named key (JSON readers keep
// the last of repeated keys), -1 when none.
func last(ms []member, key string) int {
	for i := len(ms) - 1; i >= 0; i-- {
		if string(ms[i].key) == key {
			return i
		}
	}
	return -1
}

func find(ms []member, key string) ([]byte, bool) {
	if i := last(ms, key); i >= 0 {
		return ms[i].val, true
	}
	return nil, false
}

var errNotObject = errors.New("not a JSON object")

// objectMembers splits a JSON object into its members, keeping their bytes.
// obj is valid JSON (a checked envelope); anything else is an error, never a
// panic.
func objectMembers(obj []byte) ([]member, error) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return nil, errNotObject
	}
	ms := make([]member, 0, 16)
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		i++
	} else {
		for {
			if i >= len(obj) || obj[i] != '"' {
				return nil, errNotObject
			}
			keyStart := i
			j, ok := skipString(obj, i)
			if !ok {
				return nil, errNotObject
			}
			key, ok := decodeKey(obj[i:j])
			if !ok {
				return nil, errNotObject
			}
			i = skipSpace(obj, j)
			if i >= len(obj) || obj[i] != ':' {
				return nil, errNotObject
			}
			vs := skipSpace(obj, i+1)
			if i, ok = skipValue(obj, vs); !ok {
				return nil, errNotObject
			}
			ms = append(ms, member{key: key, raw: obj[keyStart:i], val: obj[vs:i]})
			i = skipSpace(obj, i)
			if i < len(obj) && obj[i] == ',' {
				i = skipSpace(obj, i+1)
				continue
			}
			if i < len(obj) && obj[i] == '}' {
				i++
				break
			}
			return nil, errNotObject
		}
	}
	if skipSpace(obj, i) != len(obj) {
		return nil, errNotObject
	}
	return ms, nil
}

// skipString returns the index just past the string starting at b[i].
func skipString(b []byte, i int) (int, bool) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, true
		}
	}
	return 0, false
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				j, ok := skipString(b, i)
				if !ok {
					return 0, false
				}
				i = j - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
		}
		return 0, false
	}
	start := i
	for i < len(b) && !endsScalar(b[i]) {
		i++
	}
	return i, i > start
}

func endsScalar(c byte) bool {
	return c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\r' || c == '\n'
}

// decodeKey is decodeString without a copy for a key without escapes.
func decodeKey(raw []byte) ([]byte, bool) {
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 {
		return inner, true
	}
	s, ok := decodeString(raw)
	return []byte(s), ok
}

// decodeString decodes a JSON string (quotes included).
func decodeString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), true
	}
	var s string
	return s, json.Unmarshal(raw, &s) == nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
