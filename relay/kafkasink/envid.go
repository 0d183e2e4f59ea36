package kafkasink

import "encoding/json"

// envelopeID returns the value of the first top-level "id" member of the
// JSON object in b, for use as the record key. It scans instead of decoding:
// the sink never needs the rest of the envelope, and the id may come after
// "data" (key order is not fixed). Without escapes the result aliases b.
//
// ok is false when b is not an object, has no top-level "id", or its first
// "id" is not a string. The scan assumes valid JSON (the agent validated
// every envelope on the way in); on invalid input it returns some answer or
// none, never panics.
func envelopeID(b []byte) (id []byte, ok bool) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i++
	for {
		i = skipWS(b, i)
		if i >= len(b) || b[i] != '"' {
			return nil, false // '}' (no id) or malformed
		}
		ks, ke, esc, next := scanString(b, i)
		if next < 0 {
			return nil, false
		}
		i = skipWS(b, next)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipWS(b, i+1)
		if isID(b[ks:ke], esc) {
			if i >= len(b) || b[i] != '"' {
				return nil, false
			}
			vs, ve, vesc, next := scanString(b, i)
			if next < 0 {
				return nil, false
			}
			if !vesc {
				return b[vs:ve], true
			}
			var s string
			if json.Unmarshal(b[vs-1:ve+1], &s) != nil {
				return nil, false
			}
			return []byte(s), true
		}
		if i = skipValue(b, i); i < 0 {
			return nil, false
		}
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ',' {
			return nil, false
		}
		i++
	}
}

// isID reports whether the key bytes (between the quotes) spell "id".
func isID(k []byte, esc bool) bool {
	if !esc {
		return string(k) == "id"
	}
	// "\u0069d" is the same key to a JSON decoder; rare enough to decode.
	var s string
	q := make([]byte, 0, len(k)+2)
	q = append(append(append(q, '"'), k...), '"')
	return json.Unmarshal(q, &s) == nil && s == "id"
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString scans the string whose opening quote is at b[i]. It returns the
// content bounds, whether it holds escapes, and the index after the closing
// quote (-1 when unterminated).
func scanString(b []byte, i int) (start, end int, esc bool, next int) {
	start = i + 1
	for j := start; j < len(b); j++ {
		switch b[j] {
		case '\\':
			esc = true
			j++
		case '"':
			return start, j, esc, j + 1
		}
	}
	return 0, 0, false, -1
}

// skipValue returns the index after the JSON value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		_, _, _, next := scanString(b, i)
		return next
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				_, _, _, next := scanString(b, i)
				if next < 0 {
					return -1
				}
				i = next
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}
