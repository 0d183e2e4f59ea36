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

// Validate decodes raw and checks it as a v2 or v3 record with the rules of
// stormlog's own validator (spec/stormlog.md; the reference module wins):
// every required field present, no field outside the known set, integers
// that are JSON integers of any size (no booleans, fractions or exponents),
// the bounds of each field, and the distributed-identity combinations of the
// explicit fields (metadata is not read: it is left as it is). It returns
// the record unchanged (a v2 record stays v2). A legacy record, without
// schema_version, is rejected: Normalize converts those.
//
// JSON is read as Python's json module reads it: NaN and Infinity are
// numbers, integers have any length (pyjson.go).
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

// check validates a decoded v2 or v3 record, reporting every problem.
func check(m map[string]any) error {
	c := checker{m: m}
	sv, ok := m[fieldSchemaVersion]
	if !ok {
		c.add("missing fields: schema_version (a legacy record: only legacy conversion accepts it)")
		return c.err()
	}
	ver, prob := pyIntValue(sv)
	if prob != "" || (ver.cmp64(2) != 0 && ver.cmp64(3) != 0) {
		c.addf("schema_version: unsupported schema_version %s", literal(sv))
		return c.err()
	}
	required, known := requiredV3, knownV3
	if ver.cmp64(2) == 0 {
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

	if ver.cmp64(3) == 0 {
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
		if okUsed && used.cmp(total) > 0 {
			c.addf("device_used_bytes: %s exceeds device_total_bytes %s", used, total)
		}
		if okFree && free.cmp(total) > 0 {
			c.addf("device_free_bytes: %s exceeds device_total_bytes %s", free, total)
		}
	}
	if v, ok := m[fieldContext]; ok {
		if _, isStr := v.(string); v != nil && !isStr {
			c.addf("context: must be a string or null, got %s", kind(v))
		}
	}
	if v, ok := m[fieldMetadata]; ok {
		if _, ok = v.(map[string]any); !ok {
			c.addf("metadata: must be a JSON object, got %s", kind(v))
		}
	}
	// An explicit rank, local_rank or world_size is an integer, never null
	// (the writer's defaults are 0, 0, 1); job_id may be null.
	for _, f := range []string{fieldRank, fieldLocalRank, fieldWorldSize} {
		if v, ok := m[f]; ok && v == nil {
			c.addf("%s: must be an integer, got null", f)
		}
	}
	// The combinations are those of the explicit fields alone: stormlog's
	// validator never reads metadata or the environment.
	_, probs := resolveIdentity(m, nil, nil)
	c.problems = append(c.problems, probs...)
	return c.err()
}

// noMin marks an integer field without a lower bound.
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

// nonEmptyString checks a present field is a string that is not only
// whitespace, where whitespace is Python's (str.strip()): wider than Go's,
// it includes U+001C–U+001F.
func (c *checker) nonEmptyString(f string) {
	v, ok := c.m[f]
	if !ok {
		return
	}
	if p := nonEmptyStringProblem(v); p != "" {
		c.add(f + ": " + p)
	}
}

// nonEmptyStringProblem says why v is not a non-empty string ("" if it is).
func nonEmptyStringProblem(v any) string {
	s, isStr := v.(string)
	switch {
	case !isStr:
		return "must be a non-empty string, got " + kind(v)
	case pyBlank(s):
		return fmt.Sprintf("must be a non-empty string, got %q", s)
	}
	return ""
}

// integer checks a present field is an integer (of any size) >= min, or
// null when nullable. ok reports a non-null integer that passed, for
// cross-field rules.
func (c *checker) integer(f string, min int64, nullable bool) (n pyInt, ok bool) {
	v, present := c.m[f]
	if !present || (nullable && v == nil) {
		return n, false
	}
	n, prob := pyIntValue(v)
	if prob != "" {
		if nullable {
			c.addf("%s: must be an integer or null, %s", f, prob)
		} else {
			c.addf("%s: must be an integer, %s", f, prob)
		}
		return n, false
	}
	if min != noMin && n.cmp64(min) < 0 {
		c.addf("%s: must be >= %d, got %s", f, min, n)
		return n, false
	}
	return n, true
}

// literal renders a decoded value for a message.
func literal(v any) string {
	switch v := v.(type) {
	case json.Number:
		return string(v)
	case NonFinite:
		return v.String()
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

// integer64 is integer for a field kept as an int64 (a snapshot's pid):
// beyond the 64-bit range is a problem there.
func (c *checker) integer64(f string, min int64) (int64, bool) {
	n, ok := c.integer(f, min, false)
	if !ok {
		return 0, false
	}
	v, fits := n.int64()
	if !fits {
		c.addf("%s: %s is beyond the 64-bit range", f, n)
		return 0, false
	}
	return v, true
}
