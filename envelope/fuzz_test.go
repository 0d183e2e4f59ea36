package envelope

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

// FuzzPrepare: on any item that passes Validate (Prepare's precondition), no
// panic; the fast path builds the general path's bytes (but the random id)
// or declines, with and without a mapping; what is accepted is one line and
// passes Check.
func FuzzPrepare(f *testing.F) {
	for _, s := range []string{
		`{"type":"a","data":{}}`,
		`{"type":"a","data":{"x":1,"s":"<&>","n":[1,{"k":"v"}]}}`,
		`{"id":"1","type":"t","timestamp":"1","gateway":"g","data":{"session_id":"s"}}`,
		"{\n \"id\": \"p\",\n \"type\": \"t\",\n \"timestamp\": \"3\",\n \"data\": {}\n}",
		`{"type":"a","data":{"host":null,"big":123456789012345678901234567890}}`,
		`{"type":"a","data":{"k":1,"k":2,"session_id":"s1"}}`,
		`{"type":"a","data":{"\u0068ost":"x"}}`,
		`{"type":"ai_stream_status","data":{"orchestrator_address":"0xAbC","orchestrator_z":1}}`,
		`{"type":"a","data":{"orchestrator_address":"0X\u00C9<","session_id":"s"}}`,
		`{"type":"a","data":{"orchestrator_address":[1],"orchestrator_info":{}}}`,
	} {
		f.Add([]byte(s))
	}
	fixed := time.UnixMilli(1767908945298)
	o := StamperOptions{
		Node: Identity{"host": "h", "node_id": "n", "orchestrator_address": "0xAbC"},
		Now:  func() time.Time { return fixed },
		Session: func(id string) Identity {
			return Identity{"session_id": id, "stream_id": "st", "orchestrator_address": id}
		},
		MaxBytes: 4096,
	}
	s := NewStamper(o)
	o.Mapping = testMapping
	mapped := NewStamper(o)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if Validate(raw) != nil {
			return
		}
		for _, s := range []*Stamper{s, mapped} {
			ms, ok := members(raw, nil)
			if ok {
				if fast, ok := s.prepareFast(raw, ms); ok {
					slow, err := s.prepareSlow(raw, ms)
					if err != nil || !bytes.Equal(fast.Env[44:], slow.Env[44:]) || fast.SessionID != slow.SessionID || fast.Type != slow.Type {
						t.Fatalf("fast and general paths differ (mapped %v, %v):\nfast %s\ngen  %s", s.m != nil, err, fast.Env, slow.Env)
					}
				}
			}
			p, err := s.Prepare(raw)
			if err != nil {
				continue
			}
			if bytes.ContainsAny(p.Env, "\n\r") {
				t.Fatalf("envelope spans lines: %q", p.Env)
			}
			c, err := Check(p.Env)
			if err != nil {
				t.Fatalf("prepared envelope fails Check: %v\n%s", err, p.Env)
			}
			// A prebuilt envelope (it has an id) keeps its type; a stamped
			// one has the mapping's, and Prepared.Type is the native family.
			want := p.Type
			if ms, _ := members(raw, nil); !slices.ContainsFunc(ms, func(m member) bool { return m.is("id") }) {
				want = s.m.envType(p.Type)
			}
			if c.SessionID != p.SessionID || c.Type != want {
				t.Fatalf("Check says (%q, %q), Prepare (%q, %q)", c.Type, c.SessionID, p.Type, p.SessionID)
			}
		}
	})
}
