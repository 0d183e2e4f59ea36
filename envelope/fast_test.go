package envelope

import (
	"bytes"
	"testing"
	"time"
)

// TestFastPathSameBytes: the stamping fast path builds exactly the bytes of
// the general path (but the random id), or declines.
func TestFastPathSameBytes(t *testing.T) {
	fixed := time.UnixMilli(1767908945298)
	s := NewStamper(StamperOptions{
		Node: Identity{"host": "h<1>", "node_id": "n1", "region": "eu"},
		Now:  func() time.Time { return fixed },
		Session: func(id string) Identity {
			if id == "s1" {
				return Identity{"session_id": "s1", "stream_id": "st1"}
			}
			return nil
		},
		MaxBytes: 1 << 20,
	})
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
	declined := 0
	for _, c := range cases {
		raw := []byte(c)
		ms, _ := members(raw, nil)
		slow, serr := s.prepareSlow(raw, ms)
		fast, ok := s.prepareFast(raw, ms)
		if serr != nil {
			t.Fatalf("%s: slow: %v", c, serr)
		}
		if !ok {
			declined++
			t.Logf("%s: fast path declined", c)
			continue
		}
		// ids differ (random): compare the rest.
		if !bytes.Equal(slow.Env[44:], fast.Env[44:]) || slow.Type != fast.Type || slow.SessionID != fast.SessionID {
			t.Errorf("%s:\nslow %s (%s %s)\nfast %s (%s %s)", c, slow.Env, slow.Type, slow.SessionID, fast.Env, fast.Type, fast.SessionID)
		}
	}
	if declined > 3 {
		t.Errorf("the fast path declined %d of %d plain events", declined, len(cases))
	}
}
