package envelope

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestID(t *testing.T) {
	tests := []struct {
		name string
		in   string
		id   string
		ok   bool
	}{
		{"first", `{"id":"a1","type":"t"}`, "a1", true},
		{"last, after nested data", `{"type":"t","data":{"id":"inner","x":[1,{"id":"deep"}],"s":"}\"{"},"id":"outer"}`, "outer", true},
		{"whitespace", " {\n\t\"type\" : \"t\" ,\r\n \"id\" :\t\"w\" } ", "w", true},
		{"escaped value", `{"id":"a\"b\u00e9"}`, "a\"bé", true},
		{"escaped key", `{"\u0069d":"k"}`, "k", true},
		{"key with escape is not id", `{"i\"d":"x","id":"y"}`, "y", true},
		{"values of every kind before id", `{"n":-1.5e3,"t":true,"f":false,"z":null,"a":[],"o":{},"id":"v"}`, "v", true},
		{"last id wins", `{"id":"one","id":"two"}`, "two", true},
		{"ID is another key", `{"ID":"upper","id":"lower"}`, "lower", true},
		{"empty id", `{"id":""}`, "", true},
		{"no id", `{"type":"t","data":{"id":"inner"}}`, "", false},
		{"id not a string", `{"id":42}`, "", false},
		{"array", `[{"id":"a"}]`, "", false},
		{"empty", ``, "", false},
		{"truncated", `{"type":"t","id":"ab`, "", false},
		{"unterminated data", `{"data":{"x":"y"`, "", false},
		{"cut after the id", `{"id":"0"`, "", false},
		{"cut after the id and a comma", `{"type":"t","id":"0",`, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, ok := ID([]byte(tt.in))
			if ok != tt.ok || string(id) != tt.id {
				t.Fatalf("ID(%s) = %q, %v; want %q, %v", tt.in, id, ok, tt.id, tt.ok)
			}
		})
	}
}

// The id of the stored bytes is used as is, without a copy, when it has no
// escapes.
func TestIDAliases(t *testing.T) {
	b := []byte(`{"type":"t","id":"0194b7c4"}`)
	id, _ := ID(b)
	if &id[0] != &b[bytes.Index(b, []byte("0194"))] {
		t.Fatal("id was copied")
	}
}

// referenceID is what a JSON decoder finds: the last top-level "id" member
// (keys compared after unescaping, exactly), if its value is a string.
func referenceID(b []byte) (id string, found bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return "", false
		}
		if tok == "id" {
			id, found = "", false
			var s string
			if json.Unmarshal(raw, &s) == nil {
				id, found = s, true
			}
		}
	}
	return id, found
}

// FuzzEnvelopeID: on valid JSON the scan agrees with a decoder; on anything
// it never panics.
func FuzzEnvelopeID(f *testing.F) {
	for _, s := range []string{
		`{"id":"0194b7c4-6f2a-7c3e-9a51-2f0e6d1b8a90","type":"gpu_memory_sample","timestamp":"1767908945298","gateway":"","data":{"type":"gpu_memory_sample"}}`,
		`{"data":{"id":"x","l":[1,"]",{"a":"\""}]},"id":"y"}`,
		`{"\u0069d":"k"}`,
		`{"id":"a\\b\"c"}`,
		`{"id":1}`,
		`[]`,
		`{"a":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id, ok := ID(b)
		// A decoder replaces invalid UTF-8 with U+FFFD; the key keeps the
		// stored bytes, so compare only where the two must agree.
		if !json.Valid(b) || !utf8.Valid(b) {
			return
		}
		want, wok := referenceID(b)
		if ok != wok || (ok && string(id) != want) {
			t.Fatalf("ID(%q) = %q, %v; decoder finds %q, %v", b, id, ok, want, wok)
		}
	})
}
