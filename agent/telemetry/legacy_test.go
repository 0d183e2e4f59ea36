package telemetry

import (
	"encoding/json"
	"strings"
	"testing"
)

// Legacy conversion, one case per source field of spec/stormlog.md "Legacy
// records", as stormlog's reference module converts it (values from
// float seconds are what stormlog itself produced). want holds the output
// fields to check, as raw JSON.
func TestNormalizeLegacy(t *testing.T) {
	const ts = `"timestamp_ns":5`
	cases := []struct {
		name string
		in   string
		want map[string]string
		meta map[string]string // metadata keys to check (raw JSON; "absent" = must not exist)
		err  string
	}{
		// timestamp
		{name: "timestamp_ns kept", in: `{"timestamp_ns":1767908945298000123}`, want: map[string]string{"timestamp_ns": "1767908945298000123"}},
		{name: "timestamp seconds through float64", in: `{"timestamp":1767908945.298}`, want: map[string]string{"timestamp_ns": "1767908945298000128"}},
		{name: "timestamp integer seconds", in: `{"timestamp":12}`, want: map[string]string{"timestamp_ns": "12000000000"}},
		{name: "timestamp exponent", in: `{"timestamp":1.5e3}`, want: map[string]string{"timestamp_ns": "1500000000000"}},
		{name: "timestamp sub-ns truncated", in: `{"timestamp":1.0000000019}`, want: map[string]string{"timestamp_ns": "1000000001"}},
		{name: "timestamp_ns wins over timestamp", in: `{"timestamp_ns":7,"timestamp":99}`, want: map[string]string{"timestamp_ns": "7"}, meta: map[string]string{"timestamp": "absent"}},
		{name: "timestamp boolean", in: `{"timestamp":true}`, err: "timestamp: a legacy record needs timestamp_ns, or timestamp in seconds (got timestamp a boolean)"},
		{name: "timestamp string", in: `{"timestamp":"2024-01-01"}`, err: "timestamp: a legacy record needs timestamp_ns, or timestamp in seconds (got timestamp a string)"},
		{name: "timestamp NaN", in: `{"timestamp":NaN}`, err: "timestamp: NaN cannot be converted to an integer (nan once scaled)"},
		{name: "timestamp_ns fraction", in: `{"timestamp_ns":1.5}`, err: "timestamp_ns: must be an integer, got a number with a fraction or exponent (1.5)"},
		{name: "timestamp negative", in: `{"timestamp":-1}`, err: "timestamp_ns: must be >= 0, got -1000000000"},
		{name: "no timestamp", in: `{"memory_allocated":1}`, err: "timestamp: a legacy record needs timestamp_ns, or timestamp in seconds (got neither)"},
		{name: "timestamp beyond 64 bits", in: `{"timestamp":1e30}`, want: map[string]string{"timestamp_ns": "1000000000000000090824893823431825424384"}},
		{name: "timestamp huge exponent is cheap", in: `{"timestamp":1e999999999}`, err: "timestamp: 1e999999999 cannot be converted to an integer (inf once scaled)"},
		{name: "timestamp integer too large for a float", in: `{"timestamp":1` + strings.Repeat("0", 400) + `}`, err: "timestamp: 1" + strings.Repeat("0", 400) + " is too large to convert to a float"},
		{name: "memory_mb tiny exponent is cheap", in: `{"timestamp":1,"memory_mb":1e-999999999}`, want: map[string]string{"allocator_allocated_bytes": "0"}},
		{name: "timestamp long literal", in: `{"timestamp":1.` + strings.Repeat("1", 80) + `}`, want: map[string]string{"timestamp_ns": "1111111111"}},
		{name: "timestamp just below 0 truncates to 0", in: `{"timestamp":-1e-10}`, want: map[string]string{"timestamp_ns": "0"}},
		{name: "timestamp small exponent", in: `{"timestamp":15E-1}`, want: map[string]string{"timestamp_ns": "1500000000"}},

		// device
		{name: "device_id", in: `{` + ts + `,"device_id":3,"device":"cuda:1"}`, want: map[string]string{"device_id": "3"}},
		{name: "device cuda:1", in: `{` + ts + `,"device":"cuda:1"}`, want: map[string]string{"device_id": "1"}, meta: map[string]string{"device": "absent"}},
		{name: "device cpu", in: `{` + ts + `,"device":"CPU:0"}`, want: map[string]string{"device_id": "-1"}},
		{name: "device /gpu", in: `{` + ts + `,"device":"/GPU"}`, want: map[string]string{"device_id": "0"}},
		{name: "device /gpu:2", in: `{` + ts + `,"device":"/gpu:2"}`, want: map[string]string{"device_id": "2"}},
		{name: "device unknown dropped", in: `{` + ts + `,"device":"tpu"}`, want: map[string]string{"device_id": "-1"}, meta: map[string]string{"device": "absent"}},
		{name: "device ten digits", in: `{` + ts + `,"device":"cuda:1234567890"}`, want: map[string]string{"device_id": "1234567890"}},
		{name: "device beyond 64 bits", in: `{` + ts + `,"device":"cuda:123456789012345678901234"}`, want: map[string]string{"device_id": "123456789012345678901234"}},
		{name: "device Arabic-Indic digit", in: `{` + ts + `,"device":"cuda:٣"}`, want: map[string]string{"device_id": "3"}},
		{name: "device superscript digit", in: `{` + ts + `,"device":"cuda:²"}`, err: `device: "cuda:²": '²' is a digit to str.isdigit but not to int()`},
		{name: "device signed", in: `{` + ts + `,"device":"cuda:-1"}`, want: map[string]string{"device_id": "-1"}},
		{name: "device from memory_mb", in: `{` + ts + `,"memory_mb":1}`, want: map[string]string{"device_id": "0"}},
		{name: "no device", in: `{` + ts + `}`, want: map[string]string{"device_id": "-1"}},
		{name: "device_id boolean", in: `{` + ts + `,"device_id":false}`, err: "device_id: must be an integer, got a boolean"},

		// allocated
		{name: "allocated field", in: `{` + ts + `,"allocator_allocated_bytes":11,"memory_allocated":22}`, want: map[string]string{"allocator_allocated_bytes": "11"}},
		{name: "memory_allocated", in: `{` + ts + `,"memory_allocated":22,"memory_mb":1}`, want: map[string]string{"allocator_allocated_bytes": "22"}, meta: map[string]string{"memory_mb": "absent"}},
		{name: "memory_mb", in: `{` + ts + `,"memory_mb":1.5,"device_used_bytes":3}`, want: map[string]string{"allocator_allocated_bytes": "1572864", "device_used_bytes": "3"}},
		{name: "allocated from device_used_bytes", in: `{` + ts + `,"device_used_bytes":33}`, want: map[string]string{"allocator_allocated_bytes": "33", "device_used_bytes": "33"}},
		{name: "allocated default 0", in: `{` + ts + `}`, want: map[string]string{"allocator_allocated_bytes": "0", "allocator_reserved_bytes": "0", "allocator_change_bytes": "0", "device_used_bytes": "0"}},
		{name: "memory_allocated beyond 2^53", in: `{` + ts + `,"memory_allocated":9007199254740993}`, want: map[string]string{"allocator_allocated_bytes": "9007199254740993", "device_used_bytes": "9007199254740993"}},
		{name: "memory_allocated fraction", in: `{` + ts + `,"memory_allocated":1.5}`, err: "memory_allocated: must be an integer, got a number with a fraction or exponent (1.5)"},
		{name: "memory_mb boolean passed over", in: `{` + ts + `,"memory_mb":true}`, want: map[string]string{"allocator_allocated_bytes": "0", "device_id": "0", "collector": `"stormlog.tensorflow.memory_tracker"`}},
		{name: "memory_mb string passed over", in: `{` + ts + `,"memory_mb":"512","device_used_bytes":9}`, want: map[string]string{"allocator_allocated_bytes": "9"}},
		{name: "memory_mb Infinity", in: `{` + ts + `,"memory_mb":Infinity}`, err: "memory_mb: Infinity cannot be converted to an integer (inf once scaled)"},

		// reserved
		{name: "reserved field", in: `{` + ts + `,"memory_allocated":1,"allocator_reserved_bytes":8,"memory_reserved":9}`, want: map[string]string{"allocator_reserved_bytes": "8"}},
		{name: "memory_reserved", in: `{` + ts + `,"memory_allocated":1,"memory_reserved":9}`, want: map[string]string{"allocator_reserved_bytes": "9"}},
		{name: "reserved = allocated", in: `{` + ts + `,"memory_allocated":4}`, want: map[string]string{"allocator_reserved_bytes": "4"}},

		// change
		{name: "change field", in: `{` + ts + `,"allocator_change_bytes":-3,"memory_change":5}`, want: map[string]string{"allocator_change_bytes": "-3"}},
		{name: "memory_change", in: `{` + ts + `,"memory_change":-5}`, want: map[string]string{"allocator_change_bytes": "-5"}},

		// active / inactive
		{name: "active and inactive", in: `{` + ts + `,"allocator_active_bytes":2,"allocator_inactive_bytes":null}`, want: map[string]string{"allocator_active_bytes": "2", "allocator_inactive_bytes": "null"}},

		// device used, total, free
		{name: "total from device_total_bytes", in: `{` + ts + `,"memory_allocated":10,"device_total_bytes":100,"total_memory":5}`, want: map[string]string{"device_total_bytes": "100", "device_free_bytes": "90", "device_used_bytes": "10"}},
		{name: "total_memory", in: `{` + ts + `,"memory_allocated":10,"total_memory":100}`, want: map[string]string{"device_total_bytes": "100", "device_free_bytes": "90"}},
		{name: "device_total", in: `{` + ts + `,"memory_allocated":10,"device_total":50}`, want: map[string]string{"device_total_bytes": "50", "device_free_bytes": "40"}},
		{name: "total_bytes", in: `{` + ts + `,"memory_allocated":10,"total_bytes":20}`, want: map[string]string{"device_total_bytes": "20", "device_free_bytes": "10"}},
		{name: "total from metadata", in: `{` + ts + `,"memory_allocated":10,"metadata":{"total_memory":30}}`, want: map[string]string{"device_total_bytes": "30", "device_free_bytes": "20"}},
		{name: "record total beats metadata", in: `{` + ts + `,"memory_allocated":10,"total_bytes":40,"metadata":{"total_memory":30}}`, want: map[string]string{"device_total_bytes": "40"}},
		{name: "total null", in: `{` + ts + `,"device_total_bytes":null}`, want: map[string]string{"device_total_bytes": "null", "device_free_bytes": "null"}},
		{name: "no total", in: `{` + ts + `,"memory_allocated":10}`, want: map[string]string{"device_total_bytes": "null", "device_free_bytes": "null"}},
		{name: "free kept", in: `{` + ts + `,"memory_allocated":10,"total_memory":100,"device_free_bytes":7}`, want: map[string]string{"device_free_bytes": "7"}},
		{name: "used from device_used_bytes", in: `{` + ts + `,"memory_allocated":10,"device_used_bytes":60,"total_memory":100}`, want: map[string]string{"device_used_bytes": "60", "device_free_bytes": "40"}},
		{name: "used beyond total", in: `{` + ts + `,"memory_allocated":10,"device_total":5}`, err: "device_used_bytes: 10 exceeds device_total_bytes 5"},

		// event type, context
		{name: "event_type", in: `{` + ts + `,"event_type":"peak","type":"x"}`, want: map[string]string{"event_type": `"peak"`}, meta: map[string]string{"type": "absent"}},
		{name: "type", in: `{` + ts + `,"type":"allocation"}`, want: map[string]string{"event_type": `"allocation"`}},
		{name: "event type default", in: `{` + ts + `}`, want: map[string]string{"event_type": `"sample"`}},
		{name: "blank type", in: `{` + ts + `,"type":" "}`, err: `type: must be a non-empty string, got " "`},
		{name: "null event_type", in: `{` + ts + `,"event_type":null,"type":"x"}`, err: "event_type: must be a non-empty string, got null"},
		{name: "separator-only type", in: `{` + ts + `,"type":"\u001e"}`, err: `type: must be a non-empty string, got "\x1e"`},
		{name: "type number", in: `{` + ts + `,"type":3}`, err: "type: must be a non-empty string, got a number"},
		{name: "context", in: `{` + ts + `,"context":"fwd","message":"m"}`, want: map[string]string{"context": `"fwd"`}},
		{name: "message", in: `{` + ts + `,"message":"m"}`, want: map[string]string{"context": `"m"`}},
		{name: "no context", in: `{` + ts + `}`, want: map[string]string{"context": "null"}},
		{name: "message number", in: `{` + ts + `,"message":1}`, err: "message: must be a string or null, got a number"},

		// pid, host
		{name: "pid and host from record", in: `{` + ts + `,"pid":12,"host":"h1","metadata":{"pid":13,"host":"h2"}}`, want: map[string]string{"pid": "12", "host": `"h1"`}},
		{name: "pid and host from metadata", in: `{` + ts + `,"metadata":{"pid":13,"host":"h2"}}`, want: map[string]string{"pid": "13", "host": `"h2"`}},
		{name: "pid and host defaults", in: `{` + ts + `}`, want: map[string]string{"pid": "-1", "host": `"unknown"`}},
		{name: "blank host", in: `{` + ts + `,"host":""}`, err: `host: must be a non-empty string, got ""`},
		{name: "null host", in: `{` + ts + `,"host":null}`, err: "host: must be a non-empty string, got null"},
		{name: "null metadata host", in: `{` + ts + `,"metadata":{"host":null}}`, err: "metadata.host: must be a non-empty string, got null"},
		{name: "null metadata pid", in: `{` + ts + `,"metadata":{"pid":null}}`, err: "metadata.pid: must be an integer, got null"},
		{name: "pid boolean", in: `{` + ts + `,"pid":true}`, err: "pid: must be an integer, got a boolean"},
		{name: "sampling interval kept", in: `{` + ts + `,"sampling_interval_ms":250}`, want: map[string]string{"sampling_interval_ms": "250"}},
		{name: "sampling interval default", in: `{` + ts + `}`, want: map[string]string{"sampling_interval_ms": "0"}},

		// collector
		{name: "collector field", in: `{` + ts + `,"collector":"my.tracker","backend":"cuda"}`, want: map[string]string{"collector": `"my.tracker"`}},
		{name: "backend cuda", in: `{` + ts + `,"backend":"cuda"}`, want: map[string]string{"collector": `"stormlog.cuda_tracker"`}, meta: map[string]string{"backend": "absent"}},
		{name: "backend rocm", in: `{` + ts + `,"backend":"ROCm"}`, want: map[string]string{"collector": `"stormlog.rocm_tracker"`}},
		{name: "backend mps", in: `{` + ts + `,"backend":"mps"}`, want: map[string]string{"collector": `"stormlog.mps_tracker"`}},
		{name: "backend cpu", in: `{` + ts + `,"backend":" cpu "}`, want: map[string]string{"collector": `"stormlog.cpu_tracker"`}},
		{name: "backend in metadata", in: `{` + ts + `,"metadata":{"backend":"rocm"}}`, want: map[string]string{"collector": `"stormlog.rocm_tracker"`}, meta: map[string]string{"backend": `"rocm"`}},
		{name: "backend unknown dropped", in: `{` + ts + `,"backend":"xla"}`, want: map[string]string{"collector": `"legacy.unknown"`}, meta: map[string]string{"backend": "absent"}},
		{name: "collector number passed over", in: `{` + ts + `,"collector":5,"backend":"mps"}`, want: map[string]string{"collector": `"stormlog.mps_tracker"`}},
		{name: "collector blank passed over", in: `{` + ts + `,"collector":"\u001c"}`, want: map[string]string{"collector": `"legacy.unknown"`}},
		{name: "tensorflow from memory_mb", in: `{` + ts + `,"memory_mb":2}`, want: map[string]string{"collector": `"stormlog.tensorflow.memory_tracker"`}},
		{name: "cuda tracker by device", in: `{` + ts + `,"memory_allocated":2,"device":"cuda:0"}`, want: map[string]string{"collector": `"stormlog.cuda_tracker"`}},
		{name: "cpu tracker by device", in: `{` + ts + `,"memory_allocated":2,"device":"cpu"}`, want: map[string]string{"collector": `"stormlog.cpu_tracker"`}},
		{name: "cpu tracker without device", in: `{` + ts + `,"memory_allocated":2}`, want: map[string]string{"collector": `"stormlog.cpu_tracker"`}},
		{name: "default collector", in: `{` + ts + `}`, want: map[string]string{"collector": `"legacy.unknown"`}},

		// metadata_<x>, leftovers, session id, identity
		{name: "metadata_ keys moved", in: `{` + ts + `,"metadata_phase":"train","metadata_step":3,"metadata":{"a":1}}`, meta: map[string]string{"phase": `"train"`, "step": "3", "a": "1", "metadata_phase": "absent"}},
		{name: "metadata_ overrides metadata", in: `{` + ts + `,"metadata_a":2,"metadata":{"a":1}}`, meta: map[string]string{"a": "2"}},
		{name: "unknown keys dropped", in: `{` + ts + `,"gpu_name":"H100","util":5,"metadata":{"gpu_name":"keep"}}`, meta: map[string]string{"gpu_name": `"keep"`, "util": "absent"}},
		{name: "metadata_ alone", in: `{` + ts + `,"metadata_":1}`, meta: map[string]string{"": "1"}},
		{name: "metadata not object", in: `{` + ts + `,"metadata":[1]}`, err: "metadata: must be a JSON object, got an array"},
		{name: "session from record, as written", in: `{` + ts + `,"session_id":" s1 "}`, want: map[string]string{"session_id": `" s1 "`}},
		{name: "session from metadata", in: `{` + ts + `,"metadata":{"session_id":"s2"}}`, want: map[string]string{"session_id": `"s2"`}, meta: map[string]string{"session_id": "absent"}},
		{name: "session derived", in: `{"timestamp":1,"pid":7,"host":"h"}`, want: map[string]string{"session_id": `"legacy-92ac5f14-6b40-51d8-9f65-91e02dcb4473"`}},
		{name: "session derived from float seconds", in: `{"timestamp":1767908945.5,"device":"cuda:1","memory_allocated":10}`, want: map[string]string{"session_id": `"legacy-a04f11f3-58d7-50bf-84f1-81ea6af18515"`}},
		{name: "session number replaced", in: `{"timestamp":1,"pid":7,"host":"h","session_id":5}`, want: map[string]string{"session_id": `"legacy-92ac5f14-6b40-51d8-9f65-91e02dcb4473"`}},
		{name: "identity fields and metadata", in: `{` + ts + `,"rank":1,"world_size":2,"metadata_job_id":"j"}`, want: map[string]string{"rank": "1", "local_rank": "1", "world_size": "2", "job_id": `"j"`}, meta: map[string]string{"job_id": "absent"}},
		{name: "identity null fields default", in: `{` + ts + `,"rank":null,"job_id":null}`, want: map[string]string{"rank": "0", "world_size": "1", "job_id": "null"}},
		{name: "several problems", in: `{"timestamp":"x","memory_allocated":true}`, err: "timestamp: a legacy record needs timestamp_ns, or timestamp in seconds (got timestamp a string); memory_allocated: must be an integer, got a boolean"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := Normalize(json.RawMessage(tc.in), NormalizeOptions{AllowLegacy: true})
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Normalize: %v", err)
			}
			got := revalidate(t, rec)
			for f, want := range tc.want {
				if g := mustJSON(t, got[f]); g != want {
					t.Errorf("%s = %s, want %s", f, g, want)
				}
			}
			meta := got["metadata"].(map[string]any)
			for k, want := range tc.meta {
				v, ok := meta[k]
				switch {
				case want == "absent" && ok:
					t.Errorf("metadata.%s = %v, want absent", k, v)
				case want != "absent" && mustJSON(t, v) != want:
					t.Errorf("metadata.%s = %s, want %s", k, mustJSON(t, v), want)
				}
			}
			for k := range meta {
				if strings.HasPrefix(k, "metadata_") {
					t.Errorf("metadata_ key left: %s", k)
				}
			}
		})
	}
}
