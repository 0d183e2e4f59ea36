package telemetry

import (
	"errors"
	"strings"
	"testing"
)

type wantItem struct {
	index, line int
	raw         string // "" when err
	err         string
}

func TestDecodeRecords(t *testing.T) {
	cases := []struct {
		name string
		body string
		want []wantItem
		err  string
	}{
		{name: "array", body: ` [ {"a":1} , {"b":2} ,[3]] `, want: []wantItem{{0, 0, `{"a":1}`, ""}, {1, 0, `{"b":2}`, ""}, {2, 0, `[3]`, ""}}},
		{name: "empty array", body: `[]`, want: nil},
		{name: "events object", body: `{"app":"x","events":[{"a":1},{"b":2}],"host":"h"}`, want: []wantItem{{0, 0, `{"a":1}`, ""}, {1, 0, `{"b":2}`, ""}}},
		{name: "events empty", body: `{"events":[]}`, want: []wantItem{}},
		{name: "single record", body: "\n {\"a\":1}\n", want: []wantItem{{0, 0, `{"a":1}`, ""}}},
		{name: "single non-object", body: `5`, want: []wantItem{{0, 0, `5`, ""}}},
		{name: "json lines", body: "{\"a\":1}\n{\"b\":2}\n", want: []wantItem{{0, 1, `{"a":1}`, ""}, {1, 2, `{"b":2}`, ""}}},
		{name: "json lines crlf and blanks", body: "{\"a\":1}\r\n\r\n  \n{\"b\":2}\r\n", want: []wantItem{{0, 1, `{"a":1}`, ""}, {1, 4, `{"b":2}`, ""}}},
		{name: "truncated last line ignored", body: "{\"a\":1}\n{\"b\":2}\n{\"c\":", want: []wantItem{{0, 1, `{"a":1}`, ""}, {1, 2, `{"b":2}`, ""}}},
		{name: "complete last line without newline", body: "{\"a\":1}\n{\"b\":2}", want: []wantItem{{0, 1, `{"a":1}`, ""}, {1, 2, `{"b":2}`, ""}}},
		{name: "bad middle line reported", body: "{\"a\":1}\n{\"b\":\n{\"c\":3}\n", want: []wantItem{
			{0, 1, `{"a":1}`, ""}, {1, 2, "", "line 2: invalid JSON: unexpected end of input, expecting a value at byte 5"}, {2, 3, `{"c":3}`, ""}}},
		{name: "bad last line with newline reported", body: "{\"a\":1}\n{\"b\"\n", want: []wantItem{
			{0, 1, `{"a":1}`, ""}, {1, 2, "", "line 2: invalid JSON: unexpected end of input, expecting ':' at byte 4"}}},
		{name: "two values on a line", body: "{\"a\":1} {\"b\":2}\n{\"c\":3}\n", want: []wantItem{
			{0, 1, "", "line 1: invalid JSON: invalid character '{' after the value at byte 8"}, {1, 2, `{"c":3}`, ""}}},
		{name: "empty", body: " \n\t", err: "empty body: no records"},
		{name: "single truncated line", body: `{"a":`, err: "line 1: invalid JSON: unexpected end of input, expecting a value at byte 5"},
		{name: "single truncated line after blanks", body: "\n\n{\"a\":", err: "line 3: invalid JSON: unexpected end of input, expecting a value at byte 5"},
		{name: "bad array", body: `[{"a":1},`, err: "invalid JSON array: unexpected end of input, expecting a value at byte 9"},
		{name: "array then data", body: `[{"a":1}] x`, err: "invalid JSON array: invalid character 'x' after the value at byte 10"},
		{name: "events not array", body: `{"events":{"a":1}}`, err: "events: must be an array"},
		// Python's json, as stormlog reads and writes records.
		{name: "NaN and Infinity", body: `[{"a":NaN},{"b":-Infinity}]`, want: []wantItem{{0, 0, `{"a":NaN}`, ""}, {1, 0, `{"b":-Infinity}`, ""}}},
		{name: "NaN in JSON lines", body: "{\"a\":NaN}\n{\"b\":Infinity}\n", want: []wantItem{{0, 1, `{"a":NaN}`, ""}, {1, 2, `{"b":Infinity}`, ""}}},
		{name: "last duplicate events wins", body: `{"events":[{"a":1}],"events":[{"b":2}]}`, want: []wantItem{{0, 0, `{"b":2}`, ""}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			items, err := DecodeRecords([]byte(tc.body))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(items) != len(tc.want) {
				t.Fatalf("%d items, want %d: %+v", len(items), len(tc.want), items)
			}
			for i, w := range tc.want {
				it := items[i]
				if it.Index != w.index || it.Line != w.line {
					t.Errorf("item %d: index %d line %d, want %d %d", i, it.Index, it.Line, w.index, w.line)
				}
				if w.err != "" {
					if it.Err == nil || it.Err.Error() != w.err || it.Raw != nil {
						t.Errorf("item %d: err %v raw %s, want %q", i, it.Err, it.Raw, w.err)
					}
					continue
				}
				if it.Err != nil || string(it.Raw) != w.raw {
					t.Errorf("item %d: raw %s err %v, want %s", i, it.Raw, it.Err, w.raw)
				}
				// Offset points at the item in the body.
				if !strings.HasPrefix(tc.body[it.Offset:], w.raw) {
					t.Errorf("item %d: offset %d does not start %s", i, it.Offset, w.raw)
				}
			}
		})
	}
	if _, err := DecodeRecords(nil); !errors.Is(err, ErrEmpty) {
		t.Fatalf("nil body: %v", err)
	}
}

// Offsets of array items over several lines, as ValidateFiles uses them.
func TestDecodeRecordsArrayOffsets(t *testing.T) {
	body := "[\n  {\"a\":1},\n\n  {\"b\":\n 2}\n]\n"
	items, err := DecodeRecords([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || body[items[0].Offset] != '{' || body[items[1].Offset] != '{' ||
		strings.Count(body[:items[1].Offset], "\n") != 3 {
		t.Fatalf("items %+v", items)
	}
}
