package httpsink

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendBodyByteExact(t *testing.T) {
	// Odd spacing and escapes inside the envelopes must survive untouched:
	// the sink joins bytes, it does not re-encode.
	evs := [][]byte{
		[]byte(`{"id":"a","type":"t","timestamp":"1","gateway":"","data":{"x" : 1.50,"s":"\u00e9<>&"}}`),
		[]byte(`{ "id" : "b" , "type":"t","timestamp":"2","gateway":"","data":[ ]}`),
		[]byte(`{"id":"c","type":"t","timestamp":"3","gateway":"","data":{"é":"ü"}}`),
	}
	prefix := bodyPrefix(`ed"ge`, "<h>")
	got := string(appendBody(nil, prefix, records(evs)))
	want := `{"app":"ed\"ge","host":"\u003ch\u003e","events":[` + string(evs[0]) + "," + string(evs[1]) + "," + string(evs[2]) + `]}`
	if got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
	if !json.Valid([]byte(got)) {
		t.Fatal("body is not valid JSON")
	}
	for n := 0; n <= len(evs); n++ {
		recs := records(evs[:n])
		data := 0
		for _, r := range recs {
			data += len(r.Data)
		}
		if b := appendBody(nil, prefix, recs); bodySize(len(prefix), n, data) != len(b) {
			t.Errorf("%d events: bodySize %d, body %d bytes", n, bodySize(len(prefix), n, data), len(b))
		}
	}
	if empty := string(appendBody(nil, prefix, nil)); empty != `{"app":"ed\"ge","host":"\u003ch\u003e","events":[]}` {
		t.Errorf("empty body %s", empty)
	}
}

// TestLimitsFitOneRequest: a batch the forwarder reads with Limits (MaxEvents
// records, MaxBytes of data) makes a body of exactly MaxBody at worst.
func TestLimitsFitOneRequest(t *testing.T) {
	for _, o := range []Options{{}, {MaxEvents: 7, MaxBody: 2000, App: "a-much-longer-app-name", Host: "h"}} {
		s := mustNew(t, o)
		batch, maxBytes := s.Limits()
		if batch != s.maxEvents {
			t.Errorf("batch %d, want %d", batch, s.maxEvents)
		}
		if got := bodySize(len(s.prefix), batch, maxBytes); got != s.maxBody {
			t.Errorf("worst body %d, want exactly MaxBody %d", got, s.maxBody)
		}
		s.Close()
	}
}

func TestEnvelopeID(t *testing.T) {
	cases := map[string]string{
		`{"id":"0194b7c4-6f2a","type":"x","data":{"id":"inner"}}`: "0194b7c4-6f2a",
		`{"data":{"id":"inner"},"id":"outer"}`:                    "outer",
		`{"ID":"upper"}`:                                          "",
		`{"id":7}`:                                                "",
		`{"type":"x"}`:                                            "",
		`[1,2]`:                                                   "",
		`not json`:                                                "",
		`{"id":"` + strings.Repeat("z", 300) + `"}`: strings.Repeat("z", maxIDLen),
		`{"id":"a\"b"}`: `a"b`,
	}
	for in, want := range cases {
		if got := envelopeID([]byte(in)); got != want {
			t.Errorf("envelopeID(%.40s) = %q, want %q", in, got, want)
		}
	}
	if got := envelopeID(testEnvelope(42, false, 10)); got != idOf(42) {
		t.Errorf("envelopeID(envelope 42) = %q", got)
	}
}

func FuzzEnvelopeID(f *testing.F) {
	f.Add([]byte(`{"id":"0194b7c4-6f2a-7c3e-9a51-2f0e6d1b8a90","type":"gpu_memory_sample","timestamp":"1767908945298","gateway":"","data":{}}`))
	f.Add([]byte(`{"id":"x","id":"y"}`))
	f.Add([]byte(`{"data":{"id":"inner"}}`))
	f.Add([]byte(`{"id":"\ud800"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		id := envelopeID(data)
		if len(id) > maxIDLen {
			t.Fatalf("id of %d bytes", len(id))
		}
		// Cross-check with a full decode where the two must agree: the
		// stored envelopes envelope.ID reads passed Validate, so they are
		// JSON and UTF-8 (a decoder would turn invalid UTF-8 into U+FFFD
		// where the id keeps the stored bytes). On other bytes the id only
		// has to stay bounded.
		var top map[string]any
		if !utf8.Valid(data) || json.Unmarshal(data, &top) != nil {
			return
		}
		want, _ := top["id"].(string)
		if len(want) > maxIDLen {
			want = want[:maxIDLen]
		}
		if id != want {
			t.Fatalf("envelopeID = %q, full decode says %q", id, want)
		}
	})
}

func TestRedact(t *testing.T) {
	key := testKey
	cases := []struct{ in, want string }{
		{"no secret here", "no secret here"},
		{"bad key Bearer " + key + " refused", "bad key Bearer [redacted] refused"},
		{key + key, "[redacted][redacted]"},
		{"cut at the limit: " + key[:9], "cut at the limit: [redacted]"},
		{"short tail " + key[:3], "short tail " + key[:3]},
	}
	for _, c := range cases {
		if got := redact(c.in, key); got != c.want {
			t.Errorf("redact(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := redact("text", ""); got != "text" {
		t.Errorf("empty key changed text: %q", got)
	}
}

func FuzzRedact(f *testing.F) {
	f.Add("unauthorized: Bearer "+testKey, testKey)
	f.Add("d]Z12345678Z12345678", "d]Z12345678")
	f.Add("xx", "[redacted]")
	f.Fuzz(func(t *testing.T, text, key string) {
		out := redact(text, key)
		// Keys longer than the placeholder and not made of its opening
		// bracket cannot survive, whole or as a cut-off tail of 4+ bytes.
		if len(key) <= len(redacted) || strings.Contains(key, "[") {
			return
		}
		if strings.Contains(out, key) {
			t.Fatalf("redact(%q, %q) = %q still holds the key", text, key, out)
		}
		for n := 4; n < len(key); n++ {
			if strings.HasSuffix(out, key[:n]) {
				t.Fatalf("redact(%q, %q) = %q ends with %d bytes of the key", text, key, out, n)
			}
		}
	})
}
