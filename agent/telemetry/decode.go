package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
// array, a single JSON value, else JSON lines.
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
		if !json.Valid(trimmed) {
			return nil, fmt.Errorf("invalid JSON array: %w", syntaxErr(trimmed))
		}
		items, err := arrayItems(body, start)
		if err != nil {
			return nil, fmt.Errorf("invalid JSON array: %w", err)
		}
		return items, nil
	}
	if json.Valid(trimmed) {
		if trimmed[0] == '{' {
			var top map[string]json.RawMessage
			if err := json.Unmarshal(trimmed, &top); err != nil {
				return nil, fmt.Errorf("invalid JSON object: %w", err)
			}
			if ev, ok := top["events"]; ok {
				if t := bytes.TrimLeft(ev, " \t\r\n"); len(t) == 0 || t[0] != '[' {
					return nil, errors.New("events: must be an array")
				}
				return eventsItems(body, start)
			}
		}
		return []Item{{Offset: start, Raw: json.RawMessage(bytes.TrimRight(trimmed, " \t\r\n"))}}, nil
	}
	return lineItems(body)
}

// arrayItems reads the elements of the array that starts at body[start],
// remembering where each begins.
func arrayItems(body []byte, start int) ([]Item, error) {
	dec := json.NewDecoder(bytes.NewReader(body[start:]))
	if _, err := dec.Token(); err != nil { // '['
		return nil, err
	}
	items, err := elements(dec, body, start)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != nil { // ']'
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("data after the array")
	} else if !errors.Is(err, io.EOF) {
		return nil, err
	}
	return items, nil
}

// eventsItems reads the "events" array of the object at body[start]; other
// keys are ignored (a batch may carry "app", "host"…).
func eventsItems(body []byte, start int) ([]Item, error) {
	dec := json.NewDecoder(bytes.NewReader(body[start:]))
	if _, err := dec.Token(); err != nil { // '{'
		return nil, err
	}
	var items []Item
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		if key, _ := tok.(string); key == "events" && items == nil {
			if _, err := dec.Token(); err != nil { // '['
				return nil, err
			}
			if items, err = elements(dec, body, start); err != nil {
				return nil, err
			}
			if items == nil {
				items = []Item{}
			}
			if _, err := dec.Token(); err != nil { // ']'
				return nil, err
			}
			continue
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return items, nil
}

// elements decodes array elements until the closing bracket (not consumed).
func elements(dec *json.Decoder, body []byte, base int) ([]Item, error) {
	var items []Item
	for dec.More() {
		off := base + int(dec.InputOffset())
		// InputOffset is just past the previous token; the element starts
		// after the separator and whitespace.
		for off < len(body) && (body[off] == ',' || body[off] == ' ' || body[off] == '\t' || body[off] == '\r' || body[off] == '\n') {
			off++
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		items = append(items, Item{Index: len(items), Offset: off, Raw: raw})
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
			case json.Valid(text):
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
	var v any
	err := json.Unmarshal(text, &v)
	if err == nil {
		return errors.New("not a single JSON value")
	}
	return err
}

// lineError is a JSON-lines line that is not JSON.
type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: invalid JSON: %v", e.line, e.err) }
func (e *lineError) Unwrap() error { return e.err }
