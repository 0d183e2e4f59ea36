package naaptest

import (
	"strings"
	"testing"
)

// TestTake: the model takes and refuses records as spec/naap.md says.
func TestTake(t *testing.T) {
	in := NewIngest()
	for _, tc := range []struct {
		name, rec, want string
	}{
		{"an accepted family", `{"id":"a1","type":"ai_stream_status","timestamp":"1767908945298","gateway":"g","data":{"type":"status"}}`, ""},
		{"ai_stream_events whatever its subtype", `{"id":"a2","type":"ai_stream_events","timestamp":"1767908945298","data":{"type":"anything"}}`, ""},
		{"a family it does not take", `{"id":"a3","type":"gpu_memory_sample","timestamp":"1767908945298","data":{}}`, UnsupportedFamily},
		{"an empty id", `{"id":"","type":"ai_stream_events","timestamp":"1767908945298","data":{}}`, EmptyID},
		{"no id at all", `{"type":"ai_stream_events","timestamp":"1767908945298","data":{}}`, EmptyID},
		{"a lifecycle edge", `{"id":"t1","type":"stream_trace","timestamp":"1767908945298","data":{"type":"gateway_receive_stream_request","stream_id":"s","request_id":"r"}}`, ""},
		{"an app trace", `{"id":"t2","type":"stream_trace","timestamp":"1767908945298","data":{"type":"app_send_stream_request","stream_id":"s","request_id":"r"}}`, TraceNonCoreApp},
		{"Scope client noise", `{"id":"t3","type":"stream_trace","timestamp":"1767908945298","data":{"type":"stream_heartbeat","client_source":"Scope"}}`, TraceScopeNoise},
		{"another trace subtype", `{"id":"t4","type":"stream_trace","timestamp":"1767908945298","data":{"type":"gpu_memory_sample"}}`, TraceUnsupportedType},
		{"a trace without request_id", `{"id":"t5","type":"stream_trace","timestamp":"1767908945298","data":{"type":"orchestrator_swap","stream_id":"s"}}`, Malformed},
		{"seconds, not milliseconds", `{"id":"a4","type":"ai_stream_events","timestamp":"1767908945","data":{}}`, BadTimestamp},
		{"a number timestamp", `{"id":"a5","type":"ai_stream_events","timestamp":1767908945298,"data":{}}`, Malformed},
		{"data.version 2", `{"id":"a6","type":"ai_stream_events","timestamp":"1767908945298","data":{"version":"2"}}`, BadVersion},
		{"version v1", `{"id":"a7","type":"ai_stream_events","timestamp":"1767908945298","version":"v1","data":{}}`, ""},
		{"no data", `{"id":"a8","type":"ai_stream_events","timestamp":"1767908945298"}`, Malformed},
		{"the same id again", `{"id":"a1","type":"ai_stream_status","timestamp":"1767908946298","data":{"type":"status"}}`, Duplicate},
		{"the same id a day later", `{"id":"a1","type":"ai_stream_status","timestamp":"1767995345298","data":{"type":"status"}}`, ""},
		{"not JSON", `{"id":`, Malformed},
		{"over 1,000,000 bytes", `{"id":"big","type":"ai_stream_events","timestamp":"1767908945298","data":{"x":"` + strings.Repeat("a", MaxRowBytes) + `"}}`, TooLarge},
	} {
		if _, got := in.Take([]byte(tc.rec)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestDimensions: what the APIs join on.
func TestDimensions(t *testing.T) {
	addr := "0x9727b492c4af6c4a8caf4cc1ba6fbb332206d794"
	good := map[string]any{
		"orchestrator_address": addr, "orchestrator_info": map[string]any{"address": addr, "url": "https://o:8935"},
		"region": "eu", "stream_id": "s", "request_id": "r", "pipeline": "p", "model_id": "m",
		"gpu_id": "GPU-5e1d0000-0000-4000-8000-000000000000",
	}
	if p := Dimensions(good, true, true); len(p) != 0 {
		t.Errorf("good: %v", p)
	}
	bad := map[string]any{"orchestrator_address": strings.ToUpper(addr), "gpu_id": "0"}
	if p := Dimensions(bad, true, true); len(p) != 8 {
		t.Errorf("bad: %d problems, want 8: %v", len(p), p)
	}
}
