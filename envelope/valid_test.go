package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// deep returns n levels of nested arrays around a number.
func deep(n int) string { return strings.Repeat("[", n) + "1" + strings.Repeat("]", n) }

// deepObj returns {"data":{"a":{"a":…}}} with n levels in all.
func deepObj(n int) string {
	return `{"data":` + strings.Repeat(`{"a":`, n-1) + "1" + strings.Repeat("}", n-1) + "}"
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		field string // "" means valid
		path  string
		words string // in the message
	}{
		{name: "object", in: `{"id":"a","data":{"x":[1,2.5e3,-0.1,true,false,null,"é\u00e9\ud83d\ude00"]}}`},
		{name: "spaces around", in: " \t\r\n{}\n"},
		{name: "escaped keys differ", in: `{"a":1,"\u0061b":2}`},
		{name: "same key in sibling objects", in: `{"a":{"k":1},"b":{"k":2}}`},
		{name: "keys that differ only in case", in: `{"id":1,"ID":2}`},
		{name: "64 levels", in: deep(64)},
		{name: "big integer within float64", in: `{"n":12345678901234567890}`},
		{name: "1.7e308", in: `[1.7e308,-1.7976931348623157e308]`},
		{name: "underflow reads as 0", in: `[1e-999999999,0e999999999,0.000e400]`},
		{name: "long fraction", in: `[0.` + strings.Repeat("1", 1000) + `]`},
		{name: "many keys", in: func() string {
			var b strings.Builder
			b.WriteString("{")
			for i := range 100 {
				fmt.Fprintf(&b, `"k%d":%d,`, i, i)
			}
			b.WriteString(`"last":0}`)
			return b.String()
		}()},

		{name: "invalid UTF-8 in a value", in: "{\"data\":{\"note\":\"a\xffb\"}}", field: "data", path: "data.note", words: "invalid UTF-8 (byte 0xff"},
		{name: "invalid UTF-8 in a key", in: "{\"data\":{\"\xc3\x28\":1}}", field: "data", path: "data", words: "invalid UTF-8 (byte 0xc3 at offset 10)"},
		{name: "UTF-8 encoded surrogate", in: "[\"\xed\xa0\x80\"]", field: "json", path: "[0]", words: "invalid UTF-8"},
		{name: "overlong UTF-8", in: "[\"\xc0\xaf\"]", field: "json", words: "invalid UTF-8"},
		{name: "lone high surrogate", in: `{"s":"\ud800x"}`, field: "s", path: "s", words: `\ud800 is half of a UTF-16 surrogate pair`},
		{name: "lone low surrogate", in: `{"s":"\udc00"}`, field: "s", words: "surrogate"},
		{name: "high then not low", in: `{"s":"\ud800\u0041"}`, field: "s", words: "surrogate"},
		{name: "repeated id", in: `{"id":"a","id":"b"}`, field: "id", path: "id", words: "repeated"},
		{name: "repeated key deep", in: `{"data":{"x":[{"k":1,"k":2}]}}`, field: "data", path: "data.x[0].k", words: "repeated"},
		{name: "repeated through an escape", in: `{"type":"a","\u0074ype":"b"}`, field: "type", words: "repeated"},
		{name: "repeated in a large object", in: func() string {
			var b strings.Builder
			b.WriteString(`{"data":{`)
			for i := range 40 {
				fmt.Fprintf(&b, `"k%d":%d,`, i, i)
			}
			b.WriteString(`"k7":0}}`)
			return b.String()
		}(), field: "data", path: "data.k7", words: "repeated"},
		{name: "100,000-digit integer", in: `{"data":{"n":` + strings.Repeat("9", 100000) + `}}`, field: "data", path: "data.n", words: "out of range"},
		{name: "1e999999999", in: `{"n":1e999999999}`, field: "n", words: "number 1e999999999 is out of range"},
		{name: "-1e309", in: `[-1e309]`, field: "json", words: "out of range"},
		{name: "just over the largest float64", in: `[1.8e308]`, field: "json", words: "out of range"},
		{name: "huge exponent with digits", in: `[0.001e99999999999999999999]`, field: "json", words: "out of range"},
		{name: "65 levels", in: deep(65), field: "json", words: "nested deeper than 64 levels"},
		{name: "9,990 levels", in: deepObj(9990), field: "data", path: "data.a.a.a.a.a.a.a… (64 steps)", words: "nested deeper than 64"},

		{name: "empty", in: "", field: "json", words: "unexpected end"},
		{name: "form feed is not JSON space", in: "{}\f", field: "json", words: "after the JSON value"},
		{name: "two values", in: `{} {}`, field: "json", words: "after the JSON value"},
		{name: "trailing comma", in: `[1,]`, field: "json", words: "beginning of value"},
		{name: "leading zero", in: `[01]`, field: "json", words: "after array element"},
		{name: "bare minus", in: `[-]`, field: "json", words: "numeric literal"},
		{name: "control character", in: "[\"a\nb\"]", field: "json", words: "in string literal"},
		{name: "bad escape", in: `["\x"]`, field: "json", words: "escape"},
		{name: "short unicode escape", in: `["\u12"]`, field: "json", words: "hexadecimal"},
		{name: "unterminated", in: `{"a":"b`, field: "json", words: "unexpected end"},
		{name: "NaN", in: `[NaN]`, field: "json", words: "beginning of value"},
		{name: "truncated literal", in: `[tru]`, field: "json", words: "literal true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate([]byte(tt.in))
			if tt.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if !json.Valid([]byte(tt.in)) {
					t.Fatal("accepted what encoding/json does not")
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a FieldError", err)
			}
			if fe.Field != tt.field || (tt.path != "" && fe.Path != tt.path) || !strings.Contains(err.Error(), tt.words) {
				t.Fatalf("err = %q (field %q, path %q), want field %q, path %q, words %q", err, fe.Field, fe.Path, tt.field, tt.path, tt.words)
			}
			if syntax := !json.Valid([]byte(tt.in)) && utf8.ValidString(tt.in) && !strings.Contains(tt.name, "levels"); IsSyntax(err) != syntax {
				t.Errorf("IsSyntax = %v, want %v", IsSyntax(err), syntax)
			}
		})
	}
}

func TestValidateRecord(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":NaN,"b":[Infinity,-Infinity],"c":1}`: "",
		`{"pid":1,"pid":2,"x":NaN}`:                "pid: repeated",
		"{\"host\":\"r\xff\",\"x\":Infinity}":      "host: invalid UTF-8",
		`{"x":Infinit}`:                            "literal Infinity",
		`{"x":-Inf}`:                               "literal -Infinity",
	} {
		err := ValidateRecord([]byte(in))
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("ValidateRecord(%s) = %v, want %q", in, err, want)
		}
	}
	if err := Validate([]byte(`[NaN]`)); !IsSyntax(err) {
		t.Errorf("Validate takes NaN: %v", err)
	}
}

// A problem in an envelope is named from the envelope's root by every
// reader of the package: Check, ParseFrame, AnnotateRelay.
func TestHygieneNamedByEveryReader(t *testing.T) {
	env := `{"id":"a","type":"t","timestamp":"1","data":{"k":1,"k":2}}`
	if _, err := Check([]byte(env)); err == nil || err.Error() != "data.k: repeated (readers keeping the first and the last would disagree)" {
		t.Errorf("Check: %v", err)
	}
	_, _, err := ParseFrame([]byte(`{"type":"telemetry","event":` + env + `}`))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "event" || fe.Path != "event.data.k" {
		t.Errorf("ParseFrame: %v", err)
	}
	_, _, err = AnnotateRelay([]byte(env), time.UnixMilli(1767908945298))
	if !errors.As(err, &fe) || fe.Field != "event.data" || fe.Path != "event.data.k" {
		t.Errorf("AnnotateRelay: %v (%+v)", err, fe)
	}
	// A gateway document may carry an envelope of MaxDepth levels.
	gw := `{"queue_event_type":"ai_stream_events","event":{"type":"t","envelopes":[{"id":"a","type":"t","timestamp":"1","data":` + deep(MaxDepth-1) + `}]}}`
	if _, _, err := ParseFrame([]byte(gw)); err == nil || !strings.Contains(err.Error(), "type: missing") {
		t.Errorf("gateway document of an envelope %d levels deep: %v", MaxDepth, err)
	}
}

// FuzzValidate: Validate agrees with encoding/json on what is JSON, and what
// it accepts decodes, is valid UTF-8 and repeats no key.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"b":[true,false,null],"c":{"d":"e\u00e9"}}`, `[1e308,1e309]`, `{"a":1,"a":2}`,
		"[\"\xff\"]", `["\ud800"]`, `["\ud83d\ude00"]`, deep(70), `-0.0e-5`, `{"\u0061":1,"a":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := Validate(b)
		checkValidateElements(t, b, err)
		valid := json.Valid(b)
		switch {
		case !valid && err == nil:
			t.Fatalf("accepted what encoding/json refuses: %q", b)
		case valid && IsSyntax(err):
			t.Fatalf("syntax error on valid JSON: %v\n%q", err, b)
		case err != nil:
			return
		}
		if !utf8.Valid(b) {
			t.Fatalf("accepted invalid UTF-8: %q", b)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("accepted, but encoding/json cannot decode it: %v\n%q", err, b)
		}
		if dup := repeatedKey(b); dup != "" {
			t.Fatalf("accepted a repeated key %q: %q", dup, b)
		}
	})
}

// checkValidateElements: ValidateElements says what Validate says (err),
// and on a valid array cuts the elements that Elements cuts, as many as
// encoding/json decodes; on anything else dst comes back as given.
func checkValidateElements(t *testing.T, b []byte, err error) {
	t.Helper()
	given := [][]byte{[]byte("given")}
	got, gerr := ValidateElements(b, given)
	if fmt.Sprint(gerr) != fmt.Sprint(err) {
		t.Fatalf("ValidateElements: %v; Validate: %v\n%q", gerr, err, b)
	}
	if string(got[0]) != "given" {
		t.Fatalf("ValidateElements dropped what dst held: %q", got)
	}
	got = got[1:]
	var arr []json.RawMessage
	if err != nil || firstByte(b) != '[' || json.Unmarshal(b, &arr) != nil {
		if len(got) != 0 {
			t.Fatalf("elements %q of what is not a valid array: %q", got, b)
		}
		return
	}
	want, _ := Elements(b)
	if len(got) != len(want) || len(got) != len(arr) {
		t.Fatalf("ValidateElements cut %d elements, Elements %d, encoding/json %d: %q", len(got), len(want), len(arr), b)
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("element %d: %q, Elements %q", i, got[i], want[i])
		}
	}
}

// TestValidateElements: a valid array is cut into its elements on the
// validating pass, nested arrays and spacing included; anything else is
// not cut.
func TestValidateElements(t *testing.T) {
	for _, s := range []string{
		`[]`, ` [ ] `, `[1]`, `[ [1,2] , {"a":[3,4]} ,"x]" , null ]`, "[\n{\"type\":\"a\"}\n]",
		`{"a":[1,2]}`, `"[1]"`, `[1,`, `[1,{"k":1,"k":2}]`, `[1e999]`, `[1] [2]`,
	} {
		checkValidateElements(t, []byte(s), Validate([]byte(s)))
	}
	got, err := ValidateElements([]byte(`[ [1,2] , {"a":[3]} ,"x]" ]`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{`[1,2]`, `{"a":[3]}`, `"x]"`}; fmt.Sprintf("%s", got) != fmt.Sprintf("%s", want) {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// repeatedKey walks b's tokens and returns a key repeated in one object.
func repeatedKey(b []byte) string {
	dec := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		obj  bool
		keys map[string]bool
		key  bool // next string token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF || err != nil {
			return ""
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch x := tok.(type) {
		case json.Delim:
			switch x {
			case '{', '[':
				if top != nil && top.obj {
					top.key = true
				}
				stack = append(stack, &frame{obj: x == '{', keys: map[string]bool{}, key: x == '{'})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if top != nil && top.obj && top.key {
				if top.keys[x] {
					return x
				}
				top.keys[x] = true
				top.key = false
				continue
			}
		}
		if top != nil && top.obj {
			top.key = true
		}
	}
}

// BenchmarkValidate compares Validate with encoding/json's Valid on the
// same 500 events.
func BenchmarkValidate(b *testing.B) {
	var items [][]byte
	size := 0
	for i := range 500 {
		it := fmt.Appendf(nil, `{"type":"stream_metrics","data":{"stream_id":"stream-%06d","pipeline":"streamdiffusion","fps":%d.97,"latency_ms":%d.5,"frame":%d,"queue_depth":%d,"status":"ok"}}`,
			i%64, 20+i%10, 30+i%40, 100000+i, i%8)
		items = append(items, it)
		size += len(it)
	}
	for _, bc := range []struct {
		name string
		fn   func([]byte) bool
	}{
		{"Validate", func(b []byte) bool { return Validate(b) == nil }},
		{"json.Valid", json.Valid},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				for _, it := range items {
					if !bc.fn(it) {
						b.Fatal("invalid")
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(items)), "ns/event")
		})
	}
}
