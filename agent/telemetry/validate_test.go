package telemetry

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

type ruleCase struct {
	name string
	raw  json.RawMessage
	want string // "" = valid; else the exact error
}

func runRules(t *testing.T, cases []ruleCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := Validate(tc.raw)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v, want valid", err)
				}
				if rec == nil {
					t.Fatal("valid record returned nil")
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %s, want %q", tc.raw, tc.want)
			}
			if err.Error() != tc.want {
				t.Fatalf("error\n got %q\nwant %q", err.Error(), tc.want)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error", err)
			}
		})
	}
}

func TestValidateFieldSets(t *testing.T) {
	runRules(t, []ruleCase{
		{"v3 valid", json.RawMessage(baseV3), ""},
		{"v2 valid", v2(t, nil), ""},
		{"v3 with optional identity defaults", edit(t, baseV3, map[string]string{"job_id": "null", "rank": "0", "local_rank": "0", "world_size": "1"}), ""},
		{"missing listed sorted", edit(t, baseV3, nil, "pid", "device_id"), "missing fields: device_id, pid"},
		{"v3 missing session_id", edit(t, baseV3, nil, "session_id"), "missing fields: session_id"},
		{"unknown listed sorted", edit(t, baseV3, map[string]string{"zeta": "1", "alpha": `"x"`}), "unknown fields: alpha, zeta"},
		{"v2 with session_id is unknown", v2(t, map[string]string{"session_id": `"s"`}), "unknown fields: session_id"},
		{"missing and unknown together", edit(t, baseV3, map[string]string{"extra": "1"}, "host", "context"), "missing fields: context, host; unknown fields: extra"},
		{"all missing", json.RawMessage(`{"schema_version":3}`), "missing fields: allocator_active_bytes, allocator_allocated_bytes, allocator_change_bytes, allocator_inactive_bytes, allocator_reserved_bytes, collector, context, device_free_bytes, device_id, device_total_bytes, device_used_bytes, event_type, host, metadata, pid, sampling_interval_ms, session_id, timestamp_ns"},
	})
}

func TestValidateSchemaVersion(t *testing.T) {
	runRules(t, []ruleCase{
		{"4", edit(t, baseV3, map[string]string{"schema_version": "4"}), "schema_version: unsupported schema_version 4"},
		{"1", edit(t, baseV3, map[string]string{"schema_version": "1"}), "schema_version: unsupported schema_version 1"},
		{"string 3", edit(t, baseV3, map[string]string{"schema_version": `"3"`}), `schema_version: unsupported schema_version "3"`},
		{"3.0", edit(t, baseV3, map[string]string{"schema_version": "3.0"}), "schema_version: unsupported schema_version 3.0"},
		{"boolean", edit(t, baseV3, map[string]string{"schema_version": "true"}), "schema_version: unsupported schema_version true"},
		{"null", edit(t, baseV3, map[string]string{"schema_version": "null"}), "schema_version: unsupported schema_version null"},
		{"legacy", edit(t, baseV3, nil, "schema_version"), "missing fields: schema_version (a legacy record: only legacy conversion accepts it)"},
	})
}

// Every integer field rejects booleans, fractions, exponents, strings.
func TestValidateIntegers(t *testing.T) {
	fields := []string{
		"timestamp_ns", "sampling_interval_ms", "pid", "device_id",
		"allocator_allocated_bytes", "allocator_reserved_bytes", "allocator_change_bytes",
		"allocator_active_bytes", "allocator_inactive_bytes",
		"device_used_bytes", "device_free_bytes", "device_total_bytes",
	}
	nullable := map[string]bool{"allocator_active_bytes": true, "allocator_inactive_bytes": true, "device_free_bytes": true, "device_total_bytes": true}
	var cases []ruleCase
	for _, f := range fields {
		must := "must be an integer"
		if nullable[f] {
			must = "must be an integer or null"
		}
		for _, bad := range []struct{ val, why string }{
			{"true", "got a boolean"},
			{"false", "got a boolean"},
			{"1.5", "got a number with a fraction or exponent (1.5)"},
			{"1.0", "got a number with a fraction or exponent (1.0)"},
			{"1e3", "got a number with a fraction or exponent (1e3)"},
			{"1E3", "got a number with a fraction or exponent (1E3)"},
			{`"5"`, "got a string"},
			{"[]", "got an array"},
			{"{}", "got an object"},
			{"NaN", "got NaN"},
			{"-Infinity", "got -Infinity"},
		} {
			cases = append(cases, ruleCase{f + "=" + bad.val, edit(t, baseV3, map[string]string{f: bad.val}), f + ": " + must + ", " + bad.why})
		}
		if nullable[f] {
			cases = append(cases, ruleCase{f + "=null", edit(t, baseV3, map[string]string{f: "null"}), ""})
		} else {
			cases = append(cases, ruleCase{f + "=null", edit(t, baseV3, map[string]string{f: "null"}), f + ": must be an integer, got null"})
		}
	}
	runRules(t, cases)
}

// Values beyond 2^53, and beyond 64 bits (Python's integers have no
// bound), are kept exact through Validate and MarshalJSON.
func TestValidateBigIntegersExact(t *testing.T) {
	for _, v := range []string{"9007199254740993", "9223372036854775807", "18014398509481985", "18446744073709551616", "1" + strings.Repeat("0", 60)} {
		t.Run(v, func(t *testing.T) {
			raw := edit(t, baseV3, map[string]string{
				"timestamp_ns": v, "allocator_allocated_bytes": v, "allocator_reserved_bytes": v,
				"device_total_bytes": "null", "device_used_bytes": v,
			})
			rec, err := Validate(raw)
			if err != nil {
				t.Fatal(err)
			}
			out, err := json.Marshal(rec)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"timestamp_ns", "allocator_allocated_bytes", "device_used_bytes"} {
				if !strings.Contains(string(out), `"`+f+`":`+v+`,`) && !strings.HasSuffix(string(out), `"`+f+`":`+v+`}`) {
					t.Errorf("%s not exact in %s", f, out)
				}
			}
			n, ok := rec.Int("allocator_allocated_bytes")
			if fits := len(v) < 19 || v == "9223372036854775807"; ok != fits || (ok && fmt.Sprint(n) != v) {
				t.Errorf("Int = %d, %v; want %s (64-bit: %v)", n, ok, v, fits)
			}
		})
	}
}

func TestValidateStrings(t *testing.T) {
	var cases []ruleCase
	for _, f := range []string{"session_id", "event_type", "collector", "host"} {
		cases = append(cases,
			ruleCase{f + " empty", edit(t, baseV3, map[string]string{f: `""`}), f + `: must be a non-empty string, got ""`},
			ruleCase{f + " spaces", edit(t, baseV3, map[string]string{f: `"  \t"`}), f + `: must be a non-empty string, got "  \t"`},
			ruleCase{f + " number", edit(t, baseV3, map[string]string{f: `5`}), f + `: must be a non-empty string, got a number`},
			ruleCase{f + " null", edit(t, baseV3, map[string]string{f: `null`}), f + `: must be a non-empty string, got null`},
			ruleCase{f + " padded ok", edit(t, baseV3, map[string]string{f: `" x "`}), ""},
			// Python's str.strip() also strips U+001C–U+001F.
			ruleCase{f + " separators", edit(t, baseV3, map[string]string{f: `"\u001c\u001d\u001e\u001f"`}), f + `: must be a non-empty string, got "\x1c\x1d\x1e\x1f"`},
			ruleCase{f + " zero width space ok", edit(t, baseV3, map[string]string{f: `"\u200b"`}), ""},
		)
	}
	runRules(t, cases)
}

func TestValidateBounds(t *testing.T) {
	runRules(t, []ruleCase{
		{"timestamp_ns 0", edit(t, baseV3, map[string]string{"timestamp_ns": "0"}), ""},
		{"timestamp_ns -1", edit(t, baseV3, map[string]string{"timestamp_ns": "-1"}), "timestamp_ns: must be >= 0, got -1"},
		{"sampling_interval_ms 0", edit(t, baseV3, map[string]string{"sampling_interval_ms": "0"}), ""},
		{"sampling_interval_ms -1", edit(t, baseV3, map[string]string{"sampling_interval_ms": "-1"}), "sampling_interval_ms: must be >= 0, got -1"},
		{"pid -1 unknown", edit(t, baseV3, map[string]string{"pid": "-1"}), ""},
		{"pid -2", edit(t, baseV3, map[string]string{"pid": "-2"}), "pid: must be >= -1, got -2"},
		{"device_id -1 cpu", edit(t, baseV3, map[string]string{"device_id": "-1"}), ""},
		{"device_id any integer", edit(t, baseV3, map[string]string{"device_id": "-7"}), ""},
		{"allocated 0", edit(t, baseV3, map[string]string{"allocator_allocated_bytes": "0"}), ""},
		{"allocated -1", edit(t, baseV3, map[string]string{"allocator_allocated_bytes": "-1"}), "allocator_allocated_bytes: must be >= 0, got -1"},
		{"reserved -1", edit(t, baseV3, map[string]string{"allocator_reserved_bytes": "-1"}), "allocator_reserved_bytes: must be >= 0, got -1"},
		{"change negative", edit(t, baseV3, map[string]string{"allocator_change_bytes": "-9007199254740993"}), ""},
		{"active -1", edit(t, baseV3, map[string]string{"allocator_active_bytes": "-1"}), "allocator_active_bytes: must be >= 0, got -1"},
		{"inactive -1", edit(t, baseV3, map[string]string{"allocator_inactive_bytes": "-1"}), "allocator_inactive_bytes: must be >= 0, got -1"},
		{"used -1", edit(t, baseV3, map[string]string{"device_used_bytes": "-1"}), "device_used_bytes: must be >= 0, got -1"},
		{"free -1", edit(t, baseV3, map[string]string{"device_free_bytes": "-1"}), "device_free_bytes: must be >= 0, got -1"},
		{"total -1", edit(t, baseV3, map[string]string{"device_total_bytes": "-1"}), "device_total_bytes: must be >= 0, got -1"},
		{"used = total", edit(t, baseV3, map[string]string{"device_used_bytes": "100", "device_free_bytes": "0", "device_total_bytes": "100"}), ""},
		{"used > total", edit(t, baseV3, map[string]string{"device_used_bytes": "101", "device_free_bytes": "0", "device_total_bytes": "100"}), "device_used_bytes: 101 exceeds device_total_bytes 100"},
		{"free > total", edit(t, baseV3, map[string]string{"device_used_bytes": "1", "device_free_bytes": "101", "device_total_bytes": "100"}), "device_free_bytes: 101 exceeds device_total_bytes 100"},
		{"both exceed", edit(t, baseV3, map[string]string{"device_used_bytes": "200", "device_free_bytes": "101", "device_total_bytes": "100"}), "device_used_bytes: 200 exceeds device_total_bytes 100; device_free_bytes: 101 exceeds device_total_bytes 100"},
		{"no total: used unbounded", edit(t, baseV3, map[string]string{"device_used_bytes": "9223372036854775807", "device_free_bytes": "5", "device_total_bytes": "null"}), ""},
		{"null free with total", edit(t, baseV3, map[string]string{"device_free_bytes": "null"}), ""},
	})
}

func TestValidateContextMetadata(t *testing.T) {
	runRules(t, []ruleCase{
		{"context string", edit(t, baseV3, map[string]string{"context": `"forward pass"`}), ""},
		{"context empty string", edit(t, baseV3, map[string]string{"context": `""`}), ""},
		{"context number", edit(t, baseV3, map[string]string{"context": `5`}), "context: must be a string or null, got a number"},
		{"context object", edit(t, baseV3, map[string]string{"context": `{}`}), "context: must be a string or null, got an object"},
		{"metadata nested", edit(t, baseV3, map[string]string{"metadata": `{"a":{"b":[1,2.5,true]}}`}), ""},
		{"metadata array", edit(t, baseV3, map[string]string{"metadata": `[]`}), "metadata: must be a JSON object, got an array"},
		{"metadata null", edit(t, baseV3, map[string]string{"metadata": `null`}), "metadata: must be a JSON object, got null"},
		{"metadata string", edit(t, baseV3, map[string]string{"metadata": `"x"`}), "metadata: must be a JSON object, got a string"},
	})
}

func TestValidateIdentity(t *testing.T) {
	id := func(set map[string]string) json.RawMessage { return edit(t, baseV3, set) }
	runRules(t, []ruleCase{
		{"job_id null", id(map[string]string{"job_id": "null"}), ""},
		{"job_id string", id(map[string]string{"job_id": `"job-7"`}), ""},
		{"job_id empty", id(map[string]string{"job_id": `""`}), `job_id: must be null or a non-empty string, got ""`},
		{"job_id spaces", id(map[string]string{"job_id": `"  "`}), `job_id: must be null or a non-empty string, got "  "`},
		{"job_id number", id(map[string]string{"job_id": `7`}), `job_id: must be null or a non-empty string, got 7`},
		{"rank 3 of 4, local 3", id(map[string]string{"rank": "3", "local_rank": "3", "world_size": "4"}), ""},
		{"rank 5 of 8, local 1", id(map[string]string{"rank": "5", "local_rank": "1", "world_size": "8"}), ""},
		{"rank = world_size", id(map[string]string{"rank": "4", "local_rank": "0", "world_size": "4"}), "rank: 4 must be < world_size 4"},
		{"local_rank = world_size", id(map[string]string{"rank": "0", "local_rank": "4", "world_size": "4"}), "local_rank: 4 must be < world_size 4"},
		{"both beyond", id(map[string]string{"rank": "9", "local_rank": "9", "world_size": "4"}), "rank: 9 must be < world_size 4; local_rank: 9 must be < world_size 4"},
		{"world_size 1 rank 1", id(map[string]string{"rank": "1", "local_rank": "0", "world_size": "1"}), "rank: must be 0 when world_size is 1, got 1"},
		{"world_size 1 local 1", id(map[string]string{"rank": "0", "local_rank": "1", "world_size": "1"}), "local_rank: must be 0 when world_size is 1, got 1"},
		{"world_size 0", id(map[string]string{"world_size": "0"}), "world_size: must be >= 1, got 0"},
		{"rank -1", id(map[string]string{"rank": "-1", "world_size": "2"}), "rank: must be >= 0, got -1"},
		{"local_rank -1", id(map[string]string{"local_rank": "-1", "world_size": "2"}), "local_rank: must be >= 0, got -1"},
		{"rank without world_size defaults to 1", id(map[string]string{"rank": "2"}), "rank: must be 0 when world_size is 1, got 2"},
		{"world_size alone", id(map[string]string{"world_size": "2"}), ""},
		{"local_rank takes rank", id(map[string]string{"rank": "1", "world_size": "2"}), ""},
		{"local_rank takes rank beyond", id(map[string]string{"rank": "2", "world_size": "2"}), "rank: 2 must be < world_size 2"},
		{"rank boolean", id(map[string]string{"rank": "true", "world_size": "2"}), "rank: must be an integer, got a boolean"},
		{"world_size fraction", id(map[string]string{"world_size": "2.0"}), "world_size: must be an integer, got a number with a fraction or exponent (2.0)"},
		{"rank null", id(map[string]string{"rank": "null"}), "rank: must be an integer, got null"},
		{"job_id U+001F only", id(map[string]string{"job_id": `"\u001f"`}), `job_id: must be null or a non-empty string, got "\x1f"`},
		{"identity beyond 64 bits", id(map[string]string{"rank": "5" + strings.Repeat("0", 24), "local_rank": "3", "world_size": "1" + strings.Repeat("0", 25)}), ""},
		{"rank beyond 64 bits, world_size 2", id(map[string]string{"rank": "18446744073709551616", "world_size": "2"}), "rank: 18446744073709551616 must be < world_size 2"},
		// Stormlog reads identity from metadata for legacy records only: a
		// v2/v3 record's metadata is left as it is, whatever it holds.
		{"metadata identity ignored", id(map[string]string{"metadata": `{"rank":1,"world_size":2,"job_id":"j"}`}), ""},
		{"metadata rank beyond ignored", id(map[string]string{"metadata": `{"rank":3,"world_size":2}`}), ""},
		{"metadata rank string ignored", id(map[string]string{"metadata": `{"rank":"1"}`}), ""},
		{"metadata job_id blank ignored", id(map[string]string{"metadata": `{"job_id":""}`}), ""},
		{"metadata does not rescue explicit", id(map[string]string{"rank": "1", "metadata": `{"world_size":2}`}), "rank: must be 0 when world_size is 1, got 1"},
	})
}

func TestValidateNotAnObject(t *testing.T) {
	for _, raw := range []string{`[]`, `5`, `"x"`, `null`, `{"a":`, `{} {}`, ``, "{\"a\":\"\xff\"}", `{"a":1` + strings.Repeat("0", 4300) + `}`} {
		if _, err := Validate(json.RawMessage(raw)); err == nil {
			t.Errorf("Validate(%q) accepted", raw)
		}
	}
	_, err := Validate(json.RawMessage(`[1]`))
	if err == nil || err.Error() != "record must be a JSON object, got an array" {
		t.Fatalf("err = %v", err)
	}
}

// Several problems come back together, in rule order.
func TestValidateReportsEveryProblem(t *testing.T) {
	raw := edit(t, baseV3, map[string]string{"pid": "true", "host": `""`, "extra": "1", "device_used_bytes": "-5"}, "collector")
	_, err := Validate(raw)
	want := `missing fields: collector; unknown fields: extra; host: must be a non-empty string, got ""; pid: must be an integer, got a boolean; device_used_bytes: must be >= 0, got -5`
	if err == nil || err.Error() != want {
		t.Fatalf("err\n got %v\nwant %s", err, want)
	}
}

func TestRecordMarshalSortedExact(t *testing.T) {
	rec, err := Validate(edit(t, baseV3, map[string]string{"metadata": `{"z":1,"a":{"y":2.50,"b":"<&>"}}`, "allocator_allocated_bytes": "12345678901234567"}))
	if err != nil {
		t.Fatal(err)
	}
	out, err := rec.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if !strings.HasPrefix(s, `{"allocator_active_bytes":1048576,"allocator_allocated_bytes":12345678901234567,`) {
		t.Errorf("not sorted or not exact: %s", s)
	}
	if !strings.Contains(s, `"metadata":{"a":{"b":"<&>","y":2.50},"z":1}`) {
		t.Errorf("metadata not sorted/verbatim: %s", s)
	}
	if rec.SessionID() != "sess-1" || rec.PID() != 4242 || rec.DeviceID() != 0 || rec.TimestampNS() != 1767908945298000000 {
		t.Errorf("accessors: %q %d %d %d", rec.SessionID(), rec.PID(), rec.DeviceID(), rec.TimestampNS())
	}
	if (Record{}).DeviceID() != -1 || (Record{}).PID() != -1 || (Record{}).SessionID() != "" {
		t.Error("accessors of an empty record")
	}
}

func TestIsV3Field(t *testing.T) {
	for name, want := range map[string]bool{"session_id": true, "schema_version": true, "world_size": true, "metadata": true, "name": false, "gpu_id": false, "": false} {
		if IsV3Field(name) != want {
			t.Errorf("IsV3Field(%q) = %v", name, !want)
		}
	}
}
