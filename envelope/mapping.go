package envelope

import (
	"encoding/json"
	"slices"
)

// Mapping is the shape of an analytics pipeline that ingests only some
// families (the Livepeer pipeline's NAAP mode, agent/naap). The stamper
// applies it as it writes each envelope, in both of its paths, so nothing
// reads an envelope again to map it. With a Mapping, every envelope the
// stamper builds has:
//
//   - type: the event's family when it is in Accepted; otherwise Family.
//     data.type keeps the event's own family (the stamper writes it when
//     data names no subtype), and Prepared.Type stays the native family.
//   - data.orchestrator_address, whether data, the session or the node gave
//     it: a string has its ASCII letters lower-cased. Only A-Z change, so
//     the length stays and an escape keeps its meaning (\u hex digits are
//     case-insensitive); a value that is not a string is kept.
//   - data.orchestrator_info, when data has none: {"address":A,"url":U}, A
//     the event's orchestrator_address as written above, U OrchestratorURL.
//     The URL is the node's, so it is written only when A is the node's
//     address (StamperOptions.Node) or the event names no address at all;
//     a member that is unknown is omitted, and there is no
//     orchestrator_info when neither is known or when the event's address
//     is not a string.
//
// The members land in data's key order, where json.Marshal puts them, like
// every member the stamper writes. The MaxBytes check sees the mapped
// envelope. Envelopes a producer built (Prepare of an item with an id) are
// never mapped.
type Mapping struct {
	// Accepted are the families kept as the envelope's type.
	Accepted []string
	// Family is the type of an envelope whose family is not accepted; when
	// empty, every family is kept.
	Family string
	// OrchestratorURL is the node's orchestrator service URI, "" when
	// unknown.
	OrchestratorURL string
}

// The data members a Mapping writes.
const (
	keyOrchAddress = "orchestrator_address"
	keyOrchInfo    = "orchestrator_info"
)

// mapping is a Mapping ready for the stamper: read-only once built.
type mapping struct {
	accepted []string
	family   string
	url      []byte // OrchestratorURL as a JSON string, nil when unknown
	addr     []byte // the node's orchestrator address as written, lower-cased; nil when unknown
}

func newMapping(m *Mapping, node Identity) *mapping {
	if m == nil {
		return nil
	}
	mp := &mapping{accepted: slices.Clone(m.Accepted), family: m.Family}
	if m.OrchestratorURL != "" {
		mp.url = appendJSONString(nil, m.OrchestratorURL)
	}
	if a := node[keyOrchAddress]; a != "" {
		mp.addr = appendJSONString(nil, a)
		lowerASCII(mp.addr)
	}
	return mp
}

// envType is the envelope's type for an event of family typ.
func (m *mapping) envType(typ string) string {
	if m == nil || m.family == "" || slices.Contains(m.accepted, typ) {
		return typ
	}
	return m.family
}

// hasInfo reports whether an event gets an orchestrator_info: has says
// whether data has an orchestrator_address, addr is its value as written
// when it is a string (nil otherwise).
func (m *mapping) hasInfo(addr []byte, has bool) bool {
	if !has {
		return m.url != nil
	}
	return addr != nil
}

// appendInfo appends the orchestrator_info of an event for which hasInfo
// is true. addr may alias b (it lies before len(b)).
func (m *mapping) appendInfo(b, addr []byte) []byte {
	b = append(b, '{')
	if addr != nil {
		b = append(b, `"address":`...)
		b = append(b, addr...)
	}
	if m.url != nil && (addr == nil || string(addr) == string(m.addr)) {
		if addr != nil {
			b = append(b, ',')
		}
		b = append(b, `"url":`...)
		b = append(b, m.url...)
	}
	return append(b, '}')
}

// mapData applies the mapping to the data of the general path (Stamp),
// before it is marshaled: the address is replaced by its lower-cased
// encoding, and orchestrator_info is added as raw JSON, so json.Marshal
// writes what the fast path writes.
func (m *mapping) mapData(data map[string]any) {
	v, has := data[keyOrchAddress]
	var addr []byte
	if has {
		// An unmarshalable value is left for json.Marshal of data to report.
		if b, err := json.Marshal(v); err == nil && len(b) > 0 && b[0] == '"' {
			lowerASCII(b)
			data[keyOrchAddress] = json.RawMessage(b)
			addr = b
		}
	}
	if _, ok := data[keyOrchInfo]; !ok && m.hasInfo(addr, has) {
		data[keyOrchInfo] = json.RawMessage(m.appendInfo(nil, addr))
	}
}

// lowerASCII lower-cases the ASCII letters of b in place.
func lowerASCII(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
}
