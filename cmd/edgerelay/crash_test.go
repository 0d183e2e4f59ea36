package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/internal/testenv"

	"github.com/livepeer/edgerelay/spool"
)

// TestCrashLosesNothingAcknowledged runs the real binary, pushes events
// through /v1/events while recording every id answered 202, kill -9s the
// agent at random moments, restarts it, and finally checks the stdout sink's
// output across all runs: every acknowledged id was delivered, and the
// duplicates stay within what a crash may send again: the batch in flight
// (the stdout sink has one) and the acknowledgements whose cursor was not
// yet committed (spool.DefaultAckMaxUnsynced at most).
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	kills := 20
	if testing.Short() {
		kills = 5
	}
	dir := t.TempDir()
	outPath := filepath.Join(dir, "stdout.jsonl")
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	addr := testenv.FreeAddr(t)
	env := testenv.Clean("EDGERELAY_ENABLED=true", "EDGERELAY_LISTEN="+addr, "EDGERELAY_STATE_DIR="+filepath.Join(dir, "state"),
		"EDGERELAY_SOCKET="+filepath.Join(dir, "s.sock"), "EDGERELAY_NVML=off", "EDGERELAY_HOSTNET=off",
		"EDGERELAY_STATUS_INTERVAL=1h", "EDGERELAY_LOG_LEVEL=warn")
	client := &http.Client{Timeout: 5 * time.Second}
	start := func() *exec.Cmd {
		cmd := exec.Command(binPath, "run")
		cmd.Env, cmd.Stdout, cmd.Dir = env, out, dir
		var stderr lockedBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitReady(t, client, addr)
		return cmd
	}

	var mu sync.Mutex
	acked := map[string]bool{}
	for run := range kills {
		cmd := start()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for c := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					var b strings.Builder
					ids := make([]string, 50)
					for k := range ids {
						ids[k] = fmt.Sprintf("r%d-c%d-%d-%d", run, c, n, k)
						fmt.Fprintf(&b, "{\"id\":%q,\"type\":\"crash\",\"timestamp\":\"1\",\"data\":{}}\n", ids[k])
					}
					resp, err := client.Post("http://"+addr+"/v1/events", "application/x-ndjson", strings.NewReader(b.String()))
					if err != nil {
						return // killed
					}
					var ans struct{ Accepted int }
					json.NewDecoder(resp.Body).Decode(&ans)
					resp.Body.Close()
					if resp.StatusCode == http.StatusAccepted && ans.Accepted == len(ids) {
						mu.Lock()
						for _, id := range ids {
							acked[id] = true
						}
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(50+rand.IntN(250)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		close(stop)
		wg.Wait()
	}

	// A last, clean run delivers what the crashes left in the spool.
	cmd := start()
	waitFor(t, "the backlog to drain", func() bool {
		resp, err := client.Get("http://" + addr + "/v1/stats")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			Sinks map[string]struct{ Pending uint64 }
		}
		json.NewDecoder(resp.Body).Decode(&st)
		s, ok := st.Sinks["stdout"]
		return ok && s.Pending == 0
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("final run: %v", err)
	}

	raw, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	// A kill can cut a line in half; match ids anywhere, not whole lines.
	seen := map[string]int{}
	for _, m := range regexp.MustCompile(`"id":"(r\d+-c\d+-\d+-\d+)"`).FindAllSubmatch(raw, -1) {
		seen[string(m[1])]++
	}
	lost, dups := 0, 0
	for id := range acked {
		if seen[id] == 0 {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged id %s was never delivered", id)
			}
		}
	}
	for _, n := range seen {
		dups += n - 1
	}
	t.Logf("kills %d, acknowledged ids %d, delivered ids %d, lost %d, duplicates %d (%.1f per crash)",
		kills, len(acked), len(seen), lost, dups, float64(dups)/float64(kills))
	if lost > 0 {
		t.Fatalf("%d acknowledged ids lost", lost)
	}
	if len(acked) < kills*50 {
		t.Errorf("only %d ids acknowledged over %d runs: the test did not exercise the agent", len(acked), kills)
	}
	if perCrash := 500 + spool.DefaultAckMaxUnsynced; dups > kills*perCrash {
		t.Errorf("%d duplicates: more than one sink batch (500) and %d unsynced acknowledgements per crash", dups, spool.DefaultAckMaxUnsynced)
	}
}
