package telemetry

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
)

// JSON as Python's json module reads it (stormlog reads and writes records
// with it).
func TestDecodePy(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want any    // compared by show()
		err  string // substring
	}{
		{name: "NaN", in: `NaN`, want: NonFinite(math.NaN())},
		{name: "Infinity", in: ` Infinity `, want: NonFinite(math.Inf(1))},
		{name: "-Infinity", in: `[-Infinity]`, want: []any{NonFinite(math.Inf(-1))}},
		{name: "integer beyond 64 bits kept", in: `123456789012345678901234567890`, want: json.Number("123456789012345678901234567890")},
		{name: "-0 is the integer 0", in: `-0`, want: json.Number("0")},
		{name: "-0.0 stays a float", in: `-0.0`, want: json.Number("-0.0")},
		{name: "4300 digits", in: strings.Repeat("7", 4300), want: json.Number(strings.Repeat("7", 4300))},
		{name: "4301 digits", in: strings.Repeat("7", 4301), err: "over Python's limit of 4300"},
		{name: "float of any length", in: "1." + strings.Repeat("7", 5000), want: json.Number("1." + strings.Repeat("7", 5000))},
		{name: "duplicate keys: the last wins", in: `{"a":1,"a":2}`, want: map[string]any{"a": json.Number("2")}},
		{name: "surrogate pair", in: `"\ud83d\ude00"`, want: "😀"},
		{name: "unpaired surrogate kept as WTF-8", in: `"a\ud800b"`, want: "a\xed\xa0\x80b"},
		{name: "raw U+2028", in: "\"a\u2028b\"", want: "a\u2028b"},
		{name: "control character", in: "\"a\tb\"", err: "invalid control character"},
		{name: "invalid UTF-8", in: "\"a\xffb\"", err: "invalid UTF-8"},
		{name: "BOM", in: "\ufeff{}", err: "invalid character"},
		{name: "nan lower case", in: `nan`, err: "invalid character"},
		{name: "+1", in: `+1`, err: "invalid character"},
		{name: "leading zero", in: `01`, err: "after the value"},
		{name: "1.", in: `1.`, err: "after the value"},
		{name: "trailing comma", in: `[1,]`, err: "expecting a value"},
		{name: "vertical tab is not whitespace", in: "1\v", err: "after the value"},
		{name: "empty", in: ``, err: "unexpected end of input"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := decodePy([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fmt.Sprintf("%#v", v), fmt.Sprintf("%#v", tc.want); got != want {
				t.Fatalf("got %s, want %s", got, want)
			}
			if f, ok := v.(NonFinite); ok && math.IsNaN(float64(f)) != math.IsNaN(float64(tc.want.(NonFinite))) {
				t.Fatalf("got %v", f)
			}
		})
	}
}

// Strict JSON has no NaN: the agent's envelopes carry them as strings.
func TestNonFiniteMarshal(t *testing.T) {
	b, err := json.Marshal(map[string]any{"a": NonFinite(math.NaN()), "b": NonFinite(math.Inf(1)), "c": NonFinite(math.Inf(-1))})
	if err != nil || string(b) != `{"a":"NaN","b":"Infinity","c":"-Infinity"}` {
		t.Fatalf("%s %v", b, err)
	}
}

func TestPyBlank(t *testing.T) {
	for s, want := range map[string]bool{"": true, " \t\n": true, "\x1c\x1d\x1e\x1f": true, "\u00a0\u2028\u3000\u0085": true,
		"\u200b": false, "\u180e": false, "x": false, "\ufeff": false} {
		if pyBlank(s) != want {
			t.Errorf("pyBlank(%q) = %v", s, !want)
		}
	}
}
