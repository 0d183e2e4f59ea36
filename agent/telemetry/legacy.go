package telemetry

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
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

// convertLegacy upgrades a record without schema_version to a v3 record the
// way stormlog's loader does (its reference module wins over the spec's
// summary), reporting every problem at once. In short:
//
//   - metadata is the record's metadata object plus every top-level
//     metadata_<x> key as <x>; nothing else of the record is kept: keys the
//     conversion does not read are dropped, as stormlog drops them.
//   - Numbers in seconds or MiB (timestamp, memory_mb) are converted as
//     Python computes int(float(v) * scale): through float64, truncated.
//   - A field present with a value of the wrong type is an error, never a
//     default: a null or blank host, event_type or type, a null metadata.pid.
//     A non-string collector, or a memory_mb that is not a number, is passed
//     over as stormlog passes over it.
//   - The session id is the record's or metadata's, else opts'
//     DefaultSessionID, else stormlog's stable id of the record's own
//     timestamp (as written), host and pid.
//
// Identity comes from the explicit fields, then metadata, then the
// environment; identity keys and session_id are then removed from metadata.
func convertLegacy(in map[string]any, opts NormalizeOptions) (Record, error) {
	l := legacy{in: in}
	out := make(Record, len(knownV3))

	meta := map[string]any{}
	if v := in[fieldMetadata]; v != nil {
		mm, isObj := v.(map[string]any)
		if !isObj {
			l.addf("metadata: must be a JSON object, got %s", kind(v))
		}
		for k, x := range mm {
			meta[k] = x
		}
	}
	for k, v := range in {
		if name, ok := strings.CutPrefix(k, "metadata_"); ok {
			meta[name] = v
		}
	}

	// timestamp: timestamp_ns, else timestamp in seconds × 1e9.
	if v, ok := in[fieldTimestampNS]; ok {
		out[fieldTimestampNS] = l.integer(fieldTimestampNS, v)
	} else if v := in["timestamp"]; isNumber(v) {
		out[fieldTimestampNS] = l.scaled("timestamp", v, 1e9)
	} else {
		l.addf("timestamp: a legacy record needs timestamp_ns, or timestamp in seconds (got %s)", describe(in, "timestamp"))
		out[fieldTimestampNS] = num(0)
	}

	device := l.deviceID()
	out[fieldDeviceID] = device.number()

	// allocated: allocator_allocated_bytes, memory_allocated, memory_mb ×
	// 2^20 (when a number), device_used_bytes, else 0.
	allocated := int64Py(0)
	if v, ok := in[fieldAllocated]; ok {
		allocated = l.pyInteger(fieldAllocated, v)
	} else if v, ok := in["memory_allocated"]; ok {
		allocated = l.pyInteger("memory_allocated", v)
	} else if v := in["memory_mb"]; isNumber(v) {
		allocated = l.scaledPy("memory_mb", v, 1<<20)
	} else if v, ok := in[fieldDeviceUsed]; ok {
		allocated = l.pyInteger(fieldDeviceUsed, v)
	}
	out[fieldAllocated] = allocated.number()

	reserved := allocated
	if v, ok := in[fieldReserved]; ok {
		reserved = l.pyInteger(fieldReserved, v)
	} else if v, ok := in["memory_reserved"]; ok {
		reserved = l.pyInteger("memory_reserved", v)
	}
	out[fieldReserved] = reserved.number()

	change := int64Py(0)
	if v, ok := in[fieldChange]; ok {
		change = l.pyInteger(fieldChange, v)
	} else if v, ok := in["memory_change"]; ok {
		change = l.pyInteger("memory_change", v)
	}
	out[fieldChange] = change.number()

	out[fieldActive] = l.optional(fieldActive, in[fieldActive])
	out[fieldInactive] = l.optional(fieldInactive, in[fieldInactive])

	used := allocated
	if v, ok := in[fieldDeviceUsed]; ok {
		used = l.pyInteger(fieldDeviceUsed, v)
	}
	out[fieldDeviceUsed] = used.number()

	// total: device_total_bytes, then the legacy names in the record, then in
	// metadata; the first present wins, null included. free: the record's,
	// else max(total - used, 0) when a total is known.
	var total any // nil or json.Number
	if v, ok := in[fieldDeviceTotal]; ok {
		total = l.optional(fieldDeviceTotal, v)
	} else {
	lookup:
		for _, src := range []struct {
			prefix string
			m      map[string]any
		}{{"", in}, {"metadata.", meta}} {
			for _, k := range legacyTotalKeys {
				if v, ok := src.m[k]; ok {
					total = l.optional(src.prefix+k, v)
					break lookup
				}
			}
		}
	}
	out[fieldDeviceTotal] = total
	if v, ok := in[fieldDeviceFree]; ok {
		out[fieldDeviceFree] = l.optional(fieldDeviceFree, v)
	} else if total != nil {
		t, _ := pyIntValue(total)
		free := t.sub(used)
		if free.cmp64(0) < 0 {
			free = int64Py(0)
		}
		out[fieldDeviceFree] = free.number()
	} else {
		out[fieldDeviceFree] = nil
	}

	// event_type, else type, else "sample"; present means it must be a
	// non-blank string.
	out[fieldEventType] = "sample"
	for _, k := range []string{fieldEventType, "type"} {
		if v, ok := in[k]; ok {
			if p := nonEmptyStringProblem(v); p != "" {
				l.add(k + ": " + p)
			}
			out[fieldEventType] = v
			break
		}
	}

	out[fieldSamplingIntervalMS] = num(0)
	if v, ok := in[fieldSamplingIntervalMS]; ok {
		out[fieldSamplingIntervalMS] = l.integer(fieldSamplingIntervalMS, v)
	}

	// pid and host: the record's, else metadata's, else -1 / "unknown".
	out[fieldPID] = num(-1)
	if v, ok := in[fieldPID]; ok {
		out[fieldPID] = l.integer(fieldPID, v)
	} else if v, ok := meta[fieldPID]; ok {
		out[fieldPID] = l.integer("metadata.pid", v)
	}
	out[fieldHost] = unknownHost
	if v, ok := in[fieldHost]; ok {
		out[fieldHost] = l.nonEmptyString(fieldHost, v)
	} else if v, ok := meta[fieldHost]; ok {
		out[fieldHost] = l.nonEmptyString("metadata.host", v)
	}

	out[fieldCollector] = l.collector(device, meta)

	id, probs := resolveIdentity(in, meta, opts.Getenv)
	l.probs = append(l.probs, probs...)
	for _, f := range identityFields {
		delete(meta, f)
	}
	session, err := resolveSessionID(in, meta, opts.DefaultSessionID)
	if err != nil {
		l.add(err.Error())
	}
	delete(meta, fieldSessionID)
	out[fieldSessionID] = session

	// context, else message; a string or null.
	ctx, ok := in[fieldContext]
	if !ok {
		ctx = in["message"]
	}
	if _, isStr := ctx.(string); ctx != nil && !isStr {
		name := fieldContext
		if !ok {
			name = "message"
		}
		l.addf("%s: must be a string or null, got %s", name, kind(ctx))
	}
	out[fieldContext] = ctx

	out[fieldMetadata] = meta
	out[fieldSchemaVersion] = num(3)
	setIdentity(out, id)
	if len(l.probs) > 0 {
		return nil, &Error{Problems: l.probs}
	}
	// The converted record must be a valid v3 record (bounds, used <= total).
	if err := check(out); err != nil {
		return nil, err
	}
	return out, nil
}

// legacy collects one conversion's problems.
type legacy struct {
	in    map[string]any
	probs []string
}

func (l *legacy) add(p string)                    { l.probs = append(l.probs, p) }
func (l *legacy) addf(format string, args ...any) { l.add(fmt.Sprintf(format, args...)) }

// pyInteger reads an integer of any size; a problem names the field.
func (l *legacy) pyInteger(name string, v any) pyInt {
	n, prob := pyIntValue(v)
	if prob != "" {
		l.addf("%s: must be an integer, %s", name, prob)
	}
	return n
}

func (l *legacy) integer(name string, v any) any { return l.pyInteger(name, v).number() }

// optional reads null or an integer.
func (l *legacy) optional(name string, v any) any {
	if v == nil {
		return nil
	}
	return l.integer(name, v)
}

func (l *legacy) nonEmptyString(name string, v any) any {
	if p := nonEmptyStringProblem(v); p != "" {
		l.add(name + ": " + p)
	}
	return v
}

// scaledPy is Python's int(float(v) * scale) for a JSON number v: the
// product of float64s, truncated toward zero, exact at any size.
func (l *legacy) scaledPy(name string, v any, scale float64) pyInt {
	f, _, ok := pyFloat(v)
	if !ok {
		l.addf("%s: %s is too large to convert to a float", name, literal(v))
		return pyInt{}
	}
	n, ok := pyTrunc(f * scale)
	if !ok {
		l.addf("%s: %s cannot be converted to an integer (%s once scaled)", name, literal(v), pyFloatRepr(f*scale))
		return pyInt{}
	}
	return n
}

func (l *legacy) scaled(name string, v any, scale float64) any {
	return l.scaledPy(name, v, scale).number()
}

// isNumber is Python's isinstance(v, (int, float)) for a JSON value: a
// boolean is not a number, NaN and Infinity are.
func isNumber(v any) bool {
	switch v.(type) {
	case json.Number, NonFinite:
		return true
	}
	return false
}

// describe names what m[k] is, for a message.
func describe(m map[string]any, k string) string {
	v, ok := m[k]
	if !ok {
		return "neither"
	}
	return k + " " + kind(v)
}

// deviceID: device_id, else the device string (anything with "cpu" → -1,
// "<name>:<digits>" → the digits, "/gpu…" → 0), else 0 when memory_mb is
// present (a TensorFlow tracker), else -1. Digits are what Python's
// str.isdigit accepts; int() then reads the decimal ones (any script) and
// fails on the others (superscripts, circled digits…).
func (l *legacy) deviceID() pyInt {
	if v, ok := l.in[fieldDeviceID]; ok {
		return l.pyInteger(fieldDeviceID, v)
	}
	if s, ok := l.in["device"].(string); ok {
		lower := strings.ToLower(s)
		if strings.Contains(lower, "cpu") {
			return int64Py(-1)
		}
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			if tail := s[i+1:]; pyIsDigits(tail) {
				n, prob := pyDecimalInt(tail)
				if prob != "" {
					l.addf("device: %q: %s", s, prob)
				}
				return n
			}
		}
		if strings.HasPrefix(lower, "/gpu") {
			return int64Py(0)
		}
	}
	if _, ok := l.in["memory_mb"]; ok {
		return int64Py(0)
	}
	return int64Py(-1)
}

// collector: the record's when a non-blank string (anything else is passed
// over); else from backend (the record's key when present, else
// metadata's); else the TensorFlow tracker when memory_mb is present; else
// the CUDA or CPU tracker by device when memory_allocated is present; else
// the default.
func (l *legacy) collector(device pyInt, meta map[string]any) string {
	if s, ok := l.in[fieldCollector].(string); ok && !pyBlank(s) {
		return s
	}
	backend, inRecord := l.in["backend"]
	if !inRecord {
		backend = meta["backend"]
	}
	if s, isStr := backend.(string); isStr {
		switch b := strings.ToLower(pyStrip(s)); b {
		case "cuda", "rocm", "mps", "cpu":
			return "stormlog." + b + "_tracker"
		}
	}
	if _, ok := l.in["memory_mb"]; ok {
		return "stormlog.tensorflow.memory_tracker"
	}
	if _, ok := l.in["memory_allocated"]; ok {
		if device.cmp64(-1) == 0 {
			return "stormlog.cpu_tracker"
		}
		return "stormlog.cuda_tracker"
	}
	return DefaultLegacyCollector
}

// pyIsDigits is Python 3.11's s.isdigit(): non-empty, every character a
// decimal digit of any script or another character with a digit value
// (superscripts, subscripts, circled digits…).
func pyIsDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !pyDecimal(r) && !unicode.Is(pyOtherDigits, r) {
			return false
		}
	}
	return true
}

// pyDecimal reports whether Python 3.11's int() reads r as a digit: Unicode
// 14's decimal digits (Go's tables are Unicode 15, which adds the Kawi and
// Nag Mundari digits).
func pyDecimal(r rune) bool {
	if (r >= 0x11F50 && r <= 0x11F59) || (r >= 0x1E4F0 && r <= 0x1E4F9) {
		return false
	}
	return r != utf8.RuneError && unicode.Is(unicode.Nd, r)
}

// pyDecimalInt is Python's int(s) for a string of pyIsDigits characters.
func pyDecimalInt(s string) (pyInt, string) {
	var b strings.Builder
	for _, r := range s {
		if !pyDecimal(r) {
			return pyInt{}, fmt.Sprintf("%q is a digit to str.isdigit but not to int()", r)
		}
		b.WriteByte(byte('0' + decimalValue(r)))
	}
	if b.Len() > pyMaxIntDigits {
		return pyInt{}, fmt.Sprintf("%d digits, over Python's limit of %d", b.Len(), pyMaxIntDigits)
	}
	digits := strings.TrimLeft(b.String(), "0")
	if digits == "" {
		digits = "0"
	}
	n, _ := pyIntValue(json.Number(digits))
	return n, ""
}

// decimalValue is the value of a decimal digit: Unicode allots them in runs
// of ten from zero, and unicode.Nd lists each run from its zero.
func decimalValue(r rune) int {
	for _, rg := range unicode.Nd.R16 {
		if r >= rune(rg.Lo) && r <= rune(rg.Hi) {
			return int(r-rune(rg.Lo)) % 10
		}
	}
	for _, rg := range unicode.Nd.R32 {
		if r >= rune(rg.Lo) && r <= rune(rg.Hi) {
			return int(r-rune(rg.Lo)) % 10
		}
	}
	return 0
}

// pyOtherDigits are the characters Python 3.11's str.isdigit accepts besides
// the decimal digits (Numeric_Type=Digit in Unicode 14).
var pyOtherDigits = &unicode.RangeTable{
	R16: []unicode.Range16{
		{Lo: 0x00B2, Hi: 0x00B3, Stride: 1},
		{Lo: 0x00B9, Hi: 0x00B9, Stride: 1},
		{Lo: 0x1369, Hi: 0x1371, Stride: 1},
		{Lo: 0x19DA, Hi: 0x19DA, Stride: 1},
		{Lo: 0x2070, Hi: 0x2070, Stride: 1},
		{Lo: 0x2074, Hi: 0x2079, Stride: 1},
		{Lo: 0x2080, Hi: 0x2089, Stride: 1},
		{Lo: 0x2460, Hi: 0x2468, Stride: 1},
		{Lo: 0x2474, Hi: 0x247C, Stride: 1},
		{Lo: 0x2488, Hi: 0x2490, Stride: 1},
		{Lo: 0x24EA, Hi: 0x24EA, Stride: 1},
		{Lo: 0x24F5, Hi: 0x24FD, Stride: 1},
		{Lo: 0x24FF, Hi: 0x24FF, Stride: 1},
		{Lo: 0x2776, Hi: 0x277E, Stride: 1},
		{Lo: 0x2780, Hi: 0x2788, Stride: 1},
		{Lo: 0x278A, Hi: 0x2792, Stride: 1},
	},
	R32: []unicode.Range32{
		{Lo: 0x10A40, Hi: 0x10A43, Stride: 1},
		{Lo: 0x10E60, Hi: 0x10E68, Stride: 1},
		{Lo: 0x11052, Hi: 0x1105A, Stride: 1},
		{Lo: 0x1F100, Hi: 0x1F10A, Stride: 1},
	},
	LatinOffset: 2,
}
