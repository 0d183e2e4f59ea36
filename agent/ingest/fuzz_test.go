package ingest

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/envelope"
)

// FuzzIngestBody feeds arbitrary bodies through the /v1/events parser and
// the per-item preparation. Properties: no panic; every accepted item yields
// a single-line envelope that passes envelope.Check; a prebuilt envelope
// without line breaks comes out byte for byte.
func FuzzIngestBody(f *testing.F) {
	for _, s := range []string{
		`{"type":"a","data":{}}`,
		`[{"type":"a","data":{"x":1}},{"id":"1","type":"b","timestamp":"2","data":[]}]`,
		"{\"type\":\"a\",\"data\":{}}\n{bad\n{\"id\":\"e\",\"type\":\"t\",\"timestamp\":\"9\",\"data\":{}}\n",
		`{"id":"1","type":"t","timestamp":"1","gateway":"g","data":{"session_id":"s"}}`,
		`[1,"x",null,{}]`,
		"{\n \"id\": \"p\",\n \"type\": \"t\",\n \"timestamp\": \"3\",\n \"data\": {}\n}",
		`{"type":"a","data":{"host":null,"big":123456789012345678901234567890}}`,
	} {
		f.Add([]byte(s))
	}
	fixed := time.UnixMilli(1767908945298)
	a := &Server{Stamper: envelope.NewStamper(envelope.StamperOptions{
		Node: envelope.Identity{"host": "h"}, Now: func() time.Time { return fixed }, MaxBytes: 4096,
	})}
	f.Fuzz(func(t *testing.T, body []byte) {
		items, err := splitItems(body)
		if err != nil {
			return
		}
		for _, it := range items {
			if it.err != nil {
				continue
			}
			p, err := a.prepareEvent(it.raw)
			if err != nil {
				continue
			}
			env, typ := p.Env, p.Type
			if bytes.ContainsAny(env, "\n\r") {
				t.Fatalf("envelope spans lines: %q", env)
			}
			ce, err := envelope.Check(env)
			if err != nil {
				t.Fatalf("prepared envelope fails its own check: %v\n%s", err, env)
			}
			if ce.Type != typ {
				t.Fatalf("type %q vs %q", ce.Type, typ)
			}
			var m map[string]json.RawMessage
			json.Unmarshal(it.raw, &m)
			if _, prebuilt := m["id"]; prebuilt && !bytes.ContainsAny(it.raw, "\n\r") && !bytes.Equal(env, it.raw) {
				t.Fatalf("prebuilt envelope changed:\n in %s\nout %s", it.raw, env)
			}
		}
	})
}
