package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Input hygiene. Envelopes are forwarded byte for byte to readers written in
// other languages (the go-livepeer gateway, Python readers, the analytics
// pipeline), so the agent takes only JSON that every one of them reads, and
// reads the same way. Validate is the strict check; the scanner in scan.go
// relies on what it guarantees.

// MaxDepth is the deepest nesting of objects and arrays an envelope or an
// event may have, the envelope itself being level 1. Readers give up far
// deeper (Python's json at about 1,000 levels, serde_json at 128); a frame
// may wrap an envelope three levels down (the gateway's document), which
// stays under all of them.
const MaxDepth = 64

// MaxFrameDepth is the depth a trickle frame may have: a gateway document
// carries its envelopes at level 4, so an envelope of MaxDepth levels fits
// in any frame.
const MaxFrameDepth = MaxDepth + 3

// Validate reports whether b is one JSON value (RFC 8259) that every reader
// downstream reads, and reads alike:
//
//   - strings are valid UTF-8 and hold no lone UTF-16 surrogate escape
//     ("\ud800" alone), which readers either refuse or turn into different
//     characters;
//   - no object repeats a key (compared after unescaping): a reader that
//     keeps the first would disagree with one that keeps the last;
//   - numbers are finite in float64 (not 1e999999999, nor an integer of 400
//     digits): readers that decode numbers as float64 fail on them, and
//     CPython refuses integers of over 4,300 digits;
//   - nesting is at most MaxDepth levels.
//
// Whitespace around the value is allowed. A problem is a *FieldError whose
// Field is the top-level member where it lies (Path says exactly where); a
// value that is not JSON at all is a *FieldError on "json". Validate does not
// allocate on valid input with objects of up to 16 keys.
func Validate(b []byte) error {
	return validate(b, MaxDepth, "json", false)
}

// ValidateElements is Validate that also cuts a JSON array into its
// elements on the same pass, so a body need not be walked again to split
// it: when b is a valid array, its elements (aliasing b) are appended to
// dst. On any other value, or an error, dst comes back as it was given.
func ValidateElements(b []byte, dst [][]byte) ([][]byte, error) {
	return validateInto(b, MaxDepth, "json", false, true, dst)
}

// ValidateFrame is Validate for a trickle frame, which may nest
// MaxFrameDepth levels (ParseFrame's rule), and ValidateFrames is
// ValidateElements for a body of frames.
func ValidateFrame(b []byte) error {
	return validate(b, MaxFrameDepth, "json", false)
}

// ValidateFrames: see ValidateFrame.
func ValidateFrames(b []byte, dst [][]byte) ([][]byte, error) {
	return validateInto(b, MaxFrameDepth, "json", false, true, dst)
}

// ValidateRecord is Validate for a record that Python's json.dumps wrote (a
// stormlog record, an allocator snapshot): it also takes the literals NaN,
// Infinity and -Infinity, which the telemetry decoder reads. Such records
// are decoded and stamped anew, never forwarded as they are; the rules
// keep what the runner sent from being read differently than it meant.
func ValidateRecord(b []byte) error {
	return validate(b, MaxDepth, "record", true)
}

// validate is Validate with a depth limit; root names the whole value in
// errors about it; python takes NaN, Infinity and -Infinity as numbers.
func validate(b []byte, maxDepth int, root string, python bool) error {
	_, err := validateInto(b, maxDepth, root, python, false, nil)
	return err
}

// validateInto is validate that, when collect is set, also appends the
// elements of a top-level array to dst.
func validateInto(b []byte, maxDepth int, root string, python, collect bool, dst [][]byte) ([][]byte, error) {
	v := validators.Get().(*validator)
	defer v.release()
	v.b, v.maxDepth = b, maxDepth
	v.python = python
	v.elems, v.collect = dst, collect
	i := skipSpace(b, 0)
	end := v.value(i, 1)
	if end >= 0 {
		if j := skipSpace(b, end); j < len(b) {
			v.syntax(j, "after the JSON value")
			end = -1
		}
	}
	if end >= 0 {
		return v.elems, nil
	}
	return dst, v.err(root)
}

// validators keeps the scratch space of a validation run, so that a valid
// value costs no allocation.
var validators = sync.Pool{New: func() any {
	return &validator{path: make([]pathElem, 0, 16), keys: make([][]byte, 0, 32)}
}}

// release forgets the document (a pooled validator must not keep a body
// alive) and returns v to the pool.
func (v *validator) release() {
	clear(v.path[:cap(v.path)])
	clear(v.keys[:cap(v.keys)])
	*v = validator{path: v.path[:0], keys: v.keys[:0]}
	validators.Put(v)
}

// isSyntax reports whether err, from validate, says the bytes are not JSON
// at all (rather than JSON that breaks a hygiene rule).
func isSyntax(err error) bool {
	var se *syntaxError
	return errors.As(err, &se)
}

// syntaxError is the cause of a FieldError for bytes that are not JSON.
type syntaxError struct{ msg string }

func (e *syntaxError) Error() string { return e.msg }

// IsSyntax reports whether err (from Validate) means that the bytes are not
// JSON at all, rather than JSON that breaks one of the rules.
func IsSyntax(err error) bool { return isSyntax(err) }

// validator is one run of Validate. It stops at the first problem.
type validator struct {
	b        []byte
	maxDepth int
	python   bool       // NaN, Infinity, -Infinity are numbers
	path     []pathElem // where the scan is: keys and indexes
	keys     [][]byte   // the keys of the open objects, unescaped, innermost last
	collect  bool       // append the elements of a top-level array to elems
	elems    [][]byte

	problem string // the first problem, "" while none
	isSyn   bool   // the problem is a syntax error
	at      int    // its byte offset
	where   []pathElem
}

// pathElem is one step of a path: a key (raw, as in the document) or an
// array index.
type pathElem struct {
	key   []byte
	index int
	isKey bool
}

func (v *validator) fail(i int, problem string) int {
	if v.problem == "" {
		v.problem, v.at = problem, i
		v.where = append([]pathElem(nil), v.path...)
	}
	return -1
}

func (v *validator) syntax(i int, what string) int {
	if v.problem == "" {
		v.isSyn = true
		if i >= len(v.b) {
			v.fail(i, "unexpected end of JSON input")
		} else {
			v.fail(i, fmt.Sprintf("invalid character %s %s (offset %d)", quoteByte(v.b[i]), what, i))
		}
	}
	return -1
}

func quoteByte(c byte) string {
	if c < utf8.RuneSelf {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// value checks the value at b[i] (no leading space) at nesting depth and
// returns one past its end, or -1.
func (v *validator) value(i, depth int) int {
	b := v.b
	if i >= len(b) {
		return v.syntax(i, "")
	}
	switch c := b[i]; {
	case c == '{':
		return v.object(i, depth)
	case c == '[':
		return v.array(i, depth)
	case c == '"':
		return v.str(i)
	case v.python && c == 'N':
		return v.literal(i, "NaN")
	case v.python && c == 'I':
		return v.literal(i, "Infinity")
	case v.python && c == '-' && i+1 < len(b) && b[i+1] == 'I':
		return v.literal(i, "-Infinity")
	case c == '-' || (c >= '0' && c <= '9'):
		return v.number(i)
	case c == 't':
		return v.literal(i, "true")
	case c == 'f':
		return v.literal(i, "false")
	case c == 'n':
		return v.literal(i, "null")
	default:
		return v.syntax(i, "looking for beginning of value")
	}
}

func (v *validator) literal(i int, lit string) int {
	if !bytes.HasPrefix(v.b[i:], []byte(lit)) {
		j := i
		for j < len(v.b) && j-i < len(lit) && v.b[j] == lit[j-i] {
			j++
		}
		return v.syntax(j, "in literal "+lit)
	}
	return i + len(lit)
}

func (v *validator) deeper(i, depth int) bool {
	if depth > v.maxDepth {
		v.fail(i, fmt.Sprintf("nested deeper than %d levels", v.maxDepth))
		return false
	}
	return true
}

func (v *validator) object(i, depth int) int {
	if !v.deeper(i, depth) {
		return -1
	}
	b := v.b
	first := len(v.keys)         // this object's keys are v.keys[first:]
	var seen map[string]struct{} // for objects with many keys
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return v.syntax(i, "looking for beginning of object key string")
		}
		kStart := i
		end := v.str(i)
		if end < 0 {
			return -1
		}
		raw := b[kStart+1 : end-1]
		key := raw
		if bytes.IndexByte(raw, '\\') >= 0 {
			s, _ := jsonString(b[kStart:end]) // valid: str checked it
			key = []byte(s)
		}
		v.path = append(v.path, pathElem{key: raw, isKey: true})
		// Duplicate keys: a linear look for small objects, a set beyond.
		n := len(v.keys) - first
		switch {
		case n < 16:
			for _, k := range v.keys[first:] {
				if bytes.Equal(k, key) {
					return v.fail(kStart, "repeated (readers keeping the first and the last would disagree)")
				}
			}
		default:
			if seen == nil {
				seen = make(map[string]struct{}, 2*n)
				for _, k := range v.keys[first:] {
					seen[string(k)] = struct{}{}
				}
			}
			if _, dup := seen[string(key)]; dup {
				return v.fail(kStart, "repeated (readers keeping the first and the last would disagree)")
			}
			seen[string(key)] = struct{}{}
		}
		v.keys = append(v.keys, key)
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return v.syntax(i, "after object key")
		}
		i = skipSpace(b, i+1)
		if i = v.value(i, depth+1); i < 0 {
			return -1
		}
		v.path = v.path[:len(v.path)-1]
		i = skipSpace(b, i)
		if i >= len(b) {
			return v.syntax(i, "")
		}
		switch b[i] {
		case '}':
			v.keys = v.keys[:first]
			return i + 1
		case ',':
			i = skipSpace(b, i+1)
		default:
			return v.syntax(i, "after object key:value pair")
		}
	}
}

func (v *validator) array(i, depth int) int {
	if !v.deeper(i, depth) {
		return -1
	}
	b := v.b
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1
	}
	v.path = append(v.path, pathElem{})
	for n := 0; ; n++ {
		v.path[len(v.path)-1].index = n
		start := i
		if i = v.value(i, depth+1); i < 0 {
			return -1
		}
		if depth == 1 && v.collect {
			v.elems = append(v.elems, b[start:i:i])
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return v.syntax(i, "")
		}
		switch b[i] {
		case ']':
			v.path = v.path[:len(v.path)-1]
			return i + 1
		case ',':
			i = skipSpace(b, i+1)
		default:
			return v.syntax(i, "after array element")
		}
	}
}

// str checks the string whose opening quote is at b[i].
func (v *validator) str(i int) int {
	b := v.b
	j := i + 1
	for {
		// The common case: printable ASCII.
		for j < len(b) && b[j] >= 0x20 && b[j] < utf8.RuneSelf && b[j] != '"' && b[j] != '\\' {
			j++
		}
		if j >= len(b) {
			return v.syntax(j, "")
		}
		switch c := b[j]; {
		case c == '"':
			return j + 1
		case c == '\\':
			if j+1 >= len(b) {
				return v.syntax(j+1, "")
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				r, ok := hex4(b, j+2)
				if !ok {
					return v.syntax(j+2, "in \\u hexadecimal character escape")
				}
				j += 6
				switch {
				case r >= 0xDC00 && r <= 0xDFFF:
					return v.fail(j-6, fmt.Sprintf(`invalid string: \u%04x is half of a UTF-16 surrogate pair, alone`, r))
				case r >= 0xD800 && r <= 0xDBFF:
					lo, ok := rune(0), false
					if j+1 < len(b) && b[j] == '\\' && b[j+1] == 'u' {
						lo, ok = hex4(b, j+2)
					}
					if !ok || lo < 0xDC00 || lo > 0xDFFF {
						return v.fail(j-6, fmt.Sprintf(`invalid string: \u%04x is half of a UTF-16 surrogate pair, alone`, r))
					}
					j += 6
				}
			default:
				return v.syntax(j+1, "in string escape code")
			}
		case c < 0x20:
			return v.syntax(j, "in string literal")
		default:
			r, size := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && size == 1 {
				return v.fail(j, fmt.Sprintf("invalid UTF-8 (byte 0x%02x at offset %d)", c, j))
			}
			j += size
		}
	}
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// maxExp10 is the decimal order above which a float64 is infinite: the
// largest is 1.797e308.
const maxExp10 = 309

// number checks the number at b[i] and that it is finite in float64. Its
// decimal order is worked out from the literal (no parsing) except right at
// the edge of the float64 range.
func (v *validator) number(i int) int {
	b := v.b
	start, j := i, i
	if b[j] == '-' {
		j++
	}
	if j >= len(b) || b[j] < '0' || b[j] > '9' {
		return v.syntax(j, "in numeric literal")
	}
	// order: the value is below 10^order (counting from the first non-zero digit).
	intDigits := 0
	if b[j] == '0' {
		j++
	} else {
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
			intDigits++
		}
	}
	nonZero := intDigits > 0
	fracZeros := 0
	if j < len(b) && b[j] == '.' {
		j++
		if j >= len(b) || b[j] < '0' || b[j] > '9' {
			return v.syntax(j, "after decimal point in numeric literal")
		}
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			if !nonZero {
				if b[j] == '0' {
					fracZeros++
				} else {
					nonZero = true
				}
			}
			j++
		}
	}
	exp := 0
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		neg := false
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			neg = b[j] == '-'
			j++
		}
		if j >= len(b) || b[j] < '0' || b[j] > '9' {
			return v.syntax(j, "in exponent of numeric literal")
		}
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			if exp < 1<<30 {
				exp = exp*10 + int(b[j]-'0')
			}
			j++
		}
		if neg {
			exp = -exp
		}
	}
	if !nonZero {
		return j // zero, whatever the exponent
	}
	order := exp - fracZeros
	if intDigits > 0 {
		order = exp + intDigits
	}
	if order > maxExp10 || (order == maxExp10 && !finite(b[start:j])) {
		lit := b[start:j]
		shown := string(lit)
		if len(lit) > 24 {
			shown = fmt.Sprintf("%s… (%d characters)", lit[:16], len(lit))
		}
		return v.fail(start, fmt.Sprintf("number %s is out of range (beyond ±1.8e308: readers that decode numbers as float64 fail on it)", shown))
	}
	return j
}

func finite(lit []byte) bool {
	_, err := strconv.ParseFloat(string(lit), 64)
	return err == nil
}

// err builds the error of the first problem.
func (v *validator) err(root string) error {
	if v.isSyn {
		return &FieldError{Field: root, Problem: "invalid JSON: " + v.problem, cause: &syntaxError{v.problem}}
	}
	field, path := root, ""
	if len(v.where) > 0 {
		if e := v.where[0]; e.isKey {
			field = keyName(e.key)
		}
		path = renderPath(v.where)
	}
	return &FieldError{Field: field, Problem: v.problem, Path: path}
}

// keyName is a key for a message: decoded, short, printable.
func keyName(raw []byte) string {
	s := string(raw)
	if bytes.IndexByte(raw, '\\') >= 0 {
		if d, ok := decodeKey(raw); ok {
			s = d
		}
	}
	if s == "" {
		return `""`
	}
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 }) {
		s = strings.Trim(strconv.QuoteToASCII(s), `"`)
	}
	return s
}

// maxPathElems bounds a rendered path (a problem 9,000 levels down).
const maxPathElems = 8

// renderPath writes a path as data.samples[3].k.
func renderPath(p []pathElem) string {
	var sb strings.Builder
	for n, e := range p {
		if n == maxPathElems {
			fmt.Fprintf(&sb, "… (%d steps)", len(p))
			break
		}
		if !e.isKey {
			fmt.Fprintf(&sb, "[%d]", e.index)
			continue
		}
		if n > 0 {
			sb.WriteByte('.')
		}
		sb.WriteString(keyName(e.key))
	}
	return sb.String()
}
