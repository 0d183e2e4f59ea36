package naap

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/livepeer/edgerelay/agent/naap/naaptest"
	"github.com/livepeer/edgerelay/envelope"
)

const (
	testAddr = "0x9727B492c4af6c4a8caf4cc1ba6fbb332206d794" // EIP-55 mixed case
	lowAddr  = "0x9727b492c4af6c4a8caf4cc1ba6fbb332206d794"
	testURL  = "https://orch.example.net:8935"
)

func testMapper() *Mapper {
	return New(Options{OrchestratorAddress: testAddr, OrchestratorURL: testURL, Region: "eu-west"})
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

// TestMapOwnEvent: a family the pipeline does not take travels as
// ai_stream_events with its own family as data.type, the node's dimensions
// added, and everything else byte for byte.
func TestMapOwnEvent(t *testing.T) {
	m := testMapper()
	in := []byte(`{"id":"0194b7c4-6f2a-7c3e-9a51-2f0e6d1b8a90","type":"gpu_memory_sample","timestamp":"1767908945298","gateway":"gw","data":{"client_source":"edgerelay","device_used_bytes":123456789012,"gpu_id":"GPU-5e1d0000-0000-4000-8000-000000000000","metadata":{"allocator_source":"none"},"ratio":1.50,"type":"gpu_memory_sample"}}`)
	out := m.Map(in)
	if _, err := envelope.Check(out); err != nil {
		t.Fatalf("mapped envelope fails Check: %v\n%s", err, out)
	}
	want := `{"id":"0194b7c4-6f2a-7c3e-9a51-2f0e6d1b8a90","type":"ai_stream_events","timestamp":"1767908945298","gateway":"gw","data":{"client_source":"edgerelay","device_used_bytes":123456789012,"gpu_id":"GPU-5e1d0000-0000-4000-8000-000000000000","metadata":{"allocator_source":"none"},"ratio":1.50,"type":"gpu_memory_sample","orchestrator_address":"` + lowAddr + `","orchestrator_info":{"address":"` + lowAddr + `","url":"` + testURL + `"},"region":"eu-west"}}`
	if string(out) != want {
		t.Fatalf("mapped:\n got %s\nwant %s", out, want)
	}
	if len(out) > len(in)+m.Growth() {
		t.Errorf("grew by %d, Growth says at most %d", len(out)-len(in), m.Growth())
	}
	if again := m.Map(out); !bytes.Equal(again, out) {
		t.Errorf("mapping twice changes it:\n%s\n%s", out, again)
	}
	in2 := naaptest.NewIngest()
	rec, why := in2.Take(out)
	if why != "" {
		t.Fatalf("the pipeline would not take it: %s", why)
	}
	if rec.Family != "ai_stream_events" || rec.Subtype != "gpu_memory_sample" {
		t.Errorf("recorded as %s/%s", rec.Family, rec.Subtype)
	}
	if p := naaptest.Dimensions(rec.Data, false, true); len(p) > 0 {
		t.Errorf("dimensions: %v", p)
	}
	if _, why := naaptest.NewIngest().Take(in); why != naaptest.UnsupportedFamily {
		t.Errorf("the native envelope: %q, want %s", why, naaptest.UnsupportedFamily)
	}
}

// TestMapCases covers the other rules of the package doc.
func TestMapCases(t *testing.T) {
	m := testMapper()
	for _, tc := range []struct {
		name, in string
		typ      string            // want top-level type
		data     map[string]string // want data members (raw JSON)
		absent   []string          // data members that must not be there
	}{
		{
			name: "accepted family keeps its type",
			in:   `{"id":"a","type":"ai_stream_status","timestamp":"1767908945298","gateway":"","data":{"client_source":"edgerelay","type":"status"}}`,
			typ:  "ai_stream_status",
			data: map[string]string{"type": `"status"`, "orchestrator_address": `"` + lowAddr + `"`, "region": `"eu-west"`},
		},
		{
			name: "no data.type: the family becomes it",
			in:   `{"id":"a","type":"host_network_sample","timestamp":"1767908945298","data":{"client_source":"edgerelay","interface":"eth0"}}`,
			typ:  "ai_stream_events",
			data: map[string]string{"type": `"host_network_sample"`, "interface": `"eth0"`},
		},
		{
			name: "a subtype the producer chose is kept",
			in:   `{"id":"a","type":"runner_event","timestamp":"1767908945298","data":{"client_source":"edgerelay","type":"frame_dropped"}}`,
			typ:  "ai_stream_events",
			data: map[string]string{"type": `"frame_dropped"`},
		},
		{
			name: "the event's own address is lower-cased and keeps the node's url out",
			in:   `{"id":"a","type":"k","timestamp":"1767908945298","data":{"client_source":"edgerelay","orchestrator_address":"0xABCDEF0123456789ABCDEF0123456789ABCDEF01","region":"us"}}`,
			typ:  "ai_stream_events",
			data: map[string]string{
				"orchestrator_address": `"0xabcdef0123456789abcdef0123456789abcdef01"`,
				"orchestrator_info":    `{"address":"0xabcdef0123456789abcdef0123456789abcdef01"}`,
				"region":               `"us"`,
			},
		},
		{
			name:   "relayed: the origin's dimensions only",
			in:     `{"id":"a","type":"gpu_memory_sample","timestamp":"1767908945298","data":{"client_source":"edgerelay","relayed_via":"trickle","orchestrator_address":"0xABCDEF0123456789ABCDEF0123456789ABCDEF01"}}`,
			typ:    "ai_stream_events",
			data:   map[string]string{"orchestrator_info": `{"address":"0xabcdef0123456789abcdef0123456789abcdef01"}`},
			absent: []string{"region"},
		},
		{
			name:   "relayed without an address gets none",
			in:     `{"id":"a","type":"gpu_memory_sample","timestamp":"1767908945298","data":{"client_source":"edgerelay","relayed_via":"trickle"}}`,
			typ:    "ai_stream_events",
			absent: []string{"orchestrator_address", "orchestrator_info", "region"},
		},
		{
			name: "an orchestrator_info already there is kept",
			in:   `{"id":"a","type":"k","timestamp":"1767908945298","data":{"client_source":"edgerelay","orchestrator_info":{"address":"x","url":"y"}}}`,
			typ:  "ai_stream_events",
			data: map[string]string{"orchestrator_info": `{"address":"x","url":"y"}`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := m.Map([]byte(tc.in))
			if _, err := envelope.Check(out); err != nil {
				t.Fatalf("Check: %v\n%s", err, out)
			}
			if len(out) > len(tc.in)+m.Growth() {
				t.Errorf("grew by %d, Growth says at most %d", len(out)-len(tc.in), m.Growth())
			}
			e := decode(t, out)
			if e.Type != tc.typ {
				t.Errorf("type %q, want %q", e.Type, tc.typ)
			}
			if e.ID != "a" || e.Timestamp != "1767908945298" {
				t.Errorf("id or timestamp changed: %s", out)
			}
			for k, v := range tc.data {
				if got := string(e.Data[k]); got != v {
					t.Errorf("data.%s = %s, want %s", k, got, v)
				}
			}
			for _, k := range tc.absent {
				if _, ok := e.Data[k]; ok {
					t.Errorf("data.%s present: %s", k, out)
				}
			}
		})
	}
}

// TestMapForeign: an envelope another producer stamped is kept byte for
// byte.
func TestMapForeign(t *testing.T) {
	m := testMapper()
	for _, in := range []string{
		`{"id":"r1","type":"runner_metric","timestamp":"1","data":{"client_source":"scope","x":1}}`,
		`{"id":"r2","type":"runner_metric","timestamp":"1","data":{"x":2}}`,
		`{"id":"r3","type":"ai_stream_status","timestamp":"1","data":{"type":"status"}}`,
		`{"id":"r4","type":"o","timestamp":"1","data":[1,2]}`,
	} {
		if out := m.Map([]byte(in)); string(out) != in {
			t.Errorf("changed:\n%s\n%s", in, out)
		}
	}
}

// TestGrowthUnknownDimensions: without node dimensions nothing but the
// family moves.
func TestGrowthUnknownDimensions(t *testing.T) {
	m := New(Options{})
	in := `{"id":"a","type":"k","timestamp":"1767908945298","data":{"client_source":"edgerelay"}}`
	out := m.Map([]byte(in))
	want := `{"id":"a","type":"ai_stream_events","timestamp":"1767908945298","data":{"client_source":"edgerelay","type":"k"}}`
	if string(out) != want {
		t.Fatalf("got %s\nwant %s", out, want)
	}
}

func BenchmarkMap(b *testing.B) {
	m := testMapper()
	in := []byte(`{"id":"0194b7c4-6f2a-7c3e-9a51-2f0e6d1b8a90","type":"gpu_memory_sample","timestamp":"1767908945298","gateway":"","data":{"allocator_active_bytes":null,"allocator_allocated_bytes":0,"allocator_change_bytes":0,"allocator_inactive_bytes":null,"allocator_reserved_bytes":0,"client_source":"edgerelay","collector":"edgerelay.nvml","context":null,"device_free_bytes":1234,"device_id":0,"device_total_bytes":85899345920,"device_used_bytes":4567,"event_type":"sample","gpu_id":"GPU-5e1d0000-0000-4000-8000-000000000000","host":"node-1","job_id":null,"local_rank":0,"memory_info_version":"v2","memory_reserved_bytes":536870912,"metadata":{"allocator_source":"none"},"name":"NVIDIA H100 80GB HBM3","node_id":"n1","pci_bus_id":"00000000:18:00.0","pid":-1,"power_mw":300000,"rank":0,"region":"eu","sampling_interval_ms":1000,"schema_version":3,"session_id":"edgerelay-x","sm_clock_mhz":1980,"temperature_c":40,"timestamp_ns":1767908945298000000,"type":"gpu_memory_sample","utilization_gpu_pct":50,"utilization_memory_pct":20,"world_size":1}}`)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		m.Map(in)
	}
}
