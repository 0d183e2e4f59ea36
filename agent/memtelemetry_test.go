package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func v3Record(session string, ts int64, alloc int64) string {
	return fmt.Sprintf(`{"schema_version":3,"session_id":%q,"timestamp_ns":%d,"event_type":"sample","collector":"stormlog.cuda_tracker","sampling_interval_ms":100,"pid":4242,"host":"runner-a","device_id":0,"allocator_allocated_bytes":%d,"allocator_reserved_bytes":2097152,"allocator_active_bytes":null,"allocator_inactive_bytes":null,"allocator_change_bytes":0,"device_used_bytes":3145728,"device_free_bytes":null,"device_total_bytes":null,"context":null,"metadata":{},"job_id":null,"rank":0,"local_rank":0,"world_size":1}`, session, ts, alloc)
}

func TestTelemetryEndpoint(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	r.post(t, "/v1/sessions", `{"session_id":"sess-9","stream_id":"stream-9"}`)
	bad := strings.Replace(v3Record("sess-9", 2, 5), `"pid":4242`, `"pid":true`, 1)
	code, ans := r.post(t, "/v1/telemetry", `{"events":[`+v3Record("sess-9", 1, 1048576)+`,`+bad+`]}`)
	if code != http.StatusAccepted || ans.Accepted != 1 || len(ans.Rejected) != 1 || !strings.Contains(ans.Rejected[0].Error, "pid") {
		t.Fatalf("got %d %+v", code, ans)
	}
	var env struct {
		Type string
		Data map[string]json.RawMessage
	}
	json.Unmarshal([]byte(r.waitLines(t, 1)[0]), &env)
	if env.Type != "allocator_sample" || string(env.Data["allocator_allocated_bytes"]) != "1048576" ||
		string(env.Data["stream_id"]) != `"stream-9"` || string(env.Data["host"]) != `"runner-a"` || string(env.Data["client_source"]) != `"edgerelay"` {
		t.Errorf("envelope %s", r.waitLines(t, 1)[0])
	}
}

func TestAllocatorEndpointChange(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	snap := func(pid, dev int, alloc int64) string {
		return fmt.Sprintf(`{"pid":%d,"device_index":%d,"stats":{"allocated_bytes.all.current":%d,"reserved_bytes.all.current":%d,"active_bytes.all.current":%d,"inactive_split_bytes.all.current":0},"env":{"PIPELINE":"live-video-to-video","MODEL_ID":"sd"}}`, pid, dev, alloc, alloc*2, alloc)
	}
	for _, s := range []string{snap(100, 0, 1000), snap(200, 1, 5000), snap(100, 0, 1500), snap(200, 1, 4000)} {
		if code, ans := r.post(t, "/v1/allocator", s); code != http.StatusAccepted || ans.Accepted != 1 {
			t.Fatalf("%d %+v", code, ans)
		}
	}
	if code, ans := r.post(t, "/v1/allocator", `{"device_index":0,"stats":{},"bogus":1}`); code != http.StatusBadRequest || !strings.Contains(ans.Rejected[0].Error, "bogus") {
		t.Errorf("bad snapshot: %d %+v", code, ans)
	}
	lines := r.waitLines(t, 4)
	changes := map[string][]string{}
	for _, l := range lines {
		var env struct{ Data map[string]json.RawMessage }
		json.Unmarshal([]byte(l), &env)
		key := string(env.Data["pid"])
		changes[key] = append(changes[key], string(env.Data["allocator_change_bytes"]))
		if string(env.Data["pipeline"]) != `"live-video-to-video"` || string(env.Data["model_id"]) != `"sd"` {
			t.Errorf("identity missing: %s", l)
		}
	}
	if fmt.Sprint(changes["100"]) != "[0 500]" || fmt.Sprint(changes["200"]) != "[0 -1000]" {
		t.Errorf("changes %v", changes)
	}
}

func TestStormlogTail(t *testing.T) {
	dir := t.TempDir()
	seg := filepath.Join(dir, "segment-000001.jsonl")
	os.WriteFile(seg, []byte(v3Record("s1", 1, 10)+"\n"+v3Record("s1", 2, 20)+"\n"+`{"half":`), 0o644)
	r := startAgent(t, testEnv(t, map[string]string{"EDGERELAY_STORMLOG_DIR": dir}))
	lines := r.waitLines(t, 2)
	for i, want := range []string{`"allocator_allocated_bytes":10`, `"allocator_allocated_bytes":20`} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d: %s", i, lines[i])
		}
	}
	// Absence has no event to wait for: 100 ms span several polls of the
	// tail, any of which would have emitted a line it wrongly took whole.
	time.Sleep(100 * time.Millisecond)
	if n := len(r.out.Lines()); n != 2 {
		t.Errorf("%d lines: an incomplete line was emitted", n)
	}
}

// TestAllocatorPeerPID: over the unix socket, a snapshot without "pid" takes
// the peer's pid from SO_PEERCRED (here: this test process).
func TestAllocatorPeerPID(t *testing.T) {
	env := testEnv(t, nil)
	r := startAgent(t, env)
	uc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", env["EDGERELAY_SOCKET"])
	}}}
	defer uc.CloseIdleConnections()
	body := `{"device_index":0,"stats":{"allocated_bytes.all.current":10,"reserved_bytes.all.current":20}}`
	resp, err := uc.Post("http://agent/v1/allocator", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var env2 struct{ Data map[string]json.RawMessage }
	json.Unmarshal([]byte(r.waitLines(t, 1)[0]), &env2)
	if got, want := string(env2.Data["pid"]), fmt.Sprint(os.Getpid()); got != want {
		t.Errorf("pid %s, want the peer's %s", got, want)
	}
	// Over TCP there is no peer credential: the pid stays unknown.
	code, _ := r.post(t, "/v1/allocator", body)
	if code != http.StatusAccepted {
		t.Fatalf("tcp: %d", code)
	}
	json.Unmarshal([]byte(r.waitLines(t, 2)[1]), &env2)
	if got := string(env2.Data["pid"]); got != "-1" {
		t.Errorf("pid over TCP %s, want -1", got)
	}
}

// TestStormlogTailSegmentSession: a record without a session id takes the
// session its segment has in the sink's manifest, as stormlog's loader
// gives it.
func TestStormlogTailSegmentSession(t *testing.T) {
	dir := t.TempDir()
	v2 := strings.Replace(strings.Replace(v3Record("x", 1, 10), `"schema_version":3`, `"schema_version":2`, 1), `"session_id":"x",`, "", 1)
	if strings.Contains(v2, "session_id") || !strings.Contains(v2, `"schema_version":2`) {
		t.Fatalf("not a v2 record without a session id: %s", v2)
	}
	os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"schema_version":2,"segments":[{"filename":"segment-000001.jsonl","session_id":"from-manifest"}]}`), 0o644)
	os.WriteFile(filepath.Join(dir, "segment-000001.jsonl"), []byte(v2+"\n"), 0o644)
	r := startAgent(t, testEnv(t, map[string]string{"EDGERELAY_STORMLOG_DIR": dir}))
	var env struct{ Data map[string]json.RawMessage }
	json.Unmarshal([]byte(r.waitLines(t, 1)[0]), &env)
	if got := string(env.Data["session_id"]); got != `"from-manifest"` {
		t.Errorf("session_id %s, want the manifest's", got)
	}
}
