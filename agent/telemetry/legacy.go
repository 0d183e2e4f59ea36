package telemetry

import (
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// Legacy conversion defaults (spec/stormlog.md, "Legacy records").
const (
	// DefaultLegacyCollector names the collector of a legacy record that says
	// nothing about where it came from.
	DefaultLegacyCollector = "legacy.unknown"
	unknownHost            = "unknown"
)

// legacyTotalKeys are the places a legacy record keeps the device total,
// looked up in the record, then in its metadata.
var legacyTotalKeys = []string{"total_memory", "device_total", "total_bytes"}

// convertLegacy upgrades a record without schema_version to a v3 record
// (before identity resolution). Keys it reads are consumed; keys it does not
// know are kept in metadata (extras belong there), never dropped silently.
func convertLegacy(in map[string]any) (map[string]any, error) {
	l := legacy{in: in, used: map[string]bool{}, meta: map[string]any{}}
	out := make(map[string]any, len(knownV3))

	l.used[fieldMetadata] = true
	if v, ok := in[fieldMetadata]; ok && v != nil {
		mm, isObj := v.(map[string]any)
		if !isObj {
			l.addf("metadata: must be a JSON object, got %s", kind(v))
		}
		for k, x := range mm {
			l.meta[k] = x
		}
	}
	for k, v := range in {
		if name, ok := strings.CutPrefix(k, "metadata_"); ok && name != "" {
			l.used[k] = true
			l.meta[name] = v
		}
	}

	// timestamp: timestamp_ns, else timestamp in seconds × 1e9.
	var ts int64
	if v, ok := l.take(fieldTimestampNS); ok {
		ts = l.integer(fieldTimestampNS, v)
	} else if v, ok := l.take("timestamp"); ok {
		ts = l.scaled("timestamp", v, 1_000_000_000)
	} else {
		l.add("timestamp_ns: missing (a legacy record needs timestamp_ns or timestamp)")
	}
	out[fieldTimestampNS] = num(ts)

	device := l.deviceID()
	out[fieldDeviceID] = num(device)

	// allocated: allocator_allocated_bytes, memory_allocated, memory_mb × 2^20,
	// device_used_bytes, else 0.
	var allocated int64
	if v, ok := l.take(fieldAllocated); ok {
		allocated = l.integer(fieldAllocated, v)
	} else if v, ok := l.take("memory_allocated"); ok {
		allocated = l.integer("memory_allocated", v)
	} else if v, ok := l.take("memory_mb"); ok {
		allocated = l.scaled("memory_mb", v, 1<<20)
	} else if v, ok := in[fieldDeviceUsed]; ok {
		allocated = l.integer(fieldDeviceUsed, v)
	}
	out[fieldAllocated] = num(allocated)

	reserved := allocated
	if v, ok := l.take(fieldReserved); ok {
		reserved = l.integer(fieldReserved, v)
	} else if v, ok := l.take("memory_reserved"); ok {
		reserved = l.integer("memory_reserved", v)
	}
	out[fieldReserved] = num(reserved)

	var change int64
	if v, ok := l.take(fieldChange); ok {
		change = l.integer(fieldChange, v)
	} else if v, ok := l.take("memory_change"); ok {
		change = l.integer("memory_change", v)
	}
	out[fieldChange] = num(change)

	out[fieldActive] = l.optionalInt(fieldActive)
	out[fieldInactive] = l.optionalInt(fieldInactive)

	used := allocated
	if v, ok := l.take(fieldDeviceUsed); ok {
		used = l.integer(fieldDeviceUsed, v)
	}
	out[fieldDeviceUsed] = num(used)

	// total: device_total_bytes, then the legacy names in the record, then in
	// metadata. free: the record's, else max(total - used, 0).
	var total *int64
	if _, ok := in[fieldDeviceTotal]; ok {
		total = l.optionalIntPtr(fieldDeviceTotal)
	} else {
	lookup:
		for _, src := range []struct {
			prefix string
			m      map[string]any
			take   bool
		}{{"", in, true}, {"metadata.", l.meta, false}} {
			for _, k := range legacyTotalKeys {
				v, ok := src.m[k]
				if !ok {
					continue
				}
				if src.take {
					l.used[k] = true
				}
				if v != nil {
					n := l.integer(src.prefix+k, v)
					total = &n
				}
				break lookup
			}
		}
	}
	out[fieldDeviceTotal] = nullableNum(total)
	if _, ok := in[fieldDeviceFree]; ok {
		out[fieldDeviceFree] = nullableNum(l.optionalIntPtr(fieldDeviceFree))
	} else if total != nil {
		out[fieldDeviceFree] = num(max(*total-used, 0))
	} else {
		out[fieldDeviceFree] = nil
	}

	out[fieldEventType] = "sample"
	for _, k := range []string{fieldEventType, "type"} {
		if v, ok := l.take(k); ok {
			if s, isStr := v.(string); isStr && strings.TrimSpace(s) != "" {
				out[fieldEventType] = s
			} else if v != nil && !isStr {
				l.addf("%s: must be a string, got %s", k, kind(v))
			}
			break
		}
	}

	out[fieldContext] = nil
	for _, k := range []string{fieldContext, "message"} {
		if v, ok := l.take(k); ok {
			if _, isStr := v.(string); v != nil && !isStr {
				l.addf("%s: must be a string or null, got %s", k, kind(v))
			}
			out[fieldContext] = v
			break
		}
	}

	var interval int64
	if v, ok := l.take(fieldSamplingIntervalMS); ok {
		interval = l.integer(fieldSamplingIntervalMS, v)
	}
	out[fieldSamplingIntervalMS] = num(interval)

	pid := int64(-1)
	if v, ok := l.take(fieldPID); ok {
		pid = l.integer(fieldPID, v)
	} else if v, ok := l.meta[fieldPID]; ok && v != nil {
		pid = l.integer("metadata.pid", v)
	}
	out[fieldPID] = num(pid)

	host := unknownHost
	for _, src := range []struct {
		name string
		m    map[string]any
	}{{fieldHost, in}, {"metadata.host", l.meta}} {
		v, ok := src.m[strings.TrimPrefix(src.name, "metadata.")]
		if !ok {
			continue
		}
		l.used[fieldHost] = true
		if s, isStr := v.(string); isStr {
			if strings.TrimSpace(s) != "" {
				host = s
			}
		} else if v != nil {
			l.addf("%s: must be a string, got %s", src.name, kind(v))
		}
		break
	}
	out[fieldHost] = host

	out[fieldCollector] = l.collector(device)

	// session id: the record's, then metadata's, else a stable id derived
	// from (timestamp, host, pid).
	session := ""
	if v, ok := l.take(fieldSessionID); ok {
		if s, isStr := v.(string); isStr {
			session = strings.TrimSpace(s)
		} else if v != nil {
			l.addf("session_id: must be a non-empty string, got %s", kind(v))
		}
	}
	if session == "" {
		if s, isStr := l.meta[fieldSessionID].(string); isStr && strings.TrimSpace(s) != "" {
			session = strings.TrimSpace(s)
			delete(l.meta, fieldSessionID)
		}
	}
	if session == "" {
		session = derivedSessionID(ts, host, pid)
	}
	out[fieldSessionID] = session

	// Explicit identity is carried for resolution; a null one means absent.
	for _, f := range identityFields {
		if v, ok := l.take(f); ok && v != nil {
			out[f] = v
		}
	}

	for k, v := range in {
		if l.used[k] || knownV3[k] {
			continue
		}
		if _, taken := l.meta[k]; !taken {
			l.meta[k] = v
		}
	}
	out[fieldMetadata] = l.meta
	out[fieldSchemaVersion] = num(3)

	if len(l.probs) > 0 {
		return nil, &Error{Problems: l.probs}
	}
	return out, nil
}

// legacy holds one conversion's input, the keys it consumed and problems.
type legacy struct {
	in    map[string]any
	meta  map[string]any
	used  map[string]bool
	probs []string
}

func (l *legacy) add(p string)                    { l.probs = append(l.probs, p) }
func (l *legacy) addf(format string, args ...any) { l.add(fmt.Sprintf(format, args...)) }

// take returns a key of the record and marks it consumed.
func (l *legacy) take(k string) (any, bool) {
	v, ok := l.in[k]
	if ok {
		l.used[k] = true
	}
	return v, ok
}

func (l *legacy) integer(name string, v any) int64 {
	n, prob := intValue(v)
	if prob != "" {
		l.addf("%s: must be an integer, %s", name, prob)
	}
	return n
}

func (l *legacy) optionalIntPtr(k string) *int64 {
	v, ok := l.take(k)
	if !ok || v == nil {
		return nil
	}
	n := l.integer(k, v)
	return &n
}

func (l *legacy) optionalInt(k string) any { return nullableNum(l.optionalIntPtr(k)) }

// scaled converts a number (integer or decimal, as written) times mul to an
// integer, truncating toward zero, without float rounding: "1767908945.298"
// seconds is exactly 1767908945298000000 ns.
func (l *legacy) scaled(name string, v any, mul int64) int64 {
	s, ok := v.(json.Number)
	if !ok {
		l.addf("%s: must be a number, got %s", name, kind(v))
		return 0
	}
	// big.Rat computes 10^exp exactly: bound the literal first, or a
	// request like 1e999999999 costs gigabytes.
	if len(s) > 64 {
		l.addf("%s: %.20s… is too long a number", name, s)
		return 0
	}
	if i := strings.IndexAny(string(s), "eE"); i >= 0 {
		exp, err := strconv.Atoi(strings.TrimPrefix(string(s[i+1:]), "+"))
		if err != nil || exp > 40 || exp < -40 {
			l.addf("%s: %s has an exponent beyond ±40", name, s)
			return 0
		}
	}
	r, ok := new(big.Rat).SetString(string(s))
	if !ok {
		l.addf("%s: must be a number, got %s", name, s)
		return 0
	}
	r.Mul(r, new(big.Rat).SetInt64(mul))
	q := new(big.Int).Quo(r.Num(), r.Denom()) // truncates toward zero
	if !q.IsInt64() {
		l.addf("%s: %s is beyond the 64-bit range once scaled", name, s)
		return 0
	}
	return q.Int64()
}

// deviceID: device_id, else the device string ("cuda:1" → 1, anything with
// "cpu" → -1, "/gpu…" → 0), else 0 when memory_mb is present (a TensorFlow
// tracker), else -1.
func (l *legacy) deviceID() int64 {
	if v, ok := l.take(fieldDeviceID); ok {
		return l.integer(fieldDeviceID, v)
	}
	if s, ok := l.in["device"].(string); ok {
		lower := strings.ToLower(s)
		if strings.Contains(lower, "cpu") {
			l.used["device"] = true
			return -1
		}
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			if n, ok := digits(s[i+1:]); ok {
				l.used["device"] = true
				return n
			}
		}
		if strings.HasPrefix(lower, "/gpu") {
			l.used["device"] = true
			return 0
		}
	}
	if _, ok := l.in["memory_mb"]; ok {
		return 0
	}
	return -1
}

// digits parses a short run of ASCII digits.
func digits(s string) (int64, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	var n int64
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// collector: the record's; else from backend (record, then metadata); else
// the TensorFlow tracker when memory_mb is present; else the CUDA or CPU
// tracker by device when memory_allocated is present; else the default.
func (l *legacy) collector(device int64) string {
	if v, ok := l.take(fieldCollector); ok {
		if s, isStr := v.(string); isStr && strings.TrimSpace(s) != "" {
			return s
		} else if v != nil && !isStr {
			l.addf("collector: must be a string, got %s", kind(v))
		}
	}
	backend, inRecord := l.in["backend"]
	if !inRecord {
		backend = l.meta["backend"]
	}
	if s, isStr := backend.(string); isStr {
		switch b := strings.ToLower(strings.TrimSpace(s)); b {
		case "cuda", "rocm", "mps", "cpu":
			l.used["backend"] = inRecord
			return "stormlog." + b + "_tracker"
		}
	}
	if _, ok := l.in["memory_mb"]; ok {
		return "stormlog.tensorflow.memory_tracker"
	}
	if _, ok := l.in["memory_allocated"]; ok {
		if device == -1 {
			return "stormlog.cpu_tracker"
		}
		return "stormlog.cuda_tracker"
	}
	return DefaultLegacyCollector
}

func nullableNum(p *int64) any {
	if p == nil {
		return nil
	}
	return num(*p)
}
