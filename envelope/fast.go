package envelope

import (
	"bytes"
	"encoding/json"
	"slices"

	"github.com/google/uuid"
)

// The stamping fast path. Items reaching Prepare are valid JSON, so the
// common {type, data} event whose keys need no escaping can be stamped by
// walking its bytes: data's members are kept as they were sent (compacted),
// identity members are merged in key order, exactly as json.Marshal of the
// decoded map would write them. Anything else declines (ok false) and the
// general path builds the same bytes, or the error message.

// prepareFast is Prepare for a plain {type, data} event; ms are raw's
// top-level members.
func (s *Stamper) prepareFast(raw []byte, ms []member) (Prepared, bool) {
	if len(ms) != 2 {
		return Prepared{}, false
	}
	var typRaw, dataRaw []byte
	for _, m := range ms {
		switch {
		case m.escaped || !plainBytes(m.key):
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
	if !plainBytes(typB) || len(bytes.TrimSpace(typB)) == 0 {
		return Prepared{}, false
	}
	var buf [32]member
	data, ok := members(dataRaw, buf[:0])
	if !ok {
		return Prepared{}, false
	}
	for _, m := range data {
		if m.escaped || !plainBytes(m.key) {
			return Prepared{}, false
		}
	}
	// Duplicate keys: the last wins, as in a map. A stable sort keeps the
	// order of equal keys; keep the last of each run.
	slices.SortStableFunc(data, func(x, y member) int { return bytes.Compare(x.key, y.key) })
	data = dedupLast(data)
	get := func(k string) ([]byte, bool) {
		i, found := slices.BinarySearchFunc(data, k, func(m member, k string) int { return bytes.Compare(m.key, []byte(k)) })
		if !found {
			return nil, false
		}
		return dataRaw[data[i].valStart:data[i].end], true
	}
	typ := string(typB)
	var sess Identity
	var sid string
	if v, found := get("session_id"); found && !isEmptyIdentityRaw(v) {
		if str, ok := jsonString(v); ok && str != "" {
			sid = str
			sess = s.o.Session(str)
		}
	}

	// Members to add: identity, type, client_source. They are strings; a key
	// of data present with an empty identity value is removed.
	type extra struct{ key, val string }
	var adds [16]extra
	add := adds[:0]
	var drop [16]string
	dropped := drop[:0]
	for _, k := range IdentityKeys {
		if v, found := get(k); found {
			if !isEmptyIdentityRaw(v) {
				continue
			}
			dropped = append(dropped, k)
		}
		if v := sess[k]; v != "" {
			add = append(add, extra{k, v})
		} else if v := s.o.Node[k]; v != "" {
			add = append(add, extra{k, v})
		}
	}
	if _, found := get("type"); !found {
		add = append(add, extra{"type", typ})
	}
	// client_source is always ours: data's own goes.
	dropped = append(dropped, "client_source")
	add = append(add, extra{"client_source", ClientSource})
	slices.SortFunc(add, func(x, y extra) int { return cmpString(x.key, y.key) })

	size := len(dataRaw) + 256
	for _, e := range add {
		size += len(e.key) + len(e.val) + 6
	}
	body := make([]byte, 0, size)
	body = append(body, '{')
	first := true
	writeKey := func(k []byte) {
		if !first {
			body = append(body, ',')
		}
		first = false
		body = append(body, '"')
		body = append(body, k...)
		body = append(body, '"', ':')
	}
	i, j := 0, 0
	for i < len(data) || j < len(add) {
		if j < len(add) && (i == len(data) || add[j].key < string(data[i].key)) {
			writeKey([]byte(add[j].key))
			body = appendJSONString(body, add[j].val)
			j++
			continue
		}
		m := data[i]
		i++
		if slices.Contains(dropped, string(m.key)) {
			continue
		}
		writeKey(m.key)
		body = appendCompactHTML(body, dataRaw[m.valStart:m.end])
	}
	body = append(body, '}')

	id, err := uuid.NewV7()
	if err != nil {
		return Prepared{}, false
	}
	env := s.appendEnvelope(make([]byte, 0, len(body)+128), id, typ, body)
	if s.o.MaxBytes > 0 && len(env) > s.o.MaxBytes {
		return Prepared{}, false // the general path words the error
	}
	return Prepared{Env: env, Type: typ, SessionID: sid}, true
}

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

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// plainBytes: printable ASCII that encoding/json writes unchanged.
func plainBytes(k []byte) bool {
	for _, c := range k {
		if c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

func plain(s string) bool {
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
