package agent

import (
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNVMLUnavailable: with EDGERELAY_NVML=auto an agent whose NVML library
// cannot be loaded says why once and goes on without GPUs; with "on" it
// refuses to start, naming the variable.
func TestNVMLUnavailable(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "libnvidia-ml.so.1")
	var logs syncBuffer
	env := testEnv(t, map[string]string{"EDGERELAY_NVML": "auto", "EDGERELAY_NVML_LIBRARY": missing})
	a, err := New(loadConfig(t, env), Options{Logger: newTestLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, a, &syncBuffer{})
	if code, _ := r.post(t, "/v1/events", `{"type":"still_working","data":{}}`); code != 202 {
		t.Fatalf("agent without NVML does not accept events: %d", code)
	}
	if n := strings.Count(logs.String(), "NVML unavailable"); n != 1 {
		t.Errorf("the reason is logged %d times, want once:\n%s", n, logs.String())
	}

	env = testEnv(t, map[string]string{"EDGERELAY_NVML": "on", "EDGERELAY_NVML_LIBRARY": missing})
	b, err := New(loadConfig(t, env), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Run(ctx); err == nil || !strings.Contains(err.Error(), "EDGERELAY_NVML=on") {
		t.Fatalf("Run with NVML on and no library: %v", err)
	}
}

// TestSimulatedGPUs: the demo's simulated GPUs flow through the agent as
// gpu_memory_sample envelopes keyed by UUID, and the GPU gauges are served.
func TestSimulatedGPUs(t *testing.T) {
	r := startAgent(t, testEnv(t, map[string]string{"EDGERELAY_NVML": "sim", "EDGERELAY_SAMPLE_INTERVAL": "100ms", "EDGERELAY_PROCESS_INTERVAL": "100ms"}))
	uuids := map[string]bool{}
	waitUntil(t, "samples of 8 GPUs", func() bool {
		for _, l := range r.out.Lines() {
			var e struct {
				Type string
				Data struct {
					GPUID         string `json:"gpu_id"`
					SchemaVersion int    `json:"schema_version"`
				}
			}
			json.Unmarshal([]byte(l), &e)
			if e.Type == "gpu_memory_sample" && e.Data.SchemaVersion == 3 {
				uuids[e.Data.GPUID] = true
			}
		}
		return len(uuids) == 8
	})
	resp, err := testClient.Get(r.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for uuid := range uuids {
		if !strings.Contains(string(body), `edgerelay_gpu_memory_used_bytes{index=`) || !strings.Contains(string(body), uuid) {
			t.Fatalf("/metrics lacks the GPU gauges for %s", uuid)
		}
	}
	if rep := r.a.Report(); rep.Received["gpu"] == 0 {
		t.Errorf("received %v", rep.Received)
	}
}
