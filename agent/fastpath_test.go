package agent

import (
	"bytes"
	"testing"
	"time"
)

// TestFastPathSameBytes: the ingest fast path builds exactly the bytes of
// the general path (but the random id), or declines.
func TestFastPathSameBytes(t *testing.T) {
	cfg, err := Load(nil, func(k string) string {
		return map[string]string{"EDGERELAY_ENABLED": "true", "EDGERELAY_HOST": "h<1>", "EDGERELAY_NODE_ID": "n1", "EDGERELAY_REGION": "eu"}[k]
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fixed := time.UnixMilli(1767908945298)
	a, err := New(cfg, Options{Now: func() time.Time { return fixed }})
	if err != nil {
		t.Fatal(err)
	}
	a.sessions.put(&Session{SessionID: "s1", StreamID: "st1"})
	cases := []string{
		`{"type":"a","data":{}}`,
		`{"type":"a","data":{"x":1,"b":"two","z":[1, 2, {"k" : "v"}]}}`,
		`{"data":{"host":"","region":null,"node_id":"mine","n":1.50e3},"type":"t"}`,
		`{"type":"t","data":{"type":"sub","client_source":"me","session_id":"s1"}}`,
		`{"type":"t","data":{"session_id":"unknown","s":"a <b> & c"}}`,
		`{"type":"t","data":{"k":"x","k":"y","u":"caf\u00e9 é \u2028 x"}}`,
		`{"type":"t","data":{"sp":"a b","nested":{"a":{"b":[true,false,null]}}}}`,
		`{"type":"t","data":{"session_id":"","gpu_id":"  "}}`,
		`{"type":"t","data":{"session_id":7}}`,
		"{\"type\":\"t\",\"data\":{\"w\":\"\u2028\"}}",
		`{"type":"ty pe","data":{"a":"b"}}`,
		`{ "type" : "t" , "data" : { "a" : 1 } }`,
	}
	for _, c := range cases {
		slow, styp, ssess, serr := a.prepareSlow([]byte(c))
		fast, ftyp, fsess, ok := a.prepareFast([]byte(c))
		if serr != nil {
			t.Fatalf("%s: slow: %v", c, serr)
		}
		if !ok {
			t.Logf("%s: fast path declined", c)
			continue
		}
		// ids differ (random): compare the rest.
		if !bytes.Equal(slow[44:], fast[44:]) || styp != ftyp || ssess != fsess {
			t.Errorf("%s:\nslow %s (%s %s)\nfast %s (%s %s)", c, slow, styp, ssess, fast, ftyp, fsess)
		}
	}
}
