package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Record is one decoded telemetry record: field name to value, where values
// are nil, bool, string, json.Number (numbers keep their literal text, so
// counters beyond 64 bits stay exact, as stormlog's Python integers do),
// NonFinite (NaN, Infinity, -Infinity), []any or map[string]any.
//
// Records returned by Validate, Normalize and Allocators.Apply hold only
// json.Number and NonFinite for numbers. A Record is a plain map: not safe
// for concurrent mutation; reading it from several goroutines is fine.
type Record map[string]any

// MarshalJSON writes the record with sorted keys (at every depth) and
// integers exactly as decoded, without HTML escaping.
func (r Record) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any(r)); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// SessionID is the record's session_id ("" when absent; never absent in a
// valid v3 record).
func (r Record) SessionID() string { s, _ := r[fieldSessionID].(string); return s }

// DeviceID is the record's device_id (-1 = CPU; also -1 when absent).
func (r Record) DeviceID() int64 { return r.intOr(fieldDeviceID, -1) }

// PID is the record's pid (-1 = unknown; also -1 when absent).
func (r Record) PID() int64 { return r.intOr(fieldPID, -1) }

// TimestampNS is the record's timestamp_ns (0 when absent).
func (r Record) TimestampNS() int64 { return r.intOr(fieldTimestampNS, 0) }

// Int returns an integer field. ok is false when the field is absent, null,
// not an integer, or beyond the 64-bit range.
func (r Record) Int(name string) (v int64, ok bool) {
	v, prob := intValue(r[name])
	return v, prob == ""
}

func (r Record) intOr(name string, def int64) int64 {
	if v, ok := r.Int(name); ok {
		return v
	}
	return def
}

// Field names of the v3 record (spec/stormlog.md, "Fields of a v3 record").
const (
	fieldSchemaVersion      = "schema_version"
	fieldSessionID          = "session_id"
	fieldTimestampNS        = "timestamp_ns"
	fieldEventType          = "event_type"
	fieldCollector          = "collector"
	fieldSamplingIntervalMS = "sampling_interval_ms"
	fieldPID                = "pid"
	fieldHost               = "host"
	fieldDeviceID           = "device_id"
	fieldAllocated          = "allocator_allocated_bytes"
	fieldReserved           = "allocator_reserved_bytes"
	fieldActive             = "allocator_active_bytes"
	fieldInactive           = "allocator_inactive_bytes"
	fieldChange             = "allocator_change_bytes"
	fieldDeviceUsed         = "device_used_bytes"
	fieldDeviceFree         = "device_free_bytes"
	fieldDeviceTotal        = "device_total_bytes"
	fieldContext            = "context"
	fieldMetadata           = "metadata"
	fieldJobID              = "job_id"
	fieldRank               = "rank"
	fieldLocalRank          = "local_rank"
	fieldWorldSize          = "world_size"
)

// requiredV2 lists the fields every v2 record has; v3 adds session_id.
var requiredV2 = []string{
	fieldSchemaVersion, fieldTimestampNS, fieldEventType, fieldCollector,
	fieldSamplingIntervalMS, fieldPID, fieldHost, fieldDeviceID,
	fieldAllocated, fieldReserved, fieldActive, fieldInactive, fieldChange,
	fieldDeviceUsed, fieldDeviceFree, fieldDeviceTotal, fieldContext, fieldMetadata,
}

var requiredV3 = append(slices.Clone(requiredV2), fieldSessionID)

// identityFields are optional in both versions and, after resolution,
// removed from metadata (spec: "Distributed identity").
var identityFields = []string{fieldJobID, fieldRank, fieldLocalRank, fieldWorldSize}

var (
	knownV2 = setOf(append(slices.Clone(requiredV2), identityFields...))
	knownV3 = setOf(append(slices.Clone(requiredV3), identityFields...))
)

// IsV3Field reports whether name belongs to the v3 field set. The GPU sampler
// uses it to check that the v3 part of a gpu_memory_sample's data is a valid
// record (spec/envelope.md, gpu_memory_sample).
func IsV3Field(name string) bool { return knownV3[name] }

func setOf(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// num makes the json.Number of an integer.
func num(v int64) json.Number { return json.Number(strconv.FormatInt(v, 10)) }

// intValue reads a JSON integer. prob is "" on success, else why the value
// is not one, phrased to follow "must be an integer, ".
//
// The spec requires a JSON integer: a boolean is not one, nor is a number
// written with a fraction or an exponent (even 1.0 or 1e3).
func intValue(v any) (n int64, prob string) {
	switch v := v.(type) {
	case json.Number:
		s := string(v)
		if strings.ContainsAny(s, ".eE") {
			return 0, "got a number with a fraction or exponent (" + s + ")"
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return 0, "got " + s + ", beyond the 64-bit range"
			}
			return 0, "got " + strconv.Quote(s)
		}
		return n, ""
	case int64:
		return v, ""
	case int:
		return int64(v), ""
	default:
		return 0, "got " + kind(v)
	}
}

// kind names a decoded JSON value's type for messages.
func kind(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number, float64, int, int64:
		return "a number"
	case NonFinite:
		return v.String()
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// decodeObject decodes one JSON object as Python's json module reads it
// (pyjson.go): integers stay exact json.Numbers, NaN and Infinity are
// NonFinite.
func decodeObject(raw []byte) (map[string]any, error) {
	v, err := decodePy(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("record must be a JSON object, got %s", kind(v))
	}
	return m, nil
}

// nullableNum is *p as a JSON value: null when p is nil.
func nullableNum(p *int64) any {
	if p == nil {
		return nil
	}
	return num(*p)
}
