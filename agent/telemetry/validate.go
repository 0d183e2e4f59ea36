package telemetry

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Error is a record that breaks rules of spec/stormlog.md. Each problem names
// its field; missing and unknown fields are listed sorted.
type Error struct {
	Problems []string
}

func (e *Error) Error() string { return strings.Join(e.Problems, "; ") }

// Validate decodes raw and checks it as a v2 or v3 record with the exact
// rules of spec/stormlog.md: every required field present, no field outside
// the known set, JSON integers only (no booleans, fractions or exponents),
// the bounds of each field, and the distributed-identity combinations
// (explicit fields, then metadata; no environment). It returns the record
// unchanged (a v2 record stays v2). A legacy record, without schema_version,
// is rejected: Normalize converts those.
//
// The error is an *Error, or a plain error when raw is not a JSON object.
func Validate(raw json.RawMessage) (Record, error) {
	m, err := decodeObject(raw)
	if err != nil {
		return nil, err
	}
	if err := check(m); err != nil {
		return nil, err
	}
	return Record(m), nil
}

// check validates a decoded v2 or v3 record.
func check(m map[string]any) error {
	c := checker{m: m}
	sv, ok := m[fieldSchemaVersion]
	if !ok {
		c.add("missing fields: schema_version (a legacy record: only legacy conversion accepts it)")
		return c.err()
	}
	ver, prob := intValue(sv)
	if prob != "" || (ver != 2 && ver != 3) {
		c.addf("schema_version: unsupported schema_version %s", literal(sv))
		return c.err()
	}
	required, known := requiredV3, knownV3
	if ver == 2 {
		required, known = requiredV2, knownV2
	}
	var missing, unknown []string
	for _, f := range required {
		if _, ok := m[f]; !ok {
			missing = append(missing, f)
		}
	}
	for f := range m {
		if !known[f] {
			unknown = append(unknown, f)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		c.add("missing fields: " + strings.Join(missing, ", "))
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		c.add("unknown fields: " + strings.Join(unknown, ", "))
	}

	if ver == 3 {
		c.nonEmptyString(fieldSessionID)
	}
	c.nonEmptyString(fieldEventType)
	c.nonEmptyString(fieldCollector)
	c.nonEmptyString(fieldHost)
	c.integer(fieldTimestampNS, 0, false)
	c.integer(fieldSamplingIntervalMS, 0, false)
	c.integer(fieldPID, -1, false)
	c.integer(fieldDeviceID, noMin, false)
	c.integer(fieldAllocated, 0, false)
	c.integer(fieldReserved, 0, false)
	c.integer(fieldChange, noMin, false)
	c.integer(fieldActive, 0, true)
	c.integer(fieldInactive, 0, true)
	used, okUsed := c.integer(fieldDeviceUsed, 0, false)
	free, okFree := c.integer(fieldDeviceFree, 0, true)
	total, okTotal := c.integer(fieldDeviceTotal, 0, true)
	if okTotal {
		if okUsed && used > total {
			c.addf("device_used_bytes: %d exceeds device_total_bytes %d", used, total)
		}
		if okFree && free > total {
			c.addf("device_free_bytes: %d exceeds device_total_bytes %d", free, total)
		}
	}
	if v, ok := m[fieldContext]; ok {
		if _, isStr := v.(string); v != nil && !isStr {
			c.addf("context: must be a string or null, got %s", kind(v))
		}
	}
	var meta map[string]any
	if v, ok := m[fieldMetadata]; ok {
		if meta, ok = v.(map[string]any); !ok {
			c.addf("metadata: must be a JSON object, got %s", kind(v))
		}
	}
	// The identity combinations are checked on the values resolved from the
	// explicit fields, then metadata, as a reader of the record resolves them.
	_, probs := resolveIdentity(m, meta, nil)
	c.problems = append(c.problems, probs...)
	return c.err()
}

const noMin = int64(-1) << 63

// checker collects problems of one record, in the order the spec lists
// its rules.
type checker struct {
	m        map[string]any
	problems []string
}

func (c *checker) add(p string)                    { c.problems = append(c.problems, p) }
func (c *checker) addf(format string, args ...any) { c.add(fmt.Sprintf(format, args...)) }

func (c *checker) err() error {
	if len(c.problems) == 0 {
		return nil
	}
	return &Error{Problems: c.problems}
}

// nonEmptyString checks a present field is a string that is not only spaces.
func (c *checker) nonEmptyString(f string) {
	v, ok := c.m[f]
	if !ok {
		return
	}
	s, isStr := v.(string)
	switch {
	case !isStr:
		c.addf("%s: must be a non-empty string, got %s", f, kind(v))
	case strings.TrimSpace(s) == "":
		c.addf("%s: must be a non-empty string, got %q", f, s)
	}
}

// integer checks a present field is an integer >= min (or null when
// nullable). ok reports a non-null integer that passed, for cross-field rules.
func (c *checker) integer(f string, min int64, nullable bool) (n int64, ok bool) {
	v, present := c.m[f]
	if !present || (nullable && v == nil) {
		return 0, false
	}
	n, prob := intValue(v)
	if prob != "" {
		if nullable {
			c.addf("%s: must be an integer or null, %s", f, prob)
		} else {
			c.addf("%s: must be an integer, %s", f, prob)
		}
		return 0, false
	}
	if n < min {
		c.addf("%s: must be >= %d, got %d", f, min, n)
		return 0, false
	}
	return n, true
}

// literal renders a decoded value for a message.
func literal(v any) string {
	switch v := v.(type) {
	case json.Number:
		return string(v)
	case string:
		return fmt.Sprintf("%q", v)
	case nil:
		return "null"
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return kind(v)
		}
		if len(b) > 40 {
			return kind(v)
		}
		return string(b)
	}
}
