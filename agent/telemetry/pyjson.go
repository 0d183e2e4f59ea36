package telemetry

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Stormlog reads and writes records with Python's json module, which is not
// quite JSON (spec/stormlog.md: the reference module wins). This file reads
// JSON the way that module does, so a record stormlog accepts is accepted
// here:
//
//   - NaN, Infinity and -Infinity are numbers (stormlog's own sink writes
//     them); they decode to NonFinite.
//   - Integers have any length, up to Python's limit of 4300 digits (a longer
//     one makes Python's reader fail). They decode to json.Number with their
//     exact digits.
//   - A \u escape of an unpaired UTF-16 surrogate is kept (Python keeps it in
//     the str); it decodes to the surrogate's 3-byte WTF-8 form, which no
//     valid UTF-8 text contains, so it survives to where stormlog would
//     fail on it (encoding it as UTF-8 for a session id).
//   - The input must be valid UTF-8, as stormlog reads files as UTF-8 text.
//
// Whitespace is JSON's (space, tab, CR, LF), duplicate keys keep the last
// value, and everything else is as in RFC 8259.

// NonFinite is a NaN, Infinity or -Infinity read from a record. Python's json
// module reads and writes them as bare words; strict JSON has no such
// numbers, so MarshalJSON writes them as the strings "NaN", "Infinity" and
// "-Infinity" (the envelopes the agent sends are strict JSON).
type NonFinite float64

// String is the word Python's json module writes.
func (f NonFinite) String() string {
	switch {
	case math.IsNaN(float64(f)):
		return "NaN"
	case f > 0:
		return "Infinity"
	default:
		return "-Infinity"
	}
}

// MarshalJSON writes the word as a JSON string.
func (f NonFinite) MarshalJSON() ([]byte, error) { return []byte(`"` + f.String() + `"`), nil }

// pyMaxIntDigits is Python's default limit on the digits of an integer read
// from text (sys.get_int_max_str_digits()).
const pyMaxIntDigits = 4300

// pyMaxDepth bounds nesting, as encoding/json does, so a hostile body cannot
// exhaust the stack.
const pyMaxDepth = 10000

// pyJSONError says why a text is not JSON Python reads. limit marks the
// errors Python raises as ValueError rather than JSONDecodeError (too many
// digits, too deep): stormlog's loader forgives the latter on a truncated
// final line, never the former.
type pyJSONError struct {
	off   int
	msg   string
	limit bool
}

func (e *pyJSONError) Error() string { return fmt.Sprintf("%s at byte %d", e.msg, e.off) }

// decodePy decodes one JSON value, with only whitespace around it.
func decodePy(b []byte) (any, error) {
	p := pyParser{b: b}
	p.ws()
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.i < len(p.b) {
		return nil, p.errf("invalid character %s after the value", p.show())
	}
	return v, nil
}

// validPy reports whether b is one JSON value as decodePy reads it.
func validPy(b []byte) bool {
	_, err := decodePy(b)
	return err == nil
}

type pyParser struct {
	b     []byte
	i     int
	depth int
}

func (p *pyParser) errf(format string, args ...any) *pyJSONError {
	return &pyJSONError{off: p.i, msg: fmt.Sprintf(format, args...)}
}

// unexpected is the error for what stands at the cursor when expecting
// something else.
func (p *pyParser) unexpected(expecting string) *pyJSONError {
	if p.i >= len(p.b) {
		return p.errf("unexpected end of input, expecting %s", expecting)
	}
	return p.errf("invalid character %s, expecting %s", p.show(), expecting)
}

// show names the byte at the cursor for a message.
func (p *pyParser) show() string {
	if p.i >= len(p.b) {
		return "end of input"
	}
	r, _ := utf8.DecodeRune(p.b[p.i:])
	if r == utf8.RuneError {
		return fmt.Sprintf("byte 0x%02x", p.b[p.i])
	}
	return strconv.QuoteRune(r)
}

func (p *pyParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *pyParser) lit(word string) bool {
	if len(p.b)-p.i < len(word) {
		return false
	}
	for j := 0; j < len(word); j++ {
		if p.b[p.i+j] != word[j] {
			return false
		}
	}
	p.i += len(word)
	return true
}

func (p *pyParser) value() (any, error) {
	if p.i >= len(p.b) {
		return nil, p.unexpected("a value")
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		return p.str()
	case c == '-' || (c >= '0' && c <= '9'):
		if c == '-' && p.i+1 < len(p.b) && p.b[p.i+1] == 'I' {
			p.i++
			if p.lit("Infinity") {
				return NonFinite(math.Inf(-1)), nil
			}
			p.i--
		}
		return p.number()
	case p.lit("null"):
		return nil, nil
	case p.lit("true"):
		return true, nil
	case p.lit("false"):
		return false, nil
	case p.lit("NaN"):
		return NonFinite(math.NaN()), nil
	case p.lit("Infinity"):
		return NonFinite(math.Inf(1)), nil
	}
	return nil, p.unexpected("a value")
}

func (p *pyParser) enter() error {
	p.depth++
	if p.depth > pyMaxDepth {
		e := p.errf("nested deeper than %d levels", pyMaxDepth)
		e.limit = true
		return e
	}
	return nil
}

func (p *pyParser) object() (any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	p.i++ // '{'
	m := map[string]any{}
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return m, nil
	}
	for {
		p.ws()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, p.unexpected("a property name in double quotes")
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		p.ws()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, p.unexpected("':'")
		}
		p.i++
		p.ws()
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		m[k.(string)] = v
		p.ws()
		if p.i < len(p.b) && p.b[p.i] == ',' {
			p.i++
			continue
		}
		if p.i < len(p.b) && p.b[p.i] == '}' {
			p.i++
			return m, nil
		}
		return nil, p.unexpected("',' or '}'")
	}
}

func (p *pyParser) array() (any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	p.i++ // '['
	a := []any{}
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return a, nil
	}
	for {
		p.ws()
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		p.ws()
		if p.i < len(p.b) && p.b[p.i] == ',' {
			p.i++
			continue
		}
		if p.i < len(p.b) && p.b[p.i] == ']' {
			p.i++
			return a, nil
		}
		return nil, p.unexpected("',' or ']'")
	}
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? as a
// json.Number. An integer "-0" is written "0", as Python's int reads it.
func (p *pyParser) number() (any, error) {
	start := p.i
	if p.b[p.i] == '-' {
		p.i++
	}
	digits := p.i
	switch {
	case p.i < len(p.b) && p.b[p.i] == '0':
		p.i++
	case p.i < len(p.b) && p.b[p.i] >= '1' && p.b[p.i] <= '9':
		p.skipDigits()
	default:
		return nil, p.unexpected("a digit")
	}
	nDigits := p.i - digits
	isFloat := false
	if p.i+1 < len(p.b) && p.b[p.i] == '.' && isASCIIDigit(p.b[p.i+1]) {
		p.i++
		p.skipDigits()
		isFloat = true
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		j := p.i + 1
		if j < len(p.b) && (p.b[j] == '+' || p.b[j] == '-') {
			j++
		}
		if j < len(p.b) && isASCIIDigit(p.b[j]) {
			p.i = j
			p.skipDigits()
			isFloat = true
		}
	}
	lit := string(p.b[start:p.i])
	if !isFloat {
		if nDigits > pyMaxIntDigits {
			e := &pyJSONError{off: start, msg: fmt.Sprintf("an integer of %d digits, over Python's limit of %d", nDigits, pyMaxIntDigits), limit: true}
			return nil, e
		}
		if lit == "-0" {
			lit = "0"
		}
	}
	return json.Number(lit), nil
}

func (p *pyParser) skipDigits() {
	for p.i < len(p.b) && isASCIIDigit(p.b[p.i]) {
		p.i++
	}
}

func isASCIIDigit(c byte) bool { return c >= '0' && c <= '9' }

// str reads a string. Control characters must be escaped; the text must be
// UTF-8; \u escapes of surrogate pairs combine, unpaired ones are kept as
// WTF-8.
func (p *pyParser) str() (any, error) {
	p.i++ // '"'
	start := p.i
	// Fast path: no escapes, ASCII.
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '"' {
			s := string(p.b[start:p.i])
			p.i++
			return s, nil
		}
		if c == '\\' || c < 0x20 || c >= 0x80 {
			break
		}
		p.i++
	}
	buf := append([]byte(nil), p.b[start:p.i]...)
	for {
		if p.i >= len(p.b) {
			return nil, p.errf("unterminated string")
		}
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return string(buf), nil
		case c < 0x20:
			return nil, p.errf("invalid control character %q in a string", rune(c))
		case c == '\\':
			if p.i+1 >= len(p.b) {
				p.i++
				return nil, p.errf("unterminated string")
			}
			e := p.b[p.i+1]
			p.i += 2
			switch e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, ok := p.hex4()
				if !ok {
					return nil, p.errf("invalid \\u escape")
				}
				if r >= 0xD800 && r <= 0xDBFF && p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					save := p.i
					p.i += 2
					lo, ok := p.hex4()
					if ok && lo >= 0xDC00 && lo <= 0xDFFF {
						r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
					} else {
						p.i = save // the next escape stands alone
					}
				}
				buf = appendWTF8(buf, r)
			default:
				p.i--
				return nil, p.errf("invalid escape '\\%c' in a string", e)
			}
		case c < 0x80:
			buf = append(buf, c)
			p.i++
		default:
			r, size := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && size == 1 {
				return nil, p.errf("invalid UTF-8 in a string")
			}
			buf = append(buf, p.b[p.i:p.i+size]...)
			p.i += size
		}
	}
}

func (p *pyParser) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}

// appendWTF8 appends r as UTF-8, or a surrogate as the 3 bytes UTF-8 would
// give it if it were allowed.
func appendWTF8(b []byte, r rune) []byte {
	if r >= 0xD800 && r <= 0xDFFF {
		return append(b, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
	}
	return utf8.AppendRune(b, r)
}

// hasSurrogate reports whether s holds an unpaired surrogate from a \u
// escape (Python cannot encode such a str as UTF-8).
func hasSurrogate(s string) bool { return !utf8.ValidString(s) }

// pyIsSpace is Python's str.isspace for one character: Unicode's White_Space
// plus U+001C–U+001F, which Python counts as separators.
func pyIsSpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1C && r <= 0x1F) }

// pyBlank reports whether Python's s.strip() leaves s empty.
func pyBlank(s string) bool { return strings.TrimFunc(s, pyIsSpace) == "" }

// pyStrip is Python's s.strip().
func pyStrip(s string) string { return strings.TrimFunc(s, pyIsSpace) }
