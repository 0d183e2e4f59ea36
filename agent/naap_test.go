//go:build linux && cgo

package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepeer/edgerelay/agent/naap/naaptest"
	"github.com/livepeer/edgerelay/agent/pipeline"
	"github.com/livepeer/edgerelay/agent/session"
	"github.com/livepeer/edgerelay/agent/telemetry"
	"github.com/livepeer/edgerelay/nvml"
)

// TestNAAPDemoRun runs the demo (simulated DGX H100, host network,
// agent_status every second) for 60 seconds of the test's own clock
// (testing/synctest: no real minute, no dependence on the machine's speed)
// in NAAP mode, with three stream sessions on three of the eight GPUs, a
// runner posting its own events and allocator figures. Every envelope the
// agent emits must pass the pipeline's ingest rules (naaptest, from
// spec/naap.md): accepted family, non-empty unique id, a millisecond
// timestamp, and the dimensions the APIs join on; a session's events also
// carry stream_id, request_id, pipeline, model_id and gpu_id. Every GPU
// sample of a GPU serving a session carries the session; the others say
// gpu_idle.
func TestNAAPDemoRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A /proc of the sim's GPU processes (pids 10000+i), children of
		// runner 7000 (GPU 0) or of init; the session on GPU 2 is runner
		// 10002 itself.
		proc := t.TempDir()
		for i := range 8 {
			ppid := 1
			if i == 0 {
				ppid = 7000
			}
			writeProcStat(t, proc, 10000+i, ppid)
		}
		writeProcStat(t, proc, 7000, 1)

		args := []string{"--demo", "--listen", "off", "--socket", "off", "--spool=off",
			"--naap", "on", "--orchestrator-address", "0x9727B492C4AF6C4A8CAF4CC1BA6FBB332206D794",
			"--orchestrator-url", testOrchURL, "--region", "eu-west", "--state-dir", t.TempDir()}
		cfg, err := Load(args, mapEnv(nil), os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		out := &syncBuffer{}
		a, err := New(cfg, Options{Stdout: out, procRoot: proc})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		<-a.Ready()

		time.Sleep(500 * time.Millisecond)
		attach := func(s *session.Session) {
			s.Attached = time.Now()
			if err := a.sessions.Attach(s); err != nil {
				t.Fatal(err)
			}
		}
		attach(&session.Session{SessionID: "sess-runner", StreamID: "stream-0", RequestID: "req-0", Pipeline: "live-video-to-video", ModelID: "streamdiffusion", PID: 7000})
		attach(&session.Session{SessionID: "sess-gpu1", StreamID: "stream-1", RequestID: "req-1", Pipeline: "live-video-to-video", ModelID: "comfyui", GPUID: nvml.SimUUID(1)})
		attach(&session.Session{SessionID: "sess-late", StreamID: "stream-2", RequestID: "req-2", Pipeline: "live-video-to-video", ModelID: "streamdiffusion", PID: 10002})
		attachedAt := time.Now().UnixMilli()
		a.sessions.Detach("sess-late") // attached again at 30 s

		// The runner's own events (the local API's stamping, fast and
		// general paths) and allocator figures, once a second.
		var lateAt int64
		for sec := 1; sec < 60; sec++ {
			time.Sleep(time.Second)
			if sec == 30 {
				lateAt = time.Now().UnixMilli()
				attach(&session.Session{SessionID: "sess-late", StreamID: "stream-2", RequestID: "req-2", Pipeline: "live-video-to-video", ModelID: "streamdiffusion", PID: 10002})
			}
			var entries []pipeline.Entry
			for _, item := range []string{
				fmt.Sprintf(`{"type":"frame_stats","data":{"session_id":"sess-runner","fps":%d.5}}`, 20+sec%5),
				`{"type":"runner_event","data":{"session_id":"sess-gpu1","type":"params_update","note":"<b>&"}}`,
			} {
				p, err := a.stamper.Prepare([]byte(item))
				if err != nil {
					t.Fatal(err)
				}
				entries = append(entries, pipeline.Entry{Env: p.Env, Type: p.Type, Session: p.SessionID})
			}
			rec, err := telemetry.Normalize([]byte(fmt.Sprintf(`{"schema_version":3,"session_id":"sess-runner","timestamp_ns":%d,"event_type":"sample","collector":"runner","sampling_interval_ms":1000,"pid":10000,"host":"node-1","device_id":0,"allocator_allocated_bytes":%d,"allocator_reserved_bytes":%d,"allocator_active_bytes":null,"allocator_inactive_bytes":null,"allocator_change_bytes":0,"device_used_bytes":1,"device_free_bytes":1,"device_total_bytes":2,"context":null,"metadata":{},"job_id":null,"rank":0,"local_rank":0,"world_size":1}`,
				time.Now().UnixNano(), 5<<30, 6<<30)), telemetry.NormalizeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			env, err := a.envs.Allocator(rec, nil, "")
			if err != nil {
				t.Fatal(err)
			}
			entries = append(entries, pipeline.Entry{Env: env, Type: telemetry.TypeAllocatorSample, Session: rec.SessionID()})
			if _, err := a.pipe.Submit("api", entries); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}

		ingest := naaptest.NewIngest()
		var problems []string
		report := func(format string, args ...any) {
			if len(problems) < 20 {
				problems = append(problems, fmt.Sprintf(format, args...))
			}
		}
		sessionEvents, gpuSamples, idle := 0, map[string]int{}, 0
		lines := out.Lines()
		for _, l := range lines {
			rec, why := ingest.Take([]byte(l))
			if why != "" {
				report("not accepted (%s): %s", why, l)
				continue
			}
			d := rec.Data
			sid, _ := d["session_id"].(string)
			inSession := strings.HasPrefix(sid, "sess-")
			if inSession {
				sessionEvents++
			}
			gpuBound := inSession || d["gpu_id"] != nil
			if p := naaptest.Dimensions(d, inSession, gpuBound); len(p) > 0 {
				report("%s/%s: %v", rec.Family, rec.Subtype, p)
			}
			if rec.Subtype != "gpu_memory_sample" {
				continue
			}
			gpu, _ := d["gpu_id"].(string)
			at := rec.Timestamp.UnixMilli()
			want := map[string]string{nvml.SimUUID(0): "sess-runner", nvml.SimUUID(1): "sess-gpu1"}[gpu]
			if gpu == nvml.SimUUID(2) && at > lateAt {
				want = "sess-late"
			}
			if at <= attachedAt {
				want = "" // before any session was attached
			}
			switch {
			case want != "" && (sid != want || d["gpu_idle"] != false):
				report("GPU %s at %d: session %q gpu_idle %v, want %s", gpu, at, sid, d["gpu_idle"], want)
			case want == "" && (d["gpu_idle"] != true || d["stream_id"] != nil):
				report("idle GPU %s at %d: gpu_idle %v stream_id %v", gpu, at, d["gpu_idle"], d["stream_id"])
			case want != "":
				gpuSamples[want]++
			default:
				idle++
			}
		}
		for _, p := range problems {
			t.Error(p)
		}
		var fams []string
		accepted := 0
		for k, n := range ingest.Accepted {
			fams = append(fams, fmt.Sprintf("%s %d", k, n))
			accepted += n
		}
		sort.Strings(fams)
		t.Logf("%d envelopes in 60 s: accepted %d, refused %v; %d of a session; GPU samples with a session %v, idle %d; by family/subtype: %s",
			len(lines), accepted, ingest.Refused, sessionEvents, gpuSamples, idle, strings.Join(fams, ", "))
		if n := ingest.Accepted["ai_stream_events/gpu_memory_sample"]; n < 8*60 || sessionEvents == 0 || gpuSamples["sess-late"] == 0 {
			t.Errorf("the run is too small to say anything: %d GPU samples, %d envelopes of a session, %v", n, sessionEvents, gpuSamples)
		}
		var env struct{ Data map[string]json.RawMessage }
		json.Unmarshal([]byte(lines[len(lines)-1]), &env)
		if string(env.Data["type"]) != `"agent_status"` {
			t.Errorf("the last envelope is not the final agent_status: %s", lines[len(lines)-1])
		}
	})
}

// writeProcStat writes <root>/<pid>/stat for a process whose parent is ppid.
func writeProcStat(t *testing.T, root string, pid, ppid int) {
	t.Helper()
	dir := filepath.Join(root, fmt.Sprint(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stat := fmt.Sprintf("%d (python3) S %d %d %d 0 -1 4194560 100 0 0 0 5 1 0 0 20 0 1 0 100\n", pid, ppid, ppid, ppid)
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
}
