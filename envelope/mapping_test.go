package envelope

import (
	"encoding/json"
	"testing"
	"time"
)

// TestMapping: the rules of Mapping, through Prepare (the fast path and
// the general path) and Stamp: the exact data each event gets.
func TestMapping(t *testing.T) {
	fixed := time.UnixMilli(1767908945298)
	const (
		node = `"0xabcdef0123456789abcdef0123456789abcdef01"`
		url  = `"https://orch.example.net:8935/\u003c\u0026\u003e"`
	)
	st := func(node Identity, m *Mapping) *Stamper {
		return NewStamper(StamperOptions{
			Node:    node,
			Gateway: "gw",
			Now:     func() time.Time { return fixed },
			Session: func(id string) Identity {
				if id == "s1" {
					return Identity{"session_id": "s1", "orchestrator_address": "0xSESSION"}
				}
				return nil
			},
			Mapping: m,
		})
	}
	full := st(Identity{"host": "h", "orchestrator_address": "0xABCDEF0123456789abcdef0123456789ABCDEF01", "region": "eu"}, testMapping)
	noAddr := st(nil, testMapping)
	bare := st(nil, &Mapping{Accepted: testMapping.Accepted, Family: testMapping.Family})
	for _, tc := range []struct {
		name     string
		s        *Stamper
		in       string
		typ      string // the envelope's type
		wantData string
	}{
		{
			name:     "other family: ai_stream_events, the node's address lower-cased, its info in key order",
			s:        full,
			in:       `{"type":"gpu_memory_sample","data":{"x":1,"pipeline":"p"}}`,
			typ:      "ai_stream_events",
			wantData: `{"client_source":"edgerelay","host":"h","orchestrator_address":` + node + `,"orchestrator_info":{"address":` + node + `,"url":` + url + `},"pipeline":"p","region":"eu","type":"gpu_memory_sample","x":1}`,
		},
		{
			name:     "accepted family kept, subtype kept",
			s:        full,
			in:       `{"type":"ai_stream_status","data":{"type":"status"}}`,
			typ:      "ai_stream_status",
			wantData: `{"client_source":"edgerelay","host":"h","orchestrator_address":` + node + `,"orchestrator_info":{"address":` + node + `,"url":` + url + `},"region":"eu","type":"status"}`,
		},
		{
			name:     "data's address (the node's, other case) is the node's",
			s:        full,
			in:       `{"type":"k","data":{"orchestrator_address":"0xABCDEF0123456789ABCDEF0123456789ABCDEF01"}}`,
			typ:      "ai_stream_events",
			wantData: `{"client_source":"edgerelay","host":"h","orchestrator_address":` + node + `,"orchestrator_info":{"address":` + node + `,"url":` + url + `},"region":"eu","type":"k"}`,
		},
		{
			name:     "data's own address: lower-cased, no url",
			s:        full,
			in:       `{"type":"k","data":{"orchestrator_address":"0xFF<"}}`,
			typ:      "ai_stream_events",
			wantData: `{"client_source":"edgerelay","host":"h","orchestrator_address":"0xff\u003c","orchestrator_info":{"address":"0xff\u003c"},"region":"eu","type":"k"}`,
		},
		{
			name:     "the session's address: lower-cased, no url",
			s:        full,
			in:       `{"type":"k","data":{"session_id":"s1"}}`,
			typ:      "ai_stream_events",
			wantData: `{"client_source":"edgerelay","host":"h","orchestrator_address":"0xsession","orchestrator_info":{"address":"0xsession"},"region":"eu","session_id":"s1","type":"k"}`,
		},
		{
			name:     "an address that is not a string: kept, no info",
			s:        full,
			in:       `{"type":"k","data":{"orchestrator_address":{"A":1}}}`,
			typ:      "ai_stream_events",
			wantData: `{"client_source":"edgerelay","host":"h","orchestrator_address":{"A":1},"region":"eu","type":"k"}`,
		},
		{
			name:     "data's own info is kept",
			s:        full,
			in:       `{"type":"k","data":{"orchestrator_info":{"address":"X"}}}`,
			typ:      "ai_stream_events",
			wantData: `{"client_source":"edgerelay","host":"h","orchestrator_address":` + node + `,"orchestrator_info":{"address":"X"},"region":"eu","type":"k"}`,
		},
		{
			name:     "no node dimensions: only the family moves",
			s:        bare,
			in:       `{"type":"k","data":{}}`,
			typ:      "ai_stream_events",
			wantData: `{"client_source":"edgerelay","type":"k"}`,
		},
		{
			name:     "no node address: the url alone",
			s:        noAddr,
			in:       `{"type":"k","data":{}}`,
			typ:      "ai_stream_events",
			wantData: `{"client_source":"edgerelay","orchestrator_info":{"url":` + url + `},"type":"k"}`,
		},
		{
			name:     "no node address: data's address without the url",
			s:        noAddr,
			in:       `{"type":"k","data":{"orchestrator_address":"0xA"}}`,
			typ:      "ai_stream_events",
			wantData: `{"client_source":"edgerelay","orchestrator_address":"0xa","orchestrator_info":{"address":"0xa"},"type":"k"}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := []byte(tc.in)
			ms, _ := members(raw, nil)
			fast, ok := tc.s.prepareFast(raw, ms)
			if !ok {
				t.Fatal("the fast path declined")
			}
			slow, err := tc.s.prepareSlow(raw, ms)
			if err != nil {
				t.Fatal(err)
			}
			var in struct {
				Type string
				Data map[string]any
			}
			if err := json.Unmarshal(raw, &in); err != nil {
				t.Fatal(err)
			}
			own, err := tc.s.Stamp(in.Type, in.Data, tc.s.o.Session(stringOf(in.Data["session_id"])))
			if err != nil {
				t.Fatal(err)
			}
			want := `","type":"` + tc.typ + `","timestamp":"1767908945298","gateway":"gw","data":` + tc.wantData + `}`
			for _, got := range []struct {
				path string
				env  []byte
			}{{"fast", fast.Env}, {"general", slow.Env}, {"Stamp", own}} {
				if string(got.env[43:]) != want {
					t.Errorf("%s:\n got %s\nwant %s", got.path, got.env[43:], want)
				}
				if _, err := Check(got.env); err != nil {
					t.Errorf("%s: Check: %v", got.path, err)
				}
			}
			if fast.Type != in.Type || slow.Type != in.Type {
				t.Errorf("Prepared.Type %q, %q: want the native family %q", fast.Type, slow.Type, in.Type)
			}
		})
	}
}

// TestMappingMaxBytes: the size check sees the mapped envelope.
func TestMappingMaxBytes(t *testing.T) {
	o := StamperOptions{Node: Identity{"orchestrator_address": "0xABCDEF0123456789abcdef0123456789ABCDEF01"}}
	raw := []byte(`{"type":"k","data":{"x":1}}`)
	p, err := NewStamper(o).Prepare(raw)
	if err != nil {
		t.Fatal(err)
	}
	o.MaxBytes, o.Mapping = len(p.Env)+10, testMapping
	s := NewStamper(o)
	if _, err := s.Prepare(raw); err == nil {
		t.Fatal("a mapped envelope over MaxBytes was accepted")
	}
	ms, _ := members(raw, nil)
	if _, ok := s.prepareFast(raw, ms); ok {
		t.Error("the fast path took a mapped envelope over MaxBytes")
	}
}

func stringOf(v any) string {
	s, _ := v.(string)
	return s
}
