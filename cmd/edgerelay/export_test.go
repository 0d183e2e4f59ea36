package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepeer/edgerelay/internal/testenv"

	"github.com/google/uuid"

	"github.com/livepeer/edgerelay/agent/sampler"
	"github.com/livepeer/edgerelay/agent/telemetry"
	"github.com/livepeer/edgerelay/nvml"
)

const gib = 1 << 30

// steadyNode is a node of two GPUs (sampler.GPUs) whose memory fills up
// during a warm-up (the model loads), then holds steady, with a jitter of
// ±0.1%. A runner on each GPU reports steady allocator figures.
type steadyNode struct {
	start  time.Time
	warmUp time.Duration

	mu  sync.Mutex
	rng *rand.Rand // guarded by mu
}

const nodeTotal = 80 * gib

// nodeGPUs are the steady figures of each GPU: device used, and the
// runner's allocated and reserved bytes. The device-vs-allocator gap is
// 10 GiB and 9 GiB, above stormlog's 5% threshold, so its gap classifiers
// do run on them.
var nodeGPUs = []struct{ used, allocated, reserved float64 }{
	{30 * gib, 18 * gib, 20 * gib},
	{40 * gib, 29 * gib, 31 * gib},
}

func nodeUUID(slot int) string { return fmt.Sprintf("GPU-51ead000-0000-4000-8000-%012d", slot) }

func (n *steadyNode) jitter(v float64) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return uint64(v * (1 + (n.rng.Float64()*2-1)*0.001))
}

func (n *steadyNode) used(slot int) uint64 {
	u := nodeGPUs[slot].used
	if el := time.Since(n.start); el < n.warmUp {
		u = 2*gib + (u-2*gib)*float64(el)/float64(n.warmUp)
	}
	return n.jitter(u)
}

func (n *steadyNode) Count() int { return len(nodeGPUs) }

func (n *steadyNode) Sample(slot int, s *nvml.Sample) error {
	used := n.used(slot)
	*s = nvml.Sample{
		Device:  nvml.Device{Index: slot, UUID: nodeUUID(slot), Name: "NVIDIA H100 80GB HBM3", PCIBusID: fmt.Sprintf("00000000:%02X:00.0", 0x18+slot)},
		Fields:  nvml.FieldMemory | nvml.FieldMemReserved | nvml.FieldUtilization | nvml.FieldTemperature | nvml.FieldPower,
		MemUsed: used, MemReserved: 512 << 20, MemTotal: nodeTotal, MemFree: nodeTotal - 512<<20 - used,
		MemoryInfoVersion: "v2", UtilGPU: 61, UtilMem: 40, TempC: 55, PowerMW: 350_000,
	}
	return nil
}

func (n *steadyNode) Processes(int, []nvml.Process) ([]nvml.Process, error) { return nil, nil }
func (n *steadyNode) ECC(_ int, e *nvml.ECC) error                          { *e = nvml.ECC{}; return nil }
func (n *steadyNode) WatchXid(context.Context, func(nvml.XidEvent)) error {
	return nvml.ErrNotSupported
}

// figures is the allocator join's view of a GPU (telemetry.AllocatorsOptions.Devices).
func (n *steadyNode) figures(uuid string, index int) (telemetry.DeviceFigures, bool) {
	slot := slices.Index([]string{nodeUUID(0), nodeUUID(1)}, uuid)
	if slot < 0 {
		slot = index
	}
	if slot < 0 || slot >= len(nodeGPUs) {
		return telemetry.DeviceFigures{}, false
	}
	used := n.used(slot)
	return telemetry.DeviceFigures{UUID: nodeUUID(slot), Index: slot, Used: used, Free: nodeTotal - 512<<20 - used, Total: nodeTotal, At: time.Now()}, true
}

// simulateNode runs the agent's GPU sampler and allocator join on a
// steadyNode, under a virtual clock, and returns the envelopes the agent
// would send, one a line: gpu_memory_sample every second for each GPU
// (placeholder allocator figures until the runners report), and, when
// runners report (push), an allocator_sample for each of their reports,
// every second after the warm-up.
func simulateNode(t *testing.T, warmUp, steady time.Duration, push bool) []byte {
	var out bytes.Buffer
	synctest.Test(t, func(t *testing.T) {
		node := &steadyNode{start: time.Now(), warmUp: warmUp, rng: rand.New(rand.NewPCG(19, 2))}
		alloc, err := telemetry.NewAllocators(telemetry.AllocatorsOptions{Host: "node-1", Interval: time.Second, Devices: node.figures,
			Resolve: func(i int) (string, bool) { return nodeUUID(i), i >= 0 && i < len(nodeGPUs) }})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		emit := func(typ string, data map[string]any) {
			env, err := stampEnvelope(typ, data)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			out.Write(env)
			out.WriteByte('\n')
		}
		s, err := sampler.New(sampler.Options{GPUs: node, Emit: emit, Host: "node-1", Interval: time.Second,
			Allocators: alloc, ProcRoot: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := s.Run(ctx); err != nil {
				t.Error(err)
			}
		})
		time.Sleep(warmUp)
		synctest.Wait()
		for range int(steady / time.Second) {
			for slot, g := range nodeGPUs {
				if !push {
					break
				}
				pid := int64(4242 + slot)
				snap := telemetry.Snapshot{PID: &pid, GPUUUID: nodeUUID(slot), Stats: map[string]json.Number{
					telemetry.StatAllocated: json.Number(fmt.Sprint(node.jitter(g.allocated))),
					telemetry.StatReserved:  json.Number(fmt.Sprint(node.jitter(g.reserved))),
				}, Env: map[string]string{"PIPELINE": "live-video-to-video", "MODEL_ID": "streamdiffusion"}}
				rec, id, err := alloc.Apply(snap, 0)
				if err != nil {
					t.Fatal(err)
				}
				// As the agent stamps an allocator_sample (agent/memtelemetry.go).
				data := map[string]any{"gpu_id": id.GPU, "pipeline": id.Pipeline, "model_id": id.ModelID}
				for k, v := range rec {
					data[k] = v
				}
				emit("allocator_sample", data)
			}
			time.Sleep(time.Second)
			synctest.Wait()
		}
		cancel()
		wg.Wait()
	})
	return out.Bytes()
}

// stampEnvelope stamps an event as the agent does (spec/envelope.md): a
// UUIDv7 id, the time in epoch milliseconds as a string, data.type,
// data.client_source, and the node's identity where data has none.
func stampEnvelope(typ string, data map[string]any) ([]byte, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]string{"host": "node-1", "node_id": "node-1", "region": "test", "type": typ, "client_source": "edgerelay"} {
		if _, ok := data[k]; !ok {
			data[k] = v
		}
	}
	return json.Marshal(map[string]any{"id": id.String(), "type": typ, "timestamp": fmt.Sprint(time.Now().UnixMilli()), "gateway": "", "data": data})
}

// exportLines runs `edgerelay export --stormlog dir` on envelopes.
func exportLines(t *testing.T, dir string, envelopes []byte) (code int, stdout, stderr string) {
	t.Helper()
	in := filepath.Join(t.TempDir(), "envelopes.jsonl")
	if err := os.WriteFile(in, envelopes, 0o644); err != nil {
		t.Fatal(err)
	}
	var o, e bytes.Buffer
	code = exportCommand([]string{"--stormlog", dir, in}, strings.NewReader(""), &o, &e)
	return code, o.String(), e.String()
}

// segmentRecords reads every record of a sink directory's segments and
// checks each holds the v3 field set only and passes Validate.
func segmentRecords(t *testing.T, dir string) []map[string]any {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "segment-*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]any
	for _, p := range paths {
		body, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(bytes.TrimSpace(body), []byte{'\n'}) {
			if len(line) == 0 {
				continue
			}
			rec, err := telemetry.Validate(line)
			if err != nil {
				t.Fatalf("%s: %v\n%s", p, err, line)
			}
			if rec["schema_version"] != json.Number("3") || len(rec) != 23 {
				t.Fatalf("%s: not the v3 field set: %s", p, line)
			}
			recs = append(recs, rec)
		}
	}
	return recs
}

func TestExportCommand(t *testing.T) {
	v3 := func(meta string) string {
		return `"schema_version":3,"session_id":"edgerelay-run-1","timestamp_ns":1767908945298000000,"event_type":"sample","collector":"edgerelay.nvml","sampling_interval_ms":1000,"pid":-1,"host":"node-1","device_id":0,"allocator_allocated_bytes":1048576,"allocator_reserved_bytes":2097152,"allocator_active_bytes":null,"allocator_inactive_bytes":null,"allocator_change_bytes":0,"device_used_bytes":3145728,"device_free_bytes":1000000,"device_total_bytes":80000000000,"context":null,"job_id":null,"rank":0,"local_rank":0,"world_size":1,"metadata":` + meta
	}
	lines := []string{
		`{"id":"e1","type":"gpu_memory_sample","timestamp":"1767908945298","gateway":"","data":{` + v3(`{"allocator_source":"push","allocator_stale":false}`) + `,"gpu_id":"GPU-1","name":"NVIDIA H100","type":"gpu_memory_sample","client_source":"edgerelay","node_id":"n1"}}`,
		`{"id":"e2","type":"gpu_memory_sample","timestamp":"1767908945298","gateway":"","data":{` + v3(`{"allocator_source":"none"}`) + `,"gpu_id":"GPU-1"}}`,
		`{"type":"telemetry","event":{"id":"e3","type":"allocator_sample","timestamp":"1","data":{` + strings.Replace(v3(`{"allocator_source":"push","gpu_id":"own"}`), `"edgerelay-run-1"`, `"runner-sess"`, 1) + `,"gpu_id":"GPU-2"}}}`,
		`{"id":"e4","type":"agent_status","timestamp":"1","data":{"received":5}}`,
		`{"id":"e5","type":"gpu_process_sample","timestamp":"1","data":{"pid":7}}`,
		``,
		`not json`,
		`{"id":"e6","type":"gpu_memory_sample","timestamp":"1","data":{` + strings.Replace(v3(`{}`), `"device_used_bytes":3145728`, `"device_used_bytes":90000000000`, 1) + `}}`,
		`{"id":"e7","type":"allocator_sample","timestamp":"1","data":[]}`,
	}
	dir := filepath.Join(t.TempDir(), "out")
	code, stdout, stderr := exportLines(t, dir, []byte(strings.Join(lines, "\n")+"\n"))
	if code != 1 {
		t.Fatalf("exit %d, want 1 (some lines invalid)\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	for _, want := range []string{
		"exported 2 record(s), 2 session(s), 2 segment(s) to " + dir,
		`left out 1 gpu_memory_sample record(s) without allocator figures (metadata.allocator_source "none")`,
		"skipped 2 envelope(s) of other families: agent_status 1, gpu_process_sample 1",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	for _, want := range []string{
		"line 7: not an envelope:",
		"line 8: gpu_memory_sample e6: device_used_bytes: 90000000000 exceeds device_total_bytes 80000000000",
		"line 9: allocator_sample e7: data: must be a JSON object",
		"3 line(s) not exported",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	recs := segmentRecords(t, dir)
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	slices.SortFunc(recs, func(a, b map[string]any) int {
		return strings.Compare(a["session_id"].(string), b["session_id"].(string))
	})
	m0 := recs[0]["metadata"].(map[string]any)
	if recs[0]["session_id"] != "edgerelay-run-1" || m0["gpu_id"] != "GPU-1" || m0["name"] != "NVIDIA H100" || m0["envelope_id"] != "e1" ||
		m0["type"] != "gpu_memory_sample" || m0["client_source"] != "edgerelay" || m0["node_id"] != "n1" || m0["allocator_source"] != "push" {
		t.Errorf("first record: %v", recs[0])
	}
	m1 := recs[1]["metadata"].(map[string]any)
	if recs[1]["session_id"] != "runner-sess" || m1["gpu_id"] != "own" || m1["envelope_id"] != "e3" {
		t.Errorf("second record (the record's own metadata wins): %v", recs[1])
	}

	// The directory is one writer's: a second export into it is refused.
	if code, _, stderr := exportLines(t, dir, []byte(lines[0]+"\n")); code != 2 || !strings.Contains(stderr, "not empty") {
		t.Errorf("export into a used directory: exit %d, %s", code, stderr)
	}
	var o, e bytes.Buffer
	if code := exportCommand(nil, strings.NewReader(""), &o, &e); code != 2 || !strings.Contains(e.String(), "usage: edgerelay export --stormlog DIR") {
		t.Errorf("no --stormlog: exit %d, %s", code, e.String())
	}
}

// Through the binary, from standard input, as an operator pipes
// `edgerelay tail` into it.
func TestExportBinaryFromStdin(t *testing.T) {
	envs := simulateNode(t, 3*time.Second, 5*time.Second, true)
	dir := filepath.Join(t.TempDir(), "sink")
	cmd := exec.Command(binPath, "export", "--stormlog", dir)
	cmd.Env = testenv.Clean()
	cmd.Stdin = bytes.NewReader(envs)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "exported ") || !strings.Contains(string(out), "left out ") {
		t.Fatalf("output: %s", out)
	}
	if n := len(segmentRecords(t, dir)); n == 0 {
		t.Fatal("no records exported")
	}
	help := exec.Command(binPath, "help")
	if out, _ := help.Output(); !strings.Contains(string(out), "export") {
		t.Errorf("usage does not list export:\n%s", out)
	}
}

// The reference check: stormlog's own loader and hidden-memory gap
// analysis, run through /usr/bin/python3 on the exported directories. The
// reference is found in $EDGERELAY_STORMLOG_REFERENCE, else
// ../shared/reference beside the repository; without it, or without
// python3-numpy and python3-scipy, the test skips, loudly.

const pythonBin = "/usr/bin/python3"

// exportDriver is our Python side: for each directory it checks every
// segment line with stormlog's validator, loads the directory with
// stormlog's loader, and runs stormlog's gap analysis on each session with
// the thresholds stormlog's analyzers use by default.
const exportDriver = `
import json, sys
from stormlog import telemetry as T
from stormlog.gap_analysis import analyze_hidden_memory_gaps
from stormlog.telemetry_sink import read_telemetry_sink_manifest, resolve_telemetry_sink_segment_paths

THRESHOLDS = {"gap_ratio_threshold": 0.05, "gap_spike_zscore": 2.0,
              "gap_drift_r_squared": 0.6, "gap_fragmentation_ratio": 0.3}

for d in sys.argv[1:]:
    lines = 0
    for p in resolve_telemetry_sink_segment_paths(d):
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                T.validate_telemetry_record(json.loads(line))  # raises on a bad record
                lines += 1
    manifest = read_telemetry_sink_manifest(d)
    sessions = T.load_telemetry_sessions(d)
    findings = []
    for s in sessions:
        for f in analyze_hidden_memory_gaps(s.events, THRESHOLDS, lambda n: "%d B" % n, {}):
            findings.append({"session": s.summary.session_id, "classification": f.classification,
                             "severity": f.severity, "confidence": f.confidence})
    print(json.dumps({
        "lines": lines,
        "manifest_sessions": len(manifest.sessions) if manifest else -1,
        "manifest_segments": len(manifest.segments) if manifest else -1,
        "sessions": len(sessions),
        "events": sum(len(s.events) for s in sessions),
        "samples": sum(1 for s in sessions for e in s.events if e.event_type == "sample"),
        "findings": findings,
    }))
`

type stormlogVerdict struct {
	Lines            int `json:"lines"`
	ManifestSessions int `json:"manifest_sessions"`
	ManifestSegments int `json:"manifest_segments"`
	Sessions         int `json:"sessions"`
	Events           int `json:"events"`
	Samples          int `json:"samples"`
	Findings         []struct {
		Session        string  `json:"session"`
		Classification string  `json:"classification"`
		Severity       string  `json:"severity"`
		Confidence     float64 `json:"confidence"`
	} `json:"findings"`
}

// stormlogReference returns the reference directory, or skips the test
// loudly when python3, the reference or numpy/scipy is missing.
func stormlogReference(t *testing.T) string {
	t.Helper()
	ref := os.Getenv("EDGERELAY_STORMLOG_REFERENCE")
	if ref == "" {
		wd, err := os.Getwd() // cmd/edgerelay
		if err != nil {
			t.Fatal(err)
		}
		ref = filepath.Join(wd, "..", "..", "..", "shared", "reference")
	}
	skip := func(why string) {
		msg := fmt.Sprintf("SKIPPED, stormlog export NOT CHECKED against stormlog: %s (set EDGERELAY_STORMLOG_REFERENCE to the directory holding stormlog/, install python3, python3-numpy, python3-scipy)", why)
		fmt.Fprintf(os.Stderr, "\n!!! %s: %s\n\n", t.Name(), msg)
		t.Skip(msg)
	}
	if _, err := os.Stat(pythonBin); err != nil {
		skip(pythonBin + " is missing")
	}
	if _, err := os.Stat(filepath.Join(ref, "stormlog", "gap_analysis.py")); err != nil {
		skip("no stormlog reference module at " + ref)
	}
	cmd := exec.Command(pythonBin, "-c", "import stormlog.telemetry, stormlog.gap_analysis")
	cmd.Env = append(os.Environ(), "PYTHONPATH="+ref)
	if out, err := cmd.CombinedOutput(); err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		skip(fmt.Sprintf("the reference does not import (%v): %s", err, lines[len(lines)-1]))
	}
	return ref
}

// stormlogJudge runs stormlog's loader and gap analysis on directories.
func stormlogJudge(t *testing.T, ref string, dirs ...string) []stormlogVerdict {
	t.Helper()
	script := filepath.Join(t.TempDir(), "driver.py")
	if err := os.WriteFile(script, []byte(exportDriver), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pythonBin, append([]string{script}, dirs...)...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+ref)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("stormlog could not load the export: %v\n%s", err, stderr.String())
	}
	var vs []stormlogVerdict
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var v stormlogVerdict
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if len(vs) != len(dirs) {
		t.Fatalf("%d verdicts for %d directories", len(vs), len(dirs))
	}
	return vs
}

// TestExportLoadsInStormlog: what the export writes loads with stormlog's
// own loader, and stormlog's hidden-memory gap analysis finds nothing on a
// node with steady memory. The control shows why placeholder samples are
// left out: on a node whose runners never report while its memory fills
// up, the same samples with their marker ignored make stormlog report a
// critical persistent drift of "hidden" memory that is only the device's
// ordinary use.
func TestExportLoadsInStormlog(t *testing.T) {
	ref := stormlogReference(t)

	steady := simulateNode(t, time.Minute, 4*time.Minute, true)
	steadyDir := filepath.Join(t.TempDir(), "steady")
	if code, stdout, stderr := exportLines(t, steadyDir, steady); code != 0 {
		t.Fatalf("export: exit %d\n%s%s", code, stdout, stderr)
	} else {
		t.Logf("steady node: %d envelopes; %s", bytes.Count(steady, []byte{'\n'}), strings.ReplaceAll(strings.TrimSpace(stdout), "\n", "; "))
	}
	recs := segmentRecords(t, steadyDir)

	filling := simulateNode(t, 4*time.Minute, 0, false)
	leftOutDir := filepath.Join(t.TempDir(), "filling")
	if code, stdout, stderr := exportLines(t, leftOutDir, filling); code != 0 || !strings.Contains(stdout, "exported 0 record(s)") {
		t.Fatalf("export: exit %d\n%s%s", code, stdout, stderr)
	}
	naive := bytes.ReplaceAll(filling, []byte(`"allocator_source":"none"`), []byte(`"allocator_source":"ignored"`))
	naiveDir := filepath.Join(t.TempDir(), "naive")
	if code, stdout, stderr := exportLines(t, naiveDir, naive); code != 0 {
		t.Fatalf("export: exit %d\n%s%s", code, stdout, stderr)
	}

	v := stormlogJudge(t, ref, steadyDir, leftOutDir, naiveDir)
	for i, name := range []string{"steady node", "filling node, placeholders left out", "filling node, placeholders kept (control)"} {
		t.Logf("%s: stormlog loaded %d lines, %d sessions (manifest %d sessions, %d segments), %d events of which %d samples; gap findings %+v",
			name, v[i].Lines, v[i].Sessions, v[i].ManifestSessions, v[i].ManifestSegments, v[i].Events, v[i].Samples, v[i].Findings)
	}
	if s := v[0]; s.Lines != len(recs) || s.Events != len(recs) || s.Sessions != 3 || s.ManifestSessions != 3 || s.Samples == 0 {
		t.Errorf("steady node: stormlog loaded %+v, want all %d records in 3 sessions (the sampler's, one per runner)", s, len(recs))
	}
	if len(v[0].Findings) != 0 {
		t.Errorf("steady node: stormlog's gap analysis found %+v, want nothing", v[0].Findings)
	}
	if s := v[1]; s.Events != 0 || len(s.Findings) != 0 {
		t.Errorf("placeholders left out: stormlog loaded %+v", s)
	}
	drift := false
	for _, f := range v[2].Findings {
		drift = drift || (f.Classification == "persistent_drift" && f.Severity == "critical")
	}
	if !drift {
		t.Errorf("control: with the placeholders kept stormlog found %+v; expected the false critical persistent drift this export avoids", v[2].Findings)
	}
}
