package agent

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"

	"github.com/google/uuid"
)

// The ingest fast path. Items reaching prepare are valid JSON (splitItems
// checked them), so they can be walked without a decoder. The fast path
// handles the common {type, data} event whose keys need no escaping and
// gives up (ok=false) on anything else; the slow path then runs and builds
// the same bytes, or the error message.

// skipValue returns the index just past the JSON value starting at b[i]
// (after optional whitespace). b must be valid JSON.
func skipValue(b []byte, i int) int {
	i = skipSpace(b, i)
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	default: // number, true, false, null
		for i < len(b) && !isDelim(b[i]) {
			i++
		}
		return i
	}
}

func isDelim(c byte) bool {
	return c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// skipString returns the index just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// splitArray cuts a valid JSON array into its elements (aliasing b).
func splitArray(b []byte) []item {
	items := make([]item, 0, 64)
	i := skipSpace(b, 1)
	if b[i] == ']' {
		return nil
	}
	for {
		i = skipSpace(b, i)
		j := skipValue(b, i)
		items = append(items, item{raw: b[i:j:j]})
		i = skipSpace(b, j)
		if b[i] != ',' {
			return items
		}
		i++
	}
}

// member is one key and raw value of an object; the key is plain (no
// escapes, nothing encoding/json would escape).
type member struct {
	key string
	val []byte
}

// objectMembers appends the members of the valid JSON object b to dst. ok is
// false when b is not an object or a key is not plain.
func objectMembers(dst []member, b []byte) ([]member, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return dst, false
	}
	i = skipSpace(b, i+1)
	if b[i] == '}' {
		return dst, true
	}
	for {
		i = skipSpace(b, i)
		j := skipString(b, i)
		key := b[i+1 : j-1]
		if !plainKey(key) {
			return dst, false
		}
		i = skipSpace(b, j) + 1 // ':'
		i = skipSpace(b, i)
		j = skipValue(b, i)
		dst = append(dst, member{key: string(key), val: b[i:j]})
		i = skipSpace(b, j)
		if b[i] != ',' {
			return dst, true
		}
		i++
	}
}

// plainKey: printable ASCII that encoding/json writes unchanged.
func plainKey(k []byte) bool {
	for _, c := range k {
		if c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// plainString reports whether the raw JSON value v is a string with no
// escapes and nothing encoding/json would escape, and returns its contents.
func plainString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' || !plainKey(v[1:len(v)-1]) {
		return "", false
	}
	return string(v[1 : len(v)-1]), true
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

// prepareFast is prepareEventParts for a plain {type, data} event. ok is false
// when the item needs the slow path (an envelope, an error, unusual keys).
func (a *Agent) prepareFast(raw []byte) (env []byte, typ, sessionID string, ok bool) {
	var top [4]member
	ms, ok := objectMembers(top[:0], raw)
	if !ok || len(ms) != 2 {
		return nil, "", "", false
	}
	var typRaw, dataRaw []byte
	for _, m := range ms {
		switch m.key {
		case "type":
			typRaw = m.val
		case "data":
			dataRaw = m.val
		default:
			return nil, "", "", false
		}
	}
	if typRaw == nil || dataRaw == nil {
		return nil, "", "", false
	}
	typ, ok = plainString(typRaw)
	if !ok || len(bytes.TrimSpace([]byte(typ))) == 0 {
		return nil, "", "", false
	}
	var buf [32]member
	data, ok := objectMembers(buf[:0], dataRaw)
	if !ok {
		return nil, "", "", false
	}
	// Duplicate keys: the last wins, as in a map. Stable sort keeps the
	// order of equal keys; keep the last of each run.
	slices.SortStableFunc(data, func(x, y member) int { return cmpString(x.key, y.key) })
	data = dedupLast(data)

	get := func(k string) ([]byte, bool) {
		i, found := slices.BinarySearchFunc(data, k, func(m member, k string) int { return cmpString(m.key, k) })
		if !found {
			return nil, false
		}
		return data[i].val, true
	}
	var sess Identity
	if sid, found := get("session_id"); found && !isEmptyIdentity(json.RawMessage(sid)) {
		var s string
		if json.Unmarshal(sid, &s) == nil && s != "" {
			sessionID = s
			sess = a.sessions.identity(s)
		}
	}

	// Members to add: identity, type, client_source. They are strings; a key
	// of data present with an empty identity value is removed.
	type extra struct{ key, val string }
	var adds [16]extra
	add := adds[:0]
	var drop [16]string
	dropped := drop[:0]
	st := a.stamper
	for _, k := range identityKeys {
		if v, found := get(k); found {
			if isEmptyIdentity(json.RawMessage(v)) {
				dropped = append(dropped, k)
			} else {
				continue
			}
		}
		if v := sess[k]; v != "" {
			add = append(add, extra{k, v})
		} else if v := st.node[k]; v != "" {
			add = append(add, extra{k, v})
		}
	}
	if _, found := get("type"); !found {
		add = append(add, extra{"type", typ})
	}
	// client_source always set: drop data's own.
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
	writeKey := func(k string) {
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
		if j < len(add) && (i == len(data) || add[j].key < data[i].key) {
			writeKey(add[j].key)
			body = appendJSONStr(body, add[j].val)
			j++
			continue
		}
		m := data[i]
		i++
		if slices.Contains(dropped, m.key) {
			continue
		}
		writeKey(m.key)
		body = appendCompactHTML(body, m.val)
	}
	body = append(body, '}')

	id, err := uuid.NewV7()
	if err != nil {
		return nil, "", "", false
	}
	env = appendEnvelope(make([]byte, 0, len(body)+128), id.String(), typ, st.now(), st.gateway, body)
	if len(env) > a.cfg.MaxEventBytes {
		return nil, "", "", false // the slow path words the error
	}
	return env, typ, sessionID, true
}

func dedupLast(ms []member) []member {
	out := ms[:0]
	for i := range ms {
		if i+1 < len(ms) && ms[i+1].key == ms[i].key {
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

// appendJSONStr appends s as encoding/json writes a string (HTML-escaped).
func appendJSONStr(b []byte, s string) []byte {
	if plainKey([]byte(s)) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	q, _ := json.Marshal(s)
	return append(b, q...)
}

var _ = strconv.Itoa
