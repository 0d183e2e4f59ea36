package telemetry

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the expected outputs under testdata/validate")

// corpus is every path of the committed corpus, files and the sink directory.
func corpus(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("testdata/validate")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "expected") {
			continue
		}
		paths = append(paths, filepath.Join("testdata/validate", e.Name()))
	}
	return paths
}

// The corpus checked through ValidateFiles, in each output mode, against
// committed expected outputs; the key lines are also asserted here so the
// expectations say what they check.
func TestValidateFilesCorpus(t *testing.T) {
	paths := corpus(t)
	cases := []struct {
		golden      string
		jsonOut     bool
		allowLegacy bool
		invalid     int
		mustHave    []string
	}{
		{"expected.txt", false, false, 18, []string{
			"testdata/validate/broken_array.json: invalid JSON: unexpected end of input, expecting a value at byte 23\n",
			"testdata/validate/mixed.jsonl:2: missing fields: host; unknown fields: extra_field\n",
			"testdata/validate/mixed.jsonl:3: invalid JSON: unexpected end of input, expecting a value at byte 33\n",
			"testdata/validate/mixed.jsonl:6: pid: must be >= -1, got -2\n",
			"testdata/validate/mixed.jsonl:7: sampling_interval_ms: must be an integer, got a number with a fraction or exponent (1e2)\n",
			"testdata/validate/mixed.jsonl:8: schema_version: unsupported schema_version 4\n",
			"testdata/validate/invalid_array.json:3: pid: must be an integer, got a boolean\n",
			"testdata/validate/invalid_array.json:4: allocator_allocated_bytes: must be an integer, got a number with a fraction or exponent (1.5)\n",
			"testdata/validate/invalid_array.json:5: rank: 2 must be < world_size 2\n",
			"testdata/validate/legacy.jsonl:1: missing fields: schema_version",
			"testdata/validate/not_json.txt: invalid JSON: invalid character 't', expecting a value at byte 0\n",
			// As stormlog reads files: JSON lines are not JSON in a .json
			// file; a line ended by "\r" is a complete line.
			"testdata/validate/lines_in.json: invalid JSON: invalid character '{' after the value at byte 536\n",
			"testdata/validate/truncated_after_cr.jsonl:2: invalid JSON: unterminated string at byte 29\n",
			"testdata/validate/nan.jsonl:2: missing fields: schema_version",
			"testdata/validate/sinkdir/segment-000002.jsonl:2: world_size: must be >= 1, got 0\n",
			"testdata/validate/sinkdir/segment-000010.jsonl:1: device_used_bytes: 90000000000 exceeds device_total_bytes 80000000000\n",
		}},
		{"expected_legacy.txt", false, true, 15, []string{
			"testdata/validate/legacy.jsonl:3: timestamp: a legacy record needs timestamp_ns, or timestamp in seconds (got neither)\n",
		}},
		{"expected.json", true, false, 18, []string{
			`{"file":"testdata/validate/broken_array.json","line":0,"index":-1,"error":"invalid JSON: unexpected end of input, expecting a value at byte 23"}` + "\n",
			`{"file":"testdata/validate/mixed.jsonl","line":3,"index":2,"error":"invalid JSON: unexpected end of input, expecting a value at byte 33"}` + "\n",
			`{"file":"testdata/validate/invalid_array.json","line":5,"index":3,"error":"rank: 2 must be < world_size 2"}` + "\n",
			`{"file":"testdata/validate/not_json.txt","line":0,"index":-1,"error":"invalid JSON: invalid character 't', expecting a value at byte 0"}` + "\n",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.golden, func(t *testing.T) {
			var out bytes.Buffer
			invalid, err := ValidateFiles(paths, &out, tc.jsonOut, tc.allowLegacy)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata/validate", tc.golden)
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != string(want) {
				t.Errorf("output differs from %s:\n%s", golden, out.String())
			}
			if invalid != tc.invalid || invalid != strings.Count(out.String(), "\n") {
				t.Errorf("invalid = %d, want %d (lines %d)", invalid, tc.invalid, strings.Count(out.String(), "\n"))
			}
			for _, s := range tc.mustHave {
				if !strings.Contains(out.String(), s) {
					t.Errorf("output lacks %q", s)
				}
			}
			for _, clean := range []string{"/valid_array.json", "valid_events.json", "single_v2.json", "bigints.jsonl", "segment-000001.jsonl", "segment-000011.jsonl", "mixed.jsonl:1:", "mixed.jsonl:4:", "mixed.jsonl:9",
				"empty.jsonl", "truncated_only.jsonl", "cr_line_ends.jsonl", "nan.jsonl:1:"} {
				if strings.Contains(out.String(), clean) {
					t.Errorf("valid input reported: %s", clean)
				}
			}
			if tc.jsonOut {
				for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
					var v struct {
						File  string `json:"file"`
						Line  *int   `json:"line"`
						Index *int   `json:"index"`
						Error string `json:"error"`
					}
					if err := json.Unmarshal([]byte(line), &v); err != nil || v.File == "" || v.Line == nil || v.Index == nil || v.Error == "" {
						t.Errorf("bad JSON report line %q: %v", line, err)
					}
				}
			}
		})
	}
}

func TestValidateFilesAllValid(t *testing.T) {
	var out bytes.Buffer
	invalid, err := ValidateFiles([]string{"testdata/validate/valid_array.json", "testdata/validate/valid_events.json", "testdata/validate/bigints.jsonl"}, &out, false, false)
	if err != nil || invalid != 0 || out.Len() != 0 {
		t.Fatalf("invalid %d err %v out %q", invalid, err, out.String())
	}
}

func TestValidateFilesErrors(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	invalid, err := ValidateFiles([]string{filepath.Join(dir, "absent.json"), dir, "testdata/validate/mixed.jsonl"}, &out, false, false)
	if err == nil || !strings.Contains(err.Error(), "absent.json") || !strings.Contains(err.Error(), "not a stormlog sink directory") {
		t.Fatalf("err = %v", err)
	}
	if invalid != 5 { // the readable file is still checked
		t.Fatalf("invalid = %d", invalid)
	}
	if _, err := ValidateFiles([]string{"testdata/validate/mixed.jsonl"}, failWriter{}, false, false); err == nil ||
		!strings.Contains(err.Error(), "writing the report") || strings.Count(err.Error(), "writing") != 1 {
		t.Fatalf("write error: %v", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, os.ErrClosed }

// JSON lines split as Python's str.splitlines() splits text read with
// universal newlines.
func TestJSONLinesAsStormlogReadsThem(t *testing.T) {
	rec := `{"a":1}`
	cases := []struct {
		name  string
		body  string
		lines []int // lines of the items, negative for a malformed one
		err   bool
	}{
		{"empty", "", nil, false},
		{"lf", rec + "\n" + rec + "\n", []int{1, 2}, false},
		{"cr", rec + "\r" + rec + "\r", []int{1, 2}, false},
		{"crlf", rec + "\r\n\r\n" + rec, []int{1, 3}, false},
		{"truncated final line ignored", rec + "\n{\"a\"", []int{1}, false},
		{"final line ended by cr is complete", rec + "\n{\"a\"\r", []int{1, -2}, false},
		{"vertical tab breaks a line, and is not JSON whitespace", rec + "\v" + rec + "\n", []int{-1, 2}, false},
		{"final line ended by vertical tab is truncated", rec + "\n" + rec + "\v", []int{1}, false},
		{"U+2028 inside a string breaks it", "{\"a\":\"x\u2028y\"}\n" + rec + "\n", []int{-1, -2, 3}, false},
		{"U+001F line is blank", "\x1f\n" + rec + "\n", []int{2}, false},
		{"U+001C is a line break", "\x1c\n" + rec + "\n", []int{3}, false},
		{"digit limit is never forgiven", rec + "\n{\"a\":" + strings.Repeat("1", 4301), []int{1, -2}, false},
		{"not UTF-8", "\xff\n", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			items, err := jsonLines([]byte(tc.body))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v", err)
			}
			var got []int
			for _, it := range items {
				if it.Err != nil {
					got = append(got, -it.Line)
				} else {
					got = append(got, it.Line)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.lines) {
				t.Fatalf("lines %v, want %v", got, tc.lines)
			}
		})
	}
}
