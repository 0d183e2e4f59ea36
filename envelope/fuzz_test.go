package envelope

import (
	"bytes"
	"testing"
	"time"
)

// FuzzPrepare: on any item that passes Validate (Prepare's precondition), no
// panic; the fast path builds the general path's bytes (but the random id)
// or declines; what is accepted is one line and passes Check.
func FuzzPrepare(f *testing.F) {
	for _, s := range []string{
		`{"type":"a","data":{}}`,
		`{"type":"a","data":{"x":1,"s":"<&>","n":[1,{"k":"v"}]}}`,
		`{"id":"1","type":"t","timestamp":"1","gateway":"g","data":{"session_id":"s"}}`,
		"{\n \"id\": \"p\",\n \"type\": \"t\",\n \"timestamp\": \"3\",\n \"data\": {}\n}",
		`{"type":"a","data":{"host":null,"big":123456789012345678901234567890}}`,
		`{"type":"a","data":{"k":1,"k":2,"session_id":"s1"}}`,
		`{"type":"a","data":{"\u0068ost":"x"}}`,
	} {
		f.Add([]byte(s))
	}
	fixed := time.UnixMilli(1767908945298)
	s := NewStamper(StamperOptions{
		Node:     Identity{"host": "h", "node_id": "n"},
		Now:      func() time.Time { return fixed },
		Session:  func(id string) Identity { return Identity{"session_id": id, "stream_id": "st"} },
		MaxBytes: 4096,
	})
	f.Fuzz(func(t *testing.T, raw []byte) {
		if Validate(raw) != nil {
			return
		}
		ms, ok := members(raw, nil)
		if ok {
			if fast, ok := s.prepareFast(raw, ms); ok {
				slow, err := s.prepareSlow(raw, ms)
				if err != nil || !bytes.Equal(fast.Env[44:], slow.Env[44:]) || fast.SessionID != slow.SessionID || fast.Type != slow.Type {
					t.Fatalf("fast and general paths differ (%v):\nfast %s\ngen  %s", err, fast.Env, slow.Env)
				}
			}
		}
		p, err := s.Prepare(raw)
		if err != nil {
			return
		}
		if bytes.ContainsAny(p.Env, "\n\r") {
			t.Fatalf("envelope spans lines: %q", p.Env)
		}
		c, err := Check(p.Env)
		if err != nil {
			t.Fatalf("prepared envelope fails Check: %v\n%s", err, p.Env)
		}
		if c.Type != p.Type || c.SessionID != p.SessionID {
			t.Fatalf("Check says (%q, %q), Prepare (%q, %q)", c.Type, c.SessionID, p.Type, p.SessionID)
		}
	})
}
