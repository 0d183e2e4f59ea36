package envelope

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// The one JSON byte scanner of the project. Envelopes are read far more often
// than they are changed: the agent needs a few top-level members (id, type,
// timestamp, data.session_id) and must keep every other byte as it was. A
// scan finds members by offset without decoding values, so nothing is
// allocated and nothing is re-encoded.
//
// The scanner is defensive: on malformed input it reports failure (ok false,
// or -1), never panics and never reads out of bounds. Callers that need
// validity check it once with json.Valid; the scanner does not re-validate.

// member is one key/value pair of a JSON object, as offsets into the
// object's bytes.
type member struct {
	key      []byte // the key's bytes between its quotes, still escaped
	escaped  bool   // key holds a backslash escape
	start    int    // the key's opening quote
	valStart int    // first byte of the value
	end      int    // one past the value's last byte
}

// is reports whether the member's decoded key equals name.
func (m member) is(name string) bool {
	if !m.escaped {
		return string(m.key) == name
	}
	return m.name() == name
}

// name returns the decoded key.
func (m member) name() string {
	if !m.escaped {
		return string(m.key)
	}
	s, _ := decodeKey(m.key)
	return s
}

// decodeKey decodes a key's bytes between its quotes, escapes and all.
func decodeKey(raw []byte) (string, bool) {
	return jsonString(append(append([]byte{'"'}, raw...), '"'))
}

// members appends the members of the JSON object obj (optionally surrounded
// by whitespace) to dst. ok is false when obj is not an object or is
// malformed where the scan looked.
func members(obj []byte, dst []member) ([]member, bool) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return dst, false
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return dst, true
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return dst, false
		}
		keyEnd := stringEnd(obj, i)
		if keyEnd < 0 {
			return dst, false
		}
		m := member{key: obj[i+1 : keyEnd-1], start: i}
		m.escaped = bytes.IndexByte(m.key, '\\') >= 0
		i = skipSpace(obj, keyEnd)
		if i >= len(obj) || obj[i] != ':' {
			return dst, false
		}
		i = skipSpace(obj, i+1)
		m.valStart = i
		if i = valueEnd(obj, i); i < 0 {
			return dst, false
		}
		m.end = i
		dst = append(dst, m)
		var done bool
		if i, done = nextItem(obj, i, '}'); i < 0 || done {
			return dst, i >= 0
		}
	}
}

// elements appends the byte ranges of the elements of the JSON array arr to
// dst, aliasing arr. ok is false when arr is not an array or is malformed
// where the scan looked.
func elements(arr []byte, dst [][]byte) ([][]byte, bool) {
	i := skipSpace(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return dst, false
	}
	i = skipSpace(arr, i+1)
	if i < len(arr) && arr[i] == ']' {
		return dst, true
	}
	for {
		j := valueEnd(arr, i)
		if j < 0 {
			return dst, false
		}
		dst = append(dst, arr[i:j:j])
		var done bool
		if i, done = nextItem(arr, j, ']'); i < 0 || done {
			return dst, i >= 0
		}
	}
}

// nextItem steps over what follows a member or an element ending at b[i]:
// the closing byte close (done), or a comma and the space after it (i is
// then the next item's first byte). i is -1 when neither follows.
func nextItem(b []byte, i int, close byte) (next int, done bool) {
	i = skipSpace(b, i)
	switch {
	case i >= len(b):
		return -1, false
	case b[i] == close:
		return i + 1, true
	case b[i] == ',':
		return skipSpace(b, i+1), false
	}
	return -1, false
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
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

// stringEnd returns one past the closing quote of the string whose opening
// quote is at b[i], or -1 when it is not terminated.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// valueEnd returns one past the end of the value starting at b[i], or -1
// when there is none.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); {
			switch b[j] {
			case '"':
				if j = stringEnd(b, j); j < 0 {
					return -1
				}
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
		return -1
	case ',', '}', ']', ':', ' ', '\t', '\n', '\r':
		return -1
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

// jsonString decodes raw, one JSON value, if it is a string.
func jsonString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && bytes.IndexByte(inner, '"') < 0 && utf8.Valid(inner) && !hasControl(inner) {
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

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

// firstByte returns the first byte of b that is not JSON whitespace, or 0.
func firstByte(b []byte) byte {
	if i := skipSpace(b, 0); i < len(b) {
		return b[i]
	}
	return 0
}

// Elements cuts the JSON array arr into its elements, aliasing arr. It does
// not validate: arr must be valid JSON (json.Valid). ok is false when arr is
// not an array.
func Elements(arr []byte) ([][]byte, bool) {
	return elements(arr, make([][]byte, 0, 64))
}
