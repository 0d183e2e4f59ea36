package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestExportNAAPShape: envelopes the agent sent in NAAP mode (the native
// family in data.type) export as the native ones do.
func TestExportNAAPShape(t *testing.T) {
	rec := `"schema_version":3,"session_id":"sess-1","timestamp_ns":1767908945298000000,"event_type":"sample","collector":"edgerelay.nvml","sampling_interval_ms":1000,"pid":-1,"host":"node-1","device_id":0,"allocator_allocated_bytes":1048576,"allocator_reserved_bytes":2097152,"allocator_active_bytes":null,"allocator_inactive_bytes":null,"allocator_change_bytes":0,"device_used_bytes":3145728,"device_free_bytes":1000000,"device_total_bytes":80000000000,"context":null,"job_id":null,"rank":0,"local_rank":0,"world_size":1,"metadata":{"allocator_source":"push"}`
	lines := []string{
		`{"id":"n1","type":"ai_stream_events","timestamp":"1767908945298","gateway":"","data":{` + rec + `,"type":"gpu_memory_sample","gpu_idle":false,"orchestrator_info":{"address":"0x0","url":"https://o:8935"}}}`,
		`{"id":"n2","type":"ai_stream_events","timestamp":"1767908945298","gateway":"","data":{"type":"host_network_sample"}}`,
	}
	dir := filepath.Join(t.TempDir(), "out")
	code, stdout, stderr := exportLines(t, dir, []byte(strings.Join(lines, "\n")+"\n"))
	if code != 0 || !strings.Contains(stdout, "exported 1 record(s)") || !strings.Contains(stdout, "ai_stream_events 1") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
}
