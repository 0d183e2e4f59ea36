package httpsink

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

func TestParseAccepted(t *testing.T) {
	cases := []struct {
		body string
		n    int
		ok   bool
	}{
		{`{"status":"accepted","accepted":500}`, 500, true},
		{`{"status":"accepted","accepted":0}`, 0, true},
		{` {"accepted" : 17 , "status":"accepted"} `, 17, true},
		{`{"status":"accepted"}`, 0, false},
		{``, 0, false},
		{`accepted`, 0, false},
		{`[{"accepted":3}]`, 0, false},
		{`{"accepted":"3"}`, 0, false},
		{`{"accepted":-1}`, 0, false},
		{`{"accepted":1.5}`, 0, false},
		{`{"accepted":1e2}`, 0, false},
		{`{"accepted":null}`, 0, false},
		{`{"accepted":999999999}`, 999999999, true},
		{`{"accepted":1000000000}`, 0, false}, // more than any request: "all"
		{`{"status":"accepted","accepted":12`, 0, false},
	}
	for _, c := range cases {
		if n, ok := parseAccepted([]byte(c.body)); n != c.n || ok != c.ok {
			t.Errorf("parseAccepted(%q) = %d, %v; want %d, %v", c.body, n, ok, c.n, c.ok)
		}
	}
}

func FuzzParseAccepted(f *testing.F) {
	for _, s := range []string{`{"status":"accepted","accepted":500}`, `{"accepted":0}`, `{}`, ``, `{"accepted":"7"}`, `{"accepted":1e3}`, `{"ACCEPTED":4}`, `{"accepted":3,"accepted":5}`, `{"status":"accepted","accepted":12`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n, ok := parseAccepted(body)
		if !ok {
			if n != 0 {
				t.Fatalf("not ok but n = %d", n)
			}
			return
		}
		// A count comes only from a whole JSON object, as the digits of a
		// whole number it holds.
		if n < 0 || n > 999_999_999 {
			t.Fatalf("n = %d out of range", n)
		}
		if !json.Valid(body) || !strings.Contains(string(body), strconv.Itoa(n)) {
			t.Fatalf("parseAccepted(%q) = %d from something that does not hold it", body, n)
		}
		var v map[string]json.RawMessage
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("parseAccepted(%q) = %d, but it is no object: %v", body, n, err)
		}
	})
}
