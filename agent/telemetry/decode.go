package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Item is one record found in a body by DecodeRecords.
type Item struct {
	Index  int             // 0-based item index (JSON lines: counts non-blank lines)
	Line   int             // 1-based line in JSON lines; 0 for the other shapes
	Offset int             // byte offset in the body where the item starts
	Raw    json.RawMessage // the item's bytes (nil when Err is set)
	Err    error           // the item is not JSON; it names the line
}

// ErrEmpty is returned by DecodeRecords for a body with nothing but
// whitespace.
var ErrEmpty = errors.New("empty body: no records")

// DecodeRecords splits a body into items, in this order of shapes
// (spec/stormlog.md, "Files"): a JSON array, an object with an "events"
// array, a single JSON value, else JSON lines. JSON is read as Python's json
// module reads it (pyjson.go: NaN, Infinity, integers of any length).
//
// In JSON lines a malformed final line without a trailing newline is a
// truncated write and is ignored; a malformed line anywhere else becomes an
// item whose Err names its line number, and the other lines are still
// returned. Items are not validated: pass Raw to Validate or Normalize. The
// error is for a body that is no shape at all (empty, or a single line that
// is not JSON). Safe for concurrent use.
func DecodeRecords(body []byte) ([]Item, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, ErrEmpty
	}
	start := len(body) - len(trimmed)
	if trimmed[0] == '[' {
		p := pyParser{b: body, i: start}
		items, err := p.elements()
		if err == nil {
			err = p.end()
		}
		if err != nil {
			return nil, fmt.Errorf("invalid JSON array: %w", err)
		}
		return items, nil
	}
	if v, err := decodePy(trimmed); err == nil {
		if obj, ok := v.(map[string]any); ok {
			if ev, ok := obj["events"]; ok {
				if _, isArr := ev.([]any); !isArr {
					return nil, errors.New("events: must be an array")
				}
				return eventsItems(body, start)
			}
		}
		return []Item{{Offset: start, Raw: json.RawMessage(bytes.TrimRight(trimmed, " \t\r\n"))}}, nil
	}
	return lineItems(body)
}

// elements reads the array at the cursor, remembering where each element
// begins. The body is known to hold a value there, or the error says why not.
func (p *pyParser) elements() ([]Item, error) {
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != '[' {
		return nil, p.unexpected("'['")
	}
	p.i++
	items := []Item{}
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return items, nil
	}
	for {
		p.ws()
		off := p.i
		if _, err := p.value(); err != nil {
			return nil, err
		}
		items = append(items, Item{Index: len(items), Offset: off, Raw: json.RawMessage(p.b[off:p.i])})
		p.ws()
		if p.i < len(p.b) && p.b[p.i] == ',' {
			p.i++
			continue
		}
		if p.i < len(p.b) && p.b[p.i] == ']' {
			p.i++
			return items, nil
		}
		return nil, p.unexpected("',' or ']'")
	}
}

// end checks only whitespace follows the cursor.
func (p *pyParser) end() error {
	p.ws()
	if p.i < len(p.b) {
		return p.errf("invalid character %s after the value", p.show())
	}
	return nil
}

// eventsItems reads the "events" array of the object at body[start] (the
// last one, as a JSON reader keeps the last of duplicate keys); other keys
// are ignored (a batch may carry "app", "host"…). The object is known to be
// valid.
func eventsItems(body []byte, start int) ([]Item, error) {
	p := pyParser{b: body, i: start + 1} // past '{'
	var items []Item
	for {
		p.ws()
		if p.b[p.i] == '}' {
			break
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		p.ws()
		p.i++ // ':'
		p.ws()
		if k == "events" {
			if items, err = p.elements(); err != nil {
				return nil, err
			}
		} else if _, err := p.value(); err != nil {
			return nil, err
		}
		p.ws()
		if p.b[p.i] == ',' {
			p.i++
		}
	}
	return items, nil
}

// lineItems splits JSON lines.
func lineItems(body []byte) ([]Item, error) {
	var items []Item
	line, off, nonBlank := 0, 0, 0
	for off < len(body) {
		line++
		end := bytes.IndexByte(body[off:], '\n')
		last := end < 0 // no newline: the final, possibly truncated, line
		if last {
			end = len(body)
		} else {
			end += off
		}
		text := bytes.TrimSpace(body[off:end])
		start := off + bytes.Index(body[off:end], text)
		next := end + 1
		if len(text) > 0 {
			nonBlank++
			switch {
			case validPy(text):
				items = append(items, Item{Index: len(items), Line: line, Offset: start, Raw: json.RawMessage(text)})
			case last:
				// A truncated write: the writer will finish or never did.
				// Unless it is the only line: then the body is not JSON.
				if nonBlank == 1 {
					return nil, fmt.Errorf("line %d: invalid JSON: %w", line, syntaxErr(text))
				}
			default:
				items = append(items, Item{Index: len(items), Line: line, Offset: start,
					Err: &lineError{line: line, err: syntaxErr(text)}})
			}
		}
		off = next
	}
	if len(items) == 0 {
		return nil, ErrEmpty
	}
	return items, nil
}

// syntaxErr says why text is not JSON.
func syntaxErr(text []byte) error {
	if _, err := decodePy(text); err != nil {
		return err
	}
	return errors.New("not a single JSON value")
}

// lineError is a JSON-lines line that is not JSON.
type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: invalid JSON: %v", e.line, e.err) }
func (e *lineError) Unwrap() error { return e.err }
