package agent

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestGPUMemoryMetrics: with simulated GPUs, /metrics carries each GPU
// process's memory with its container label, and the allocator figures a
// runner pushed, per GPU; the allocator-versus-device gap is the
// difference of two series with the same uuid and index.
func TestGPUMemoryMetrics(t *testing.T) {
	r := startAgent(t, testEnv(t, map[string]string{"EDGERELAY_NVML": "sim", "EDGERELAY_SAMPLE_INTERVAL": "100ms", "EDGERELAY_PROCESS_INTERVAL": "100ms"}))
	snap := fmt.Sprintf(`{"pid":%d,"device_index":0,"stats":{"allocated_bytes.all.current":1000,"reserved_bytes.all.current":4096}}`, os.Getpid())
	// A snapshot is fresh for 3 sampling intervals (300 ms here); the
	// process series may come later on a busy machine, so the snapshot is
	// sent again while waiting, as a runner sends one every interval.
	var posted time.Time
	post := func() {
		if time.Since(posted) < 100*time.Millisecond {
			return
		}
		posted = time.Now()
		if code, ans := r.post(t, "/v1/allocator", snap); code != http.StatusAccepted {
			t.Fatalf("allocator: %d %+v", code, ans)
		}
	}
	var m map[string]float64
	find := func(prefix string) (string, float64, bool) {
		for k, v := range m {
			if strings.HasPrefix(k, prefix) {
				return k, v, true
			}
		}
		return "", 0, false
	}
	waitUntil(t, "process and allocator series", func() bool {
		post()
		m = scrape(t, r)
		_, _, procs := find(`edgerelay_gpu_process_memory_used_bytes{container_id="",index="0",pid="10000",uuid="`)
		_, _, alloc := find(`edgerelay_gpu_allocator_reserved_bytes{index="0",uuid="`)
		return procs && alloc
	})
	k, v, _ := find(`edgerelay_gpu_allocator_reserved_bytes{index="0",uuid="`)
	uuid := strings.TrimSuffix(strings.SplitN(k, `uuid="`, 2)[1], `"}`)
	if v != 4096 {
		t.Errorf("%s = %v, want 4096", k, v)
	}
	if v := m[fmt.Sprintf(`edgerelay_gpu_allocator_allocated_bytes{index="0",uuid=%q}`, uuid)]; v != 1000 {
		t.Errorf("allocated = %v, want 1000", v)
	}
	used := `edgerelay_gpu_memory_used_bytes{index="0",name=`
	if _, dev, ok := find(used); !ok || dev <= 4096 {
		t.Errorf("device used %v (%v) for the gap", dev, ok)
	}
}
