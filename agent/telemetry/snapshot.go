package telemetry

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Keys of torch.cuda.memory_stats() the agent maps (spec/stormlog.md, "Where
// allocator numbers come from").
const (
	StatAllocated = "allocated_bytes.all.current"      // allocator_allocated_bytes
	StatReserved  = "reserved_bytes.all.current"       // allocator_reserved_bytes
	StatActive    = "active_bytes.all.current"         // allocator_active_bytes
	StatInactive  = "inactive_split_bytes.all.current" // allocator_inactive_bytes
)

// Snapshot is one runner's push to POST /v1/allocator: the raw
// torch.cuda.memory_stats() of one GPU.
//
//	{"pid": 4242, "gpu_uuid": "GPU-…", "device_index": 0,
//	 "stats": {"allocated_bytes.all.current": 1048576, …},
//	 "env": {"RANK": "0", "WORLD_SIZE": "1", "PIPELINE": "…", "MODEL_ID": "…"},
//	 "session_id": "…"}
type Snapshot struct {
	PID         *int64                 // host pid; nil when not sent
	GPUUUID     string                 // "" when not sent
	DeviceIndex *int64                 // nil when not sent; one of GPUUUID, DeviceIndex is set
	Stats       map[string]json.Number // every key integer; allocated and reserved present
	Env         map[string]string      // the runner's identity variables; may be nil
	SessionID   string                 // "" when not sent
}

var snapshotFields = setOf([]string{"pid", "gpu_uuid", "device_index", "stats", "env", "session_id"})

// DecodeSnapshot decodes and checks a snapshot body strictly: unknown
// top-level fields are an error naming them; pid, when sent, is a positive
// integer; device_index a non-negative integer; gpu_uuid and session_id
// non-empty strings; stats an object of integers (counters stay exact) with
// allocated and reserved present and >= 0; env an object of strings. All
// problems are reported at once in an *Error.
func DecodeSnapshot(body []byte) (Snapshot, error) {
	m, err := decodeObject(body)
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot: %w", err)
	}
	var s Snapshot
	c := checker{m: m}
	var unknown []string
	for k := range m {
		if !snapshotFields[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		c.add("unknown fields: " + strings.Join(unknown, ", "))
	}

	if v, ok := m["pid"]; ok && v != nil {
		if n, ok := c.integer64("pid", 1); ok {
			s.PID = &n
		}
	}
	if v, ok := m["device_index"]; ok && v != nil {
		if n, ok := c.integer64("device_index", 0); ok {
			s.DeviceIndex = &n
		}
	}
	s.GPUUUID = c.optionalString("gpu_uuid")
	s.SessionID = c.optionalString("session_id")
	_, hasUUID := m["gpu_uuid"]
	_, hasIndex := m["device_index"]
	if (!hasUUID || m["gpu_uuid"] == nil) && (!hasIndex || m["device_index"] == nil) {
		c.add("gpu_uuid, device_index: one of them is required")
	}

	switch stats := m["stats"].(type) {
	case nil:
		c.add("stats: required, an object of torch.cuda.memory_stats() values")
	case map[string]any:
		s.Stats = make(map[string]json.Number, len(stats))
		keys := make([]string, 0, len(stats))
		for k := range stats {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			n, prob := intValue(stats[k])
			if prob != "" {
				c.addf("stats.%s: must be an integer, %s", k, prob)
				continue
			}
			if n < 0 && (k == StatAllocated || k == StatReserved || k == StatActive || k == StatInactive) {
				c.addf("stats.%s: must be >= 0, got %d", k, n)
				continue
			}
			s.Stats[k] = num(n)
		}
		for _, k := range []string{StatAllocated, StatReserved} {
			if _, ok := stats[k]; !ok {
				c.addf("stats.%s: required", k)
			}
		}
	default:
		c.addf("stats: must be an object, got %s", kind(stats))
	}

	switch env := m["env"].(type) {
	case nil:
	case map[string]any:
		s.Env = make(map[string]string, len(env))
		keys := make([]string, 0, len(env))
		for k := range env {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v := env[k]
			str, ok := v.(string)
			if !ok {
				// Never echo the value: an environment may hold secrets.
				c.addf("env.%s: must be a string, got %s", k, kind(v))
				continue
			}
			s.Env[k] = str
		}
	default:
		c.addf("env: must be an object of strings, got %s", kind(env))
	}

	if err := c.err(); err != nil {
		return Snapshot{}, err
	}
	return s, nil
}

// optionalString reads a field that is absent, null or a non-empty string.
func (c *checker) optionalString(f string) string {
	v, ok := c.m[f]
	if !ok || v == nil {
		return ""
	}
	s, isStr := v.(string)
	if !isStr || strings.TrimSpace(s) == "" {
		c.addf("%s: must be a non-empty string, got %s", f, literal(v))
		return ""
	}
	return s
}
