package telemetry

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// baseV3 is a valid v3 record every rule test starts from.
const baseV3 = `{"schema_version":3,"session_id":"sess-1","timestamp_ns":1767908945298000000,
"event_type":"sample","collector":"stormlog.cuda_tracker","sampling_interval_ms":100,"pid":4242,
"host":"node-a","device_id":0,"allocator_allocated_bytes":1048576,"allocator_reserved_bytes":2097152,
"allocator_active_bytes":1048576,"allocator_inactive_bytes":0,"allocator_change_bytes":-4096,
"device_used_bytes":3145728,"device_free_bytes":1000000,"device_total_bytes":80000000000,
"context":null,"metadata":{}}`

// edit returns base with fields set to raw JSON values and fields deleted,
// keys sorted. The values are written as given, so they may be what only
// Python's json reads (NaN, Infinity).
func edit(t testing.TB, base string, set map[string]string, del ...string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(base), &m); err != nil {
		t.Fatalf("base: %v", err)
	}
	for k, v := range set {
		m[k] = json.RawMessage(v)
	}
	for _, k := range del {
		delete(m, k)
	}
	keys := slices.Sorted(maps.Keys(m))
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		b.Write(m[k])
	}
	b.WriteByte('}')
	return b.Bytes()
}

// v2 is baseV3 as a v2 record.
func v2(t testing.TB, set map[string]string, del ...string) json.RawMessage {
	t.Helper()
	b := edit(t, baseV3, map[string]string{"schema_version": "2"}, "session_id")
	return edit(t, string(b), set, del...)
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
