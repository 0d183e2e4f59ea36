package telemetry

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sinkRecord(t *testing.T, session string, ts int64, eventType string, meta string) Record {
	t.Helper()
	rec, err := Normalize(edit(t, baseV3, map[string]string{
		"session_id": fmt.Sprintf("%q", session), "timestamp_ns": fmt.Sprint(ts),
		"event_type": fmt.Sprintf("%q", eventType), "metadata": meta,
	}), NormalizeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func readManifest(t *testing.T, dir string) map[string]any {
	t.Helper()
	body, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeObject(body)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSinkWriter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sink")
	w, err := NewSinkWriter(dir, SinkWriterOptions{MaxSegmentRecords: 3, MaxOpenSegments: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Session a: 4 records (two segments), one of them a stop; b and c
	// interleave, so with two open segments at most, b's is closed when c
	// opens and b's next record starts a new segment.
	writes := []struct {
		session string
		ts      int64
		typ     string
	}{{"a", 30, "sample"}, {"a", 10, "sample"}, {"b", 50, "sample"}, {"a", 20, "stop"}, {"a", 40, "sample"}, {"c", 5, "sample"}, {"b", 60, "sample"}}
	for _, wr := range writes {
		if err := w.Write(sinkRecord(t, wr.session, wr.ts, wr.typ, `{"x":NaN}`)); err != nil {
			t.Fatal(err)
		}
	}
	raw2, _ := decodeObject(v2(t, nil))
	if err := w.Write(Record(raw2)); err == nil {
		t.Error("a raw v2 record was written")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if st := w.Stats(); st != (SinkStats{Records: 7, Sessions: 3, Segments: 5}) {
		t.Errorf("stats %+v", st)
	}

	m := readManifest(t, dir)
	if m["format"] != "stormlog.append_only_telemetry_sink" || m["schema_version"] != json.Number("2") {
		t.Errorf("manifest header %v %v", m["format"], m["schema_version"])
	}
	var segs []string
	for _, s := range m["segments"].([]any) {
		seg := s.(map[string]any)
		segs = append(segs, fmt.Sprintf("%s:%v:%v:%v", seg["filename"], seg["session_id"], seg["event_count"], seg["closed"]))
		body, err := os.ReadFile(filepath.Join(dir, seg["filename"].(string)))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(len(body)) != fmt.Sprint(seg["size_bytes"]) {
			t.Errorf("%s: %d bytes, manifest says %v", seg["filename"], len(body), seg["size_bytes"])
		}
		for _, line := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
			if !strings.HasPrefix(line, `{"allocator_active_bytes":`) || !strings.Contains(line, `"metadata":{"x":NaN}`) {
				t.Errorf("line not sorted or NaN not bare: %s", line)
			}
			if _, err := Validate([]byte(line)); err != nil {
				t.Errorf("segment line invalid: %v", err)
			}
		}
	}
	want := "segment-000001.jsonl:a:3:true segment-000002.jsonl:b:1:true segment-000003.jsonl:a:1:true segment-000004.jsonl:c:1:true segment-000005.jsonl:b:1:true"
	if got := strings.Join(segs, " "); got != want {
		t.Errorf("segments\n got %s\nwant %s", got, want)
	}
	var sessions []string
	for _, s := range m["sessions"].([]any) {
		ss := s.(map[string]any)
		sessions = append(sessions, fmt.Sprintf("%s:%s:%v:%v:%s", ss["session_id"], ss["status"], ss["started_at_ns"], ss["ended_at_ns"], ss["source"]))
	}
	if got, want := strings.Join(sessions, " "), "c:incomplete:5:<nil>:edgerelay.export a:completed:10:20:edgerelay.export b:incomplete:50:<nil>:edgerelay.export"; got != want {
		t.Errorf("sessions\n got %s\nwant %s", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "manifest.tmp")); !os.IsNotExist(err) {
		t.Errorf("manifest.tmp left behind: %v", err)
	}
	if err := w.Write(sinkRecord(t, "a", 1, "sample", "{}")); err == nil {
		t.Error("Write after Close")
	}
}

// A directory with no records still loads in stormlog: one empty segment.
func TestSinkWriterEmpty(t *testing.T) {
	dir := t.TempDir()
	w, err := NewSinkWriter(dir, SinkWriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(filepath.Join(dir, "segment-000001.jsonl"))
	if err != nil || len(body) != 0 {
		t.Fatalf("%q %v", body, err)
	}
	if segs := readManifest(t, dir)["segments"].([]any); len(segs) != 1 || segs[0].(map[string]any)["session_id"] != nil {
		t.Fatalf("segments %v", segs)
	}
}

func TestSinkWriterRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSinkWriter(dir, SinkWriterOptions{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewSinkWriter(t.TempDir(), SinkWriterOptions{MaxSegmentRecords: -1, MaxOpenSegments: -2}); err == nil ||
		!strings.Contains(err.Error(), "MaxSegmentRecords") || !strings.Contains(err.Error(), "MaxOpenSegments") {
		t.Fatalf("err = %v", err)
	}
}
