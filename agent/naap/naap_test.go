package naap

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/agent/naap/naaptest"
	"github.com/livepeer/edgerelay/envelope"
)

const (
	testAddr = "0x9727B492c4af6c4a8caf4cc1ba6fbb332206d794" // EIP-55 mixed case
	lowAddr  = "0x9727b492c4af6c4a8caf4cc1ba6fbb332206d794"
	testURL  = "https://orch.example.net:8935"
)

var testNow = time.UnixMilli(1767908945298)

// testOptions are the stamper's options of an agent in NAAP mode: the node's
// address and region are its identity, the mapping has the URL.
func testOptions(o Options) envelope.StamperOptions {
	node := envelope.Identity{"host": "node-1"}
	if o.OrchestratorAddress != "" {
		node["orchestrator_address"] = o.OrchestratorAddress
	}
	if o.Region != "" {
		node["region"] = o.Region
	}
	return envelope.StamperOptions{
		Node:    node,
		Gateway: "gw",
		Now:     func() time.Time { return testNow },
		Session: func(id string) envelope.Identity {
			if id == "sess-1" {
				return envelope.Identity{"session_id": "sess-1", "stream_id": "stream-1", "orchestrator_address": "0xAAAA"}
			}
			return nil
		},
		Mapping: NewMapping(o),
	}
}

func testStamper() *envelope.Stamper {
	return envelope.NewStamper(testOptions(Options{OrchestratorAddress: testAddr, OrchestratorURL: testURL, Region: "eu-west"}))
}

type env struct {
	ID        string                     `json:"id"`
	Type      string                     `json:"type"`
	Timestamp string                     `json:"timestamp"`
	Gateway   *string                    `json:"gateway"`
	Data      map[string]json.RawMessage `json:"data"`
}

func decode(t *testing.T, b []byte) env {
	t.Helper()
	var e env
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return e
}

// afterID is an envelope the stamper wrote, without its random id.
func afterID(b []byte) string { return string(b[len(`{"id":"0194b7c4-6f2a-7c3e-9a51-2f0e6d1b8a90`):]) }

// TestStampOwnEvent: a family the pipeline does not take travels as
// ai_stream_events with its own family as data.type and the node's
// dimensions, in data's key order; the agent's own sources (Stamp) and the
// local API (Prepare) write the same bytes.
func TestStampOwnEvent(t *testing.T) {
	s := testStamper()
	out, err := s.Stamp("gpu_memory_sample", map[string]any{
		"device_used_bytes": json.Number("123456789012"),
		"gpu_id":            "GPU-5e1d0000-0000-4000-8000-000000000000",
		"metadata":          map[string]string{"allocator_source": "none"},
		"ratio":             json.RawMessage("1.50"),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := envelope.Check(out); err != nil {
		t.Fatalf("mapped envelope fails Check: %v\n%s", err, out)
	}
	want := `","type":"ai_stream_events","timestamp":"1767908945298","gateway":"gw","data":{"client_source":"edgerelay","device_used_bytes":123456789012,"gpu_id":"GPU-5e1d0000-0000-4000-8000-000000000000","host":"node-1","metadata":{"allocator_source":"none"},"orchestrator_address":"` + lowAddr + `","orchestrator_info":{"address":"` + lowAddr + `","url":"` + testURL + `"},"ratio":1.50,"region":"eu-west","type":"gpu_memory_sample"}}`
	if got := afterID(out); got != want {
		t.Fatalf("mapped:\n got %s\nwant %s", got, want)
	}
	p, err := s.Prepare([]byte(`{"type":"gpu_memory_sample","data":{"ratio":1.50,"metadata":{"allocator_source":"none"},"gpu_id":"GPU-5e1d0000-0000-4000-8000-000000000000","device_used_bytes":123456789012}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := afterID(p.Env); got != want {
		t.Errorf("Prepare:\n got %s\nwant %s", got, want)
	}
	if p.Type != "gpu_memory_sample" {
		t.Errorf("Prepared.Type %q: want the native family", p.Type)
	}
	in := naaptest.NewIngest()
	rec, why := in.Take(out)
	if why != "" {
		t.Fatalf("the pipeline would not take it: %s", why)
	}
	if rec.Family != "ai_stream_events" || rec.Subtype != "gpu_memory_sample" {
		t.Errorf("recorded as %s/%s", rec.Family, rec.Subtype)
	}
	if p := naaptest.Dimensions(rec.Data, false, true); len(p) > 0 {
		t.Errorf("dimensions: %v", p)
	}
	o := testOptions(Options{})
	o.Mapping = nil
	native, err := envelope.NewStamper(o).Stamp("gpu_memory_sample", map[string]any{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, why := naaptest.NewIngest().Take(native); why != naaptest.UnsupportedFamily {
		t.Errorf("the native envelope: %q, want %s", why, naaptest.UnsupportedFamily)
	}
}

// TestStampCases covers the other rules of the package doc, through the
// local API's stamping.
func TestStampCases(t *testing.T) {
	s := testStamper()
	nodeInfo := `{"address":"` + lowAddr + `","url":"` + testURL + `"}`
	for _, tc := range []struct {
		name, in string
		typ      string            // want top-level type
		data     map[string]string // want data members (raw JSON)
		absent   []string          // data members that must not be there
	}{
		{
			name: "accepted family keeps its type",
			in:   `{"type":"ai_stream_status","data":{"type":"status"}}`,
			typ:  "ai_stream_status",
			data: map[string]string{"type": `"status"`, "orchestrator_address": `"` + lowAddr + `"`, "orchestrator_info": nodeInfo, "region": `"eu-west"`},
		},
		{
			name: "no data.type: the family becomes it",
			in:   `{"type":"host_network_sample","data":{"interface":"eth0"}}`,
			typ:  "ai_stream_events",
			data: map[string]string{"type": `"host_network_sample"`, "interface": `"eth0"`},
		},
		{
			name: "a subtype the producer chose is kept",
			in:   `{"type":"runner_event","data":{"type":"frame_dropped"}}`,
			typ:  "ai_stream_events",
			data: map[string]string{"type": `"frame_dropped"`},
		},
		{
			name: "the event's own address is lower-cased and keeps the node's url out",
			in:   `{"type":"k","data":{"orchestrator_address":"0xABCDEF0123456789ABCDEF0123456789ABCDEF01","region":"us"}}`,
			typ:  "ai_stream_events",
			data: map[string]string{
				"orchestrator_address": `"0xabcdef0123456789abcdef0123456789abcdef01"`,
				"orchestrator_info":    `{"address":"0xabcdef0123456789abcdef0123456789abcdef01"}`,
				"region":               `"us"`,
			},
		},
		{
			name: "the node's address in another case is the node's",
			in:   `{"type":"k","data":{"orchestrator_address":"` + testAddr + `"}}`,
			typ:  "ai_stream_events",
			data: map[string]string{"orchestrator_address": `"` + lowAddr + `"`, "orchestrator_info": nodeInfo},
		},
		{
			name: "the session's address is lower-cased, without the node's url",
			in:   `{"type":"k","data":{"session_id":"sess-1"}}`,
			typ:  "ai_stream_events",
			data: map[string]string{"orchestrator_address": `"0xaaaa"`, "orchestrator_info": `{"address":"0xaaaa"}`, "stream_id": `"stream-1"`},
		},
		{
			name: "relayed_via in a posted event is one more member of data",
			in:   `{"type":"gpu_memory_sample","data":{"relayed_via":"trickle"}}`,
			typ:  "ai_stream_events",
			data: map[string]string{"relayed_via": `"trickle"`, "orchestrator_address": `"` + lowAddr + `"`, "orchestrator_info": nodeInfo, "region": `"eu-west"`},
		},
		{
			name: "an orchestrator_info already there is kept",
			in:   `{"type":"k","data":{"orchestrator_info":{"address":"x","url":"y"}}}`,
			typ:  "ai_stream_events",
			data: map[string]string{"orchestrator_info": `{"address":"x","url":"y"}`},
		},
		{
			name:   "an address that is not a string gets no orchestrator_info",
			in:     `{"type":"k","data":{"orchestrator_address":42}}`,
			typ:    "ai_stream_events",
			data:   map[string]string{"orchestrator_address": `42`},
			absent: []string{"orchestrator_info"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := s.Prepare([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := envelope.Check(p.Env); err != nil {
				t.Fatalf("Check: %v\n%s", err, p.Env)
			}
			e := decode(t, p.Env)
			if e.Type != tc.typ {
				t.Errorf("type %q, want %q", e.Type, tc.typ)
			}
			if e.Timestamp != "1767908945298" {
				t.Errorf("timestamp %q", e.Timestamp)
			}
			var in struct{ Type string }
			json.Unmarshal([]byte(tc.in), &in)
			if p.Type != in.Type {
				t.Errorf("Prepared.Type %q, want the native family %q", p.Type, in.Type)
			}
			for k, v := range tc.data {
				if got := string(e.Data[k]); got != v {
					t.Errorf("data.%s = %s, want %s", k, got, v)
				}
			}
			for _, k := range tc.absent {
				if _, ok := e.Data[k]; ok {
					t.Errorf("data.%s present: %s", k, p.Env)
				}
			}
			if _, why := naaptest.NewIngest().Take(p.Env); why != "" {
				t.Errorf("the pipeline would not take it: %s\n%s", why, p.Env)
			}
		})
	}
}

// TestPrebuiltUntouched: an envelope a producer built is forwarded byte for
// byte in NAAP mode too.
func TestPrebuiltUntouched(t *testing.T) {
	s := testStamper()
	for _, in := range []string{
		`{"id":"r1","type":"runner_metric","timestamp":"1","data":{"client_source":"scope","x":1}}`,
		`{"id":"r2","type":"runner_metric","timestamp":"1","data":{"x":2,"orchestrator_address":"0xAB"}}`,
		`{"id":"r3","type":"ai_stream_status","timestamp":"1","data":{"type":"status"}}`,
		`{"id":"r4","type":"gpu_memory_sample","timestamp":"1","data":{"client_source":"edgerelay","relayed_via":"trickle"}}`,
	} {
		p, err := s.Prepare([]byte(in))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if string(p.Env) != in {
			t.Errorf("changed:\n%s\n%s", in, p.Env)
		}
	}
}

// TestUnknownDimensions: without node dimensions nothing but the family
// moves.
func TestUnknownDimensions(t *testing.T) {
	s := envelope.NewStamper(testOptions(Options{}))
	p, err := s.Prepare([]byte(`{"type":"k","data":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `","type":"ai_stream_events","timestamp":"1767908945298","gateway":"gw","data":{"client_source":"edgerelay","host":"node-1","type":"k"}}`
	if got := afterID(p.Env); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}
