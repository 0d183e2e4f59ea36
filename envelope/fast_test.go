package envelope

import (
	"bytes"
	"testing"
	"time"
)

// testMapping is a mapping like the agent's NAAP mode.
var testMapping = &Mapping{
	Accepted:        []string{"stream_trace", "ai_stream_status", "ai_stream_events"},
	Family:          "ai_stream_events",
	OrchestratorURL: "https://orch.example.net:8935/<&>",
}

// TestFastPathSameBytes: the stamping fast path takes every plain event
// below and builds exactly the bytes of the general path (but the random
// id); without a mapping and with one.
func TestFastPathSameBytes(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testFastPathSameBytes(t, nil) })
	t.Run("mapped", func(t *testing.T) { testFastPathSameBytes(t, testMapping) })
}

func testFastPathSameBytes(t *testing.T, m *Mapping) {
	fixed := time.UnixMilli(1767908945298)
	s := NewStamper(StamperOptions{
		Node: Identity{"host": "h<1>", "node_id": "n1", "region": "eu", "orchestrator_address": "0xAB<cD>"},
		Now:  func() time.Time { return fixed },
		Session: func(id string) Identity {
			switch id {
			case "s1":
				return Identity{"session_id": "s1", "stream_id": "st1"}
			case "s2":
				return Identity{"session_id": "s2", "orchestrator_address": "0xSESS\\ION\u2028"}
			}
			return nil
		},
		MaxBytes: 1 << 20,
		Mapping:  m,
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
		`{"type":"ai_stream_status","data":{"orchestrator_address":"0xAB<cD>"}}`,
		`{"type":"stream_trace","data":{"orchestrator_address":" 0xDEF\u00C9 ","orchestrator_b":1}}`,
		`{"type":"t","data":{"orchestrator_address":7,"pipeline":"p"}}`,
		`{"type":"t","data":{"orchestrator_address":{"A":"B"}}}`,
		`{"type":"t","data":{"orchestrator_address":"","orchestrator_info":null}}`,
		`{"type":"t","data":{"orchestrator_info":{"address":"X"},"orchestrator_address":"Y"}}`,
		`{"type":"t","data":{"session_id":"s2","orchestrator_ab":"Z"}}`,
		`{"type":"t","data":{"orchestrator_address":null,"session_id":"s2"}}`,
	}
	for _, c := range cases {
		raw := []byte(c)
		ms, _ := members(raw, nil)
		slow, serr := s.prepareSlow(raw, ms)
		fast, ok := s.prepareFast(raw, ms)
		if serr != nil {
			t.Fatalf("%s: slow: %v", c, serr)
		}
		if !ok {
			// Every case is a plain {type, data} event: a decline would
			// leave it uncompared and slow.
			t.Errorf("%s: the fast path declined", c)
			continue
		}
		// ids differ (random): compare the rest.
		if !bytes.Equal(slow.Env[44:], fast.Env[44:]) || slow.Type != fast.Type || slow.SessionID != fast.SessionID {
			t.Errorf("%s:\nslow %s (%s %s)\nfast %s (%s %s)", c, slow.Env, slow.Type, slow.SessionID, fast.Env, fast.Type, fast.SessionID)
		}
	}
}
