package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/internal/testenv"
)

// TestShutdownKeepsUndeliveredInSpool: events accepted when SIGTERM arrives
// are either delivered within the grace period or still in the spool after
// exit, as `edgerelay spool stat` and `spool dump` show; none is lost.
func TestShutdownKeepsUndeliveredInSpool(t *testing.T) {
	var mu sync.Mutex
	delivered := map[string]bool{}
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		n := requests
		mu.Unlock()
		if n > 2 { // the metrics API goes down after two batches
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var body struct{ Events []struct{ ID string } }
		json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		for _, e := range body.Events {
			delivered[e.ID] = true
		}
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	addr := testenv.FreeAddr(t)
	cmd := exec.Command(binPath, "run")
	cmd.Env = testenv.Clean("EDGERELAY_ENABLED=true", "EDGERELAY_LISTEN="+addr, "EDGERELAY_STATE_DIR="+state,
		"EDGERELAY_SOCKET="+filepath.Join(dir, "s.sock"), "EDGERELAY_NVML=off", "EDGERELAY_HOSTNET=off",
		"EDGERELAY_STATUS_INTERVAL=1h", "EDGERELAY_HTTP_URL="+srv.URL, "EDGERELAY_HTTP_API_KEY=k",
		"EDGERELAY_HTTP_RATE=0", "EDGERELAY_HTTP_BATCH=100", "EDGERELAY_HTTP_LINGER=10ms", "EDGERELAY_SHUTDOWN_GRACE=1s")
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	waitReady(t, client, addr)
	var acked []string
	for b := range 10 {
		var body strings.Builder
		for k := range 100 {
			id := fmt.Sprintf("s-%d-%d", b, k)
			acked = append(acked, id)
			fmt.Fprintf(&body, "{\"id\":%q,\"type\":\"t\",\"timestamp\":\"1\",\"data\":{}}\n", id)
		}
		resp, err := client.Post("http://"+addr+"/v1/events", "application/x-ndjson", strings.NewReader(body.String()))
		if err != nil || resp.StatusCode != 202 {
			t.Fatalf("post: %v %v", resp, err)
		}
		resp.Body.Close()
	}

	// While the agent runs, the spool is locked: a clear message, exit 1.
	locked := exec.Command(binPath, "spool", "stat", "--state-dir", state)
	if out, err := locked.CombinedOutput(); err == nil || !strings.Contains(string(out), "locked by a running agent") {
		t.Errorf("spool stat on a running agent: %v %s", err, out)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}

	stat := exec.Command(binPath, "spool", "stat", "--json", "--state-dir", state)
	raw, err := stat.Output()
	if err != nil {
		t.Fatalf("spool stat: %v", err)
	}
	var st struct {
		Records uint64 `json:"records"`
		Sinks   map[string]struct {
			Pending uint64 `json:"pending"`
		} `json:"sinks"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("spool stat --json: %v\n%s", err, raw)
	}
	mu.Lock()
	nDelivered := len(delivered)
	mu.Unlock()
	pending := st.Sinks["http"].Pending
	t.Logf("acked %d, delivered before exit %d, pending in spool %d", len(acked), nDelivered, pending)
	if nDelivered == 0 || pending == 0 {
		t.Fatalf("the test should leave some delivered and some pending: %d / %d", nDelivered, pending)
	}
	if uint64(nDelivered)+pending < uint64(len(acked)) {
		t.Fatalf("lost: delivered %d + pending %d < acked %d", nDelivered, pending, len(acked))
	}
	// Every acked id not delivered is in the spool, for the http sink.
	dump := exec.Command(binPath, "spool", "dump", "--state-dir", state, "--sink", "http")
	dumped, err := dump.Output()
	if err != nil {
		t.Fatalf("spool dump: %v", err)
	}
	inSpool := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(dumped))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Seq  uint64
			Data struct{ ID string }
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("dump line %q: %v", sc.Text(), err)
		}
		inSpool[rec.Data.ID] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range acked {
		if !delivered[id] && !inSpool[id] {
			t.Fatalf("acked id %s neither delivered nor in the spool", id)
		}
	}
	limited := exec.Command(binPath, "spool", "dump", "--state-dir", state, "--limit", "3")
	if out, err := limited.Output(); err != nil || strings.Count(string(out), "\n") != 3 {
		t.Errorf("dump --limit 3: %v %q", err, out)
	}
}

// TestSecondSignalStopsAtOnce: with a sink down and a long grace, a second
// SIGTERM ends the wait at once; the spool is still closed cleanly and keeps
// every undelivered event.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer down.Close()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	addr := testenv.FreeAddr(t)
	cmd := exec.Command(binPath, "run")
	cmd.Env = testenv.Clean("EDGERELAY_ENABLED=true", "EDGERELAY_LISTEN="+addr, "EDGERELAY_STATE_DIR="+state,
		"EDGERELAY_SOCKET="+filepath.Join(dir, "s.sock"), "EDGERELAY_NVML=off", "EDGERELAY_HOSTNET=off",
		"EDGERELAY_STATUS_INTERVAL=1h", "EDGERELAY_HTTP_URL="+down.URL, "EDGERELAY_HTTP_API_KEY=k",
		"EDGERELAY_SHUTDOWN_GRACE=60s")
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	waitReady(t, client, addr)
	resp, err := client.Post("http://"+addr+"/v1/events", "application/json", strings.NewReader(`[{"type":"a","data":{}},{"type":"b","data":{}}]`))
	if err != nil || resp.StatusCode != 202 {
		t.Fatalf("post: %v %v", resp, err)
	}
	resp.Body.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, "the agent to start stopping", func() bool { return strings.Contains(stderr.String(), "edgerelay stopping") })
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the second SIGTERM took %s to end a 60 s grace", d)
	}
	out, err := exec.Command(binPath, "spool", "stat", "--json", "--state-dir", state).Output()
	if err != nil {
		t.Fatalf("spool stat after the abort: %v", err)
	}
	var st struct {
		Sinks map[string]struct {
			Pending uint64 `json:"pending"`
		} `json:"sinks"`
	}
	json.Unmarshal(out, &st)
	if p := st.Sinks["http"].Pending; p < 2 {
		t.Errorf("pending after the abort: %d, want the 2 events (and the final agent_status)", p)
	}
}
