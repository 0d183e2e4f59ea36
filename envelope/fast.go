package envelope

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"

	"github.com/google/uuid"
)

// The stamping fast path. Items reaching Prepare are valid JSON, so the
// common {type, data} event whose keys need no escaping can be stamped by
// walking its bytes: data's members are kept as they were sent (compacted),
// identity members are merged in key order, exactly as json.Marshal of the
// decoded map would write them, and the Mapping is applied as they are
// written. Anything else declines (ok false) and the general path builds
// the same bytes, or the error message.

// prepareFast is Prepare for a plain {type, data} event; ms are raw's
// top-level members.
func (s *Stamper) prepareFast(raw []byte, ms []member) (Prepared, bool) {
	if len(ms) != 2 {
		return Prepared{}, false
	}
	var typRaw, dataRaw []byte
	for _, m := range ms {
		switch {
		case m.escaped || !plain(m.key):
			return Prepared{}, false
		case string(m.key) == "type":
			typRaw = raw[m.valStart:m.end]
		case string(m.key) == "data":
			dataRaw = raw[m.valStart:m.end]
		default:
			return Prepared{}, false
		}
	}
	if typRaw == nil || dataRaw == nil || len(typRaw) < 2 || typRaw[0] != '"' {
		return Prepared{}, false
	}
	typB := typRaw[1 : len(typRaw)-1]
	if !plain(typB) || len(bytes.TrimSpace(typB)) == 0 {
		return Prepared{}, false
	}
	var buf [32]member
	data, ok := members(dataRaw, buf[:0])
	if !ok {
		return Prepared{}, false
	}
	for _, m := range data {
		if m.escaped || !plain(m.key) {
			return Prepared{}, false
		}
	}
	// Duplicate keys: the last wins, as in a map. A stable sort keeps the
	// order of equal keys; keep the last of each run.
	sortMembers(data)
	data = dedupLast(data)
	// One pass over data's members finds the identity keys and "type"
	// (instead of a search per key), and marks the members that go: an
	// identity key with an empty value, and data's own client_source.
	var (
		idVal     [maxIdentityKeys][]byte
		idFound   [maxIdentityKeys]bool
		typeFound bool
		infoFound bool // data has its own orchestrator_info (the mapping adds none)
		addrAt    = -1 // data's orchestrator_address, by position in data
		skipBuf   [32]bool
	)
	skip := skipBuf[:0]
	for k, m := range data {
		drop := false
		if i, ok := identityIndex[string(m.key)]; ok {
			idFound[i], idVal[i] = true, dataRaw[m.valStart:m.end]
			drop = isEmptyIdentityRaw(idVal[i])
			if i == addressIndex {
				addrAt = k
			}
		} else if string(m.key) == "type" {
			typeFound = true
		} else if string(m.key) == "client_source" {
			drop = true // client_source is always ours
		} else if string(m.key) == keyOrchInfo {
			infoFound = true
		}
		skip = append(skip, drop)
	}
	typ := string(typB)
	var sess Identity
	var sid string
	if v := idVal[sessionIndex]; idFound[sessionIndex] && !isEmptyIdentityRaw(v) {
		if str, ok := jsonString(v); ok && str != "" {
			sid = str
			sess = s.o.Session(str)
		}
	}

	// Members to add, already in key order: identity (session first, then
	// node) for every key data lacks or has empty, type unless data names a
	// subtype, client_source, and the mapping's orchestrator_info unless
	// data has one. They are strings but orchestrator_info.
	// val is the value to write; member, when set, is the whole member
	// already written for the node's identity (`"host":"…"`); info marks
	// orchestrator_info, whose value is known once the address is written.
	type extra struct {
		key, val string
		member   []byte
		info     bool
	}
	var adds [maxIdentityKeys + 3]extra
	add := adds[:0]
	size := len(dataRaw) + 256
	for _, c := range extrasInOrder {
		e := extra{key: c.key}
		switch {
		case c.idx >= 0:
			if idFound[c.idx] && !isEmptyIdentityRaw(idVal[c.idx]) {
				continue
			}
			if e.val = sess[c.key]; e.val == "" {
				e.member = s.nodeMember[c.idx]
			}
		case c.idx == extraType:
			if typeFound {
				continue
			}
			e.val = typ
		case c.idx == extraInfo:
			if s.m == nil || infoFound {
				continue
			}
			e.info = true
			// {"address":A,"url":U}: A is at most the longest address the
			// event can have, HTML escapes aside.
			size += len(c.key) + len(s.m.url) + len(s.m.addr) + len(idVal[addressIndex]) + len(sess[keyOrchAddress]) + 32
		default:
			e.member = clientSourceMember
		}
		if e.val != "" || e.member != nil || e.info {
			add = append(add, e)
			size += len(c.key) + len(e.val) + len(e.member) + 6
		}
	}

	id, err := uuid.NewV7FromReader(&s.rand)
	if err != nil {
		return Prepared{}, false
	}
	// The envelope is written in one buffer: its head, data, its tail.
	env := s.appendEnvelopeHead(make([]byte, 0, size+128), id, typ)
	env = append(env, '{')
	first := true
	writeKey := func(k []byte) {
		if !first {
			env = append(env, ',')
		}
		first = false
		env = append(env, '"')
		env = append(env, k...)
		env = append(env, '"', ':')
	}
	// The event's orchestrator_address in env once written (the mapping
	// lower-cases it, unless it is the node's, written so already, and
	// copies it into orchestrator_info, which follows it in key order):
	// hasAddr, and addr when it is a string.
	var addr []byte
	hasAddr := false
	mapAddr := func(start int, lowered bool) {
		if s.m == nil {
			return
		}
		hasAddr = true
		if env[start] == '"' {
			if !lowered {
				lowerASCII(env[start:])
			}
			addr = env[start:]
		}
	}
	i, j := 0, 0
	for i < len(data) || j < len(add) {
		if j < len(add) && (i == len(data) || add[j].key < string(data[i].key)) {
			a := add[j]
			j++
			switch {
			case a.info:
				if s.m.hasInfo(addr, hasAddr) {
					writeKey([]byte(a.key))
					env = s.m.appendInfo(env, addr)
				}
				continue
			case a.member != nil:
				if !first {
					env = append(env, ',')
				}
				first = false
				env = append(env, a.member...)
				if a.key == keyOrchAddress {
					mapAddr(len(env)-len(a.member)+len(a.key)+3, true) // past `"key":`
				}
			default:
				writeKey([]byte(a.key))
				start := len(env)
				env = appendJSONString(env, a.val)
				if a.key == keyOrchAddress {
					mapAddr(start, false)
				}
			}
			continue
		}
		m := data[i]
		i++
		if skip[i-1] {
			continue
		}
		writeKey(m.key)
		start := len(env)
		env = appendCompactHTML(env, dataRaw[m.valStart:m.end])
		if i-1 == addrAt {
			mapAddr(start, false)
		}
	}
	env = append(env, '}', '}')
	if s.o.MaxBytes > 0 && len(env) > s.o.MaxBytes {
		return Prepared{}, false // the general path words the error
	}
	return Prepared{Env: env, Type: typ, SessionID: sid}, true
}

// sortMembers sorts ms by key, keeping the order of equal keys: an
// insertion sort, since an event has a handful of members.
func sortMembers(ms []member) {
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && string(ms[j].key) < string(ms[j-1].key); j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
}

// clientSourceMember is data.client_source as the fast path writes it.
var clientSourceMember = appendMember(nil, "client_source", ClientSource)

// appendMember appends `"key":value` with value written as encoding/json
// writes a string.
func appendMember(b []byte, key, val string) []byte {
	b = appendJSONString(b, key)
	b = append(b, ':')
	return appendJSONString(b, val)
}

// maxIdentityKeys bounds IdentityKeys for the fast path's arrays.
const maxIdentityKeys = 16

// extraType marks "type" in extrasInOrder, extraInfo orchestrator_info;
// client_source is -2.
const (
	extraType = -1
	extraInfo = -3
)

var (
	// identityIndex is the position of each identity key in IdentityKeys.
	identityIndex = func() map[string]int {
		if len(IdentityKeys) > maxIdentityKeys {
			panic("BUG: envelope: more identity keys than the fast path holds")
		}
		m := make(map[string]int, len(IdentityKeys))
		for i, k := range IdentityKeys {
			m[k] = i
		}
		return m
	}()
	sessionIndex = identityIndex["session_id"]
	addressIndex = identityIndex[keyOrchAddress]
	// extrasInOrder are the members the fast path may add, sorted by key.
	extrasInOrder = func() []struct {
		key string
		idx int
	} {
		out := []struct {
			key string
			idx int
		}{{"type", extraType}, {"client_source", -2}, {keyOrchInfo, extraInfo}}
		for i, k := range IdentityKeys {
			out = append(out, struct {
				key string
				idx int
			}{k, i})
		}
		slices.SortFunc(out, func(a, b struct {
			key string
			idx int
		}) int {
			return strings.Compare(a.key, b.key)
		})
		return out
	}()
)

func dedupLast(ms []member) []member {
	out := ms[:0]
	for i := range ms {
		if i+1 < len(ms) && bytes.Equal(ms[i+1].key, ms[i].key) {
			continue
		}
		out = append(out, ms[i])
	}
	return out
}

// plain reports whether s is printable ASCII that encoding/json writes
// unchanged inside a string.
func plain[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// appendCompactHTML appends v as json.Marshal writes a json.RawMessage:
// compacted, with <, >, & and U+2028/9 escaped. Most values need neither.
func appendCompactHTML(dst, v []byte) []byte {
	clean := true
	inStr := false
	for i := 0; i < len(v) && clean; i++ {
		c := v[i]
		switch {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case c == '<' || c == '>' || c == '&' || c == 0xE2:
			clean = false
		case !inStr && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			clean = false
		}
	}
	if clean {
		return append(dst, v...)
	}
	var c, h bytes.Buffer
	if err := json.Compact(&c, v); err != nil {
		return append(dst, v...) // unreachable: v is valid
	}
	json.HTMLEscape(&h, c.Bytes())
	return append(dst, h.Bytes()...)
}
