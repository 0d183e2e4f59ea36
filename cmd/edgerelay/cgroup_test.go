package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/internal/testenv"
)

// TestCgroupMemoryOutage runs the agent as it would run in a container with
// the systemd unit's memory limit: a static binary (CGO_ENABLED=0, no NVML)
// in an image built FROM scratch, `docker run --memory` set to the unit's
// MemoryMax, swap off. The metrics API is down while 64 KiB events come in
// for the outage, so the spool grows past the limit on disk and in the page
// cache (bbolt maps the file, on a host directory mounted as the state
// directory); then the API comes back and the backlog
// drains. The container must never be OOM-killed and every acknowledged
// event must arrive.
//
// The outage lasts EDGERELAY_CGROUP_OUTAGE (default 40s) at
// EDGERELAY_CGROUP_RATE events a second (default 256: 16 MiB/s, a spool of
// about 640 MiB, past the 512 MiB limit), and goes on, as fast as the agent
// takes events, until the spool file is a quarter past the limit: a machine
// too slow for the rate makes the test longer, never weaker (a spool that
// fits in the limit cannot press on it). docs/OPERATIONS.md gives the
// five-minute run's figures. Without a usable Docker engine the test skips,
// saying so.
func TestCgroupMemoryOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the cgroup test runs an outage of 40 s or more")
	}
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Skip("SKIP (loud): no docker on PATH; the cgroup memory test needs a Docker engine")
	}
	if out, err := exec.Command(docker, "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("SKIP (loud): the Docker engine is not usable (%v: %s); the cgroup memory test needs one", err, bytes.TrimSpace(out))
	}
	outage := 40 * time.Second
	if v := os.Getenv("EDGERELAY_CGROUP_OUTAGE"); v != "" {
		if outage, err = time.ParseDuration(v); err != nil {
			t.Fatalf("EDGERELAY_CGROUP_OUTAGE: %v", err)
		}
	}
	rate := 256
	if v := os.Getenv("EDGERELAY_CGROUP_RATE"); v != "" {
		if rate, err = strconv.Atoi(v); err != nil || rate <= 0 {
			t.Fatalf("EDGERELAY_CGROUP_RATE: %q", v)
		}
	}
	memMax := unitMemoryMax(t)

	// The image: the static binary alone.
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "edgerelay"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 build: %v\n%s", err, out)
	}
	dockerfile := "FROM scratch\nCOPY edgerelay /edgerelay\nENTRYPOINT [\"/edgerelay\", \"run\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	image := fmt.Sprintf("edgerelay-cgroup-test:%d", time.Now().UnixNano())
	if out, err := exec.Command(docker, "build", "-q", "-t", image, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(docker, "rmi", "-f", image).Run() })

	// The metrics API: down (nothing listens) until the outage ends.
	apiAddr := testenv.FreeAddr(t)
	ingestAddr := testenv.FreeAddr(t)
	name := strings.ReplaceAll(strings.TrimPrefix(image, "edgerelay-cgroup-test:"), ":", "-")
	name = "edgerelay-cgroup-" + name
	// The spool on a directory of the host, as a volume or a unit's
	// StateDirectory would be: its page cache is charged to the container.
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "-d", "--name", name, "--network", "host",
		"--user", fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()), "-v", state + ":/state",
		"--memory", strconv.FormatInt(memMax, 10), "--memory-swap", strconv.FormatInt(memMax, 10),
		"-e", "EDGERELAY_ENABLED=true", "-e", "EDGERELAY_LISTEN=" + ingestAddr, "-e", "EDGERELAY_SOCKET=off",
		"-e", "EDGERELAY_STATE_DIR=/state", "-e", "EDGERELAY_NVML=off", "-e", "EDGERELAY_HOSTNET=off",
		"-e", "EDGERELAY_NODE_ID=cgroup-test", "-e", "EDGERELAY_STATUS_INTERVAL=1h", "-e", "EDGERELAY_LOG_LEVEL=warn",
		"-e", "EDGERELAY_SPOOL_MAX_BYTES=" + strconv.FormatInt(8<<30, 10),
		"-e", "EDGERELAY_HTTP_URL=http://" + apiAddr + "/v1/metrics", "-e", "EDGERELAY_HTTP_API_KEY=test",
		"-e", "EDGERELAY_HTTP_RATE=0", "-e", "EDGERELAY_HTTP_LINGER=10ms", "-e", "EDGERELAY_HTTP_PROBE_INTERVAL=1s",
		image}
	out, err := exec.Command(docker, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	id := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := exec.Command(docker, "logs", "--tail", "50", id).CombinedOutput()
			t.Logf("container log:\n%s", logs)
		}
		exec.Command(docker, "rm", "-f", id).Run()
	})
	client := &http.Client{Timeout: 30 * time.Second}
	waitForLong(t, "the agent in the container to be ready", func() bool {
		resp, err := client.Get("http://" + ingestAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	mem := &cgroupWatch{docker: docker, id: id}

	// The outage: 64 KiB events, acknowledged ids recorded. A refusal (429 or
	// 503) is sent again after its Retry-After, as a runner would.
	pad := strings.Repeat("x", 64<<10-100)
	acked := map[string]bool{}
	start := time.Now()
	per := max(1, rate/8) // 8 requests a second
	spoolFile, spoolWant := filepath.Join(state, "spool.db"), memMax+memMax/4
	spoolSize := func() int64 {
		fi, err := os.Stat(spoolFile)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	for n := 0; time.Since(start) < outage || spoolSize() < spoolWant; n++ {
		if time.Since(start) > outage+5*time.Minute {
			t.Fatalf("the spool is %d MiB after %s of outage, not past %d MiB: the agent took too little to press on the %d MiB limit",
				spoolSize()>>20, time.Since(start).Round(time.Second), spoolWant>>20, memMax>>20)
		}
		next := start.Add(time.Duration(n) * time.Second / 8)
		time.Sleep(time.Until(next))
		var b strings.Builder
		ids := make([]string, per)
		for k := range ids {
			ids[k] = fmt.Sprintf("cg-%d-%d", n, k)
			fmt.Fprintf(&b, "{\"id\":%q,\"type\":\"cgroup_test\",\"timestamp\":\"1\",\"data\":{\"pad\":%q}}\n", ids[k], pad)
		}
		for {
			resp, err := client.Post("http://"+ingestAddr+"/v1/events", "application/x-ndjson", strings.NewReader(b.String()))
			if err != nil {
				t.Fatalf("after %d of the outage: %v (OOM-killed: %s)", time.Since(start).Round(time.Second), err, mem.oomKilled())
			}
			var ans struct{ Accepted, RetryAfter int }
			json.NewDecoder(resp.Body).Decode(&ans)
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted && ans.Accepted == per {
				for _, id := range ids {
					acked[id] = true
				}
				break
			}
			if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("ingest answered %d (accepted %d of %d)", resp.StatusCode, ans.Accepted, per)
			}
			time.Sleep(time.Duration(max(ans.RetryAfter, 1)) * time.Second)
		}
	}
	outageStats, outageSpool, outageTook := mem.snapshot(), spoolSize(), time.Since(start)

	// The metrics API comes back; everything acknowledged must arrive.
	seen := map[string]int{}
	var mu sync.Mutex
	idRe := regexp.MustCompile(`"id":"(cg-\d+-\d+)"`)
	ln, err := net.Listen("tcp", apiAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, m := range idRe.FindAllSubmatch(body, -1) {
			seen[string(m[1])]++
		}
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	drainStart := time.Now()
	deadline := time.Now().Add(outage + 5*time.Minute)
	for {
		mu.Lock()
		missing := 0
		for id := range acked {
			if seen[id] == 0 {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if k, running := mem.oomKilled(), mem.running(); k == "true" || running != "true" || time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged events not delivered (OOM-killed: %s, running: %s)", missing, len(acked), k, running)
		}
		time.Sleep(100 * time.Millisecond)
	}
	drainTook := time.Since(drainStart)
	final := mem.snapshot()
	if k := mem.oomKilled(); k != "false" {
		t.Fatalf("the container was OOM-killed (%s)", k)
	}
	if final.failcnt > 0 {
		t.Logf("the cgroup hit its limit %d times (the kernel reclaimed page cache; no OOM kill)", final.failcnt)
	}
	t.Logf("outage %s at up to %d events/s of 64 KiB: %d events acknowledged, spool %d MiB; --memory %d MiB; "+
		"peak cgroup usage %d MiB (after the outage: rss %d MiB, cache %d MiB, mapped_file %d MiB); drained in %s; not OOM-killed",
		outageTook.Round(time.Second), rate, len(acked), outageSpool>>20, memMax>>20, final.maxUsage>>20, outageStats.rss>>20, outageStats.cache>>20, outageStats.mapped>>20, drainTook.Round(time.Second))
}

// unitMemoryMax reads MemoryMax= from the systemd unit: the limit the agent
// runs under on a node.
func unitMemoryMax(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "systemd", "edgerelay.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "MemoryMax=")
		if !ok {
			continue
		}
		mult := int64(1)
		switch {
		case strings.HasSuffix(v, "G"):
			mult, v = 1<<30, strings.TrimSuffix(v, "G")
		case strings.HasSuffix(v, "M"):
			mult, v = 1<<20, strings.TrimSuffix(v, "M")
		case strings.HasSuffix(v, "K"):
			mult, v = 1<<10, strings.TrimSuffix(v, "K")
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("MemoryMax=%s in the unit: %v", v, err)
		}
		return n * mult
	}
	t.Fatal("the unit sets no MemoryMax")
	return 0
}

// cgroupWatch reads a container's memory cgroup on the host (v1, or v2)
// and asks Docker about it.
type cgroupWatch struct {
	docker, id string
}

type cgroupStats struct {
	maxUsage, rss, cache, mapped, failcnt int64
}

// dir is the container's memory cgroup directory on the host.
func (c *cgroupWatch) dir() string {
	for _, d := range []string{
		"/sys/fs/cgroup/memory/docker/" + c.id,
		"/sys/fs/cgroup/system.slice/docker-" + c.id + ".scope",
		"/sys/fs/cgroup/docker/" + c.id,
	} {
		if _, err := os.Stat(d); err == nil {
			return d
		}
	}
	return ""
}

func (c *cgroupWatch) snapshot() cgroupStats {
	d := c.dir()
	if d == "" {
		return cgroupStats{}
	}
	num := func(name string) int64 {
		b, _ := os.ReadFile(filepath.Join(d, name))
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return n
	}
	var st cgroupStats
	st.maxUsage = max(num("memory.max_usage_in_bytes"), num("memory.peak"))
	st.failcnt = num("memory.failcnt")
	b, _ := os.ReadFile(filepath.Join(d, "memory.stat"))
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, _ := strings.Cut(line, " ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "rss", "anon":
			st.rss = n
		case "cache", "file":
			st.cache = n
		case "mapped_file", "file_mapped":
			st.mapped = n
		}
	}
	return st
}

// oomKilled asks Docker whether the kernel killed the container.
func (c *cgroupWatch) oomKilled() string { return c.inspect("{{.State.OOMKilled}}") }

// running asks Docker whether the container still runs: one that ended
// another way (a crash) would never deliver the rest.
func (c *cgroupWatch) running() string { return c.inspect("{{.State.Running}}") }

func (c *cgroupWatch) inspect(format string) string {
	out, err := exec.Command(c.docker, "inspect", "-f", format, c.id).Output()
	if err != nil {
		return "unknown: " + err.Error()
	}
	return strings.TrimSpace(string(out))
}
