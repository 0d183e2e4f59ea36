package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/internal/testenv"

	"github.com/livepeer/edgerelay/spool"
)

// The tests of this file hold the agent to its bounds under pressure: the
// stop within its grace, a start with a large spool, counters across a
// kill -9, a disk full at start and while running. They run the real
// binary with real signals and real file systems. The numbers the issue
// asks for are logged (go test -v); the assertions carry margins so that a
// busy machine does not fail them. EDGERELAY_LONG_TESTS=1 runs them at full
// size (a 1,000,000-record spool, two minutes of 5,000 events a second on
// a full disk).

func longTests() bool { return os.Getenv("EDGERELAY_LONG_TESTS") != "" }

// agentProc is one run of the binary.
type agentProc struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	addr   string
	done   chan struct{} // closed when it exited
	err    error
}

func startProc(t *testing.T, bin string, dir, addr string, extra ...string) *agentProc {
	t.Helper()
	env := testenv.Clean(append([]string{"EDGERELAY_ENABLED=true", "EDGERELAY_LISTEN=" + addr,
		"EDGERELAY_SOCKET=" + filepath.Join(dir, "s.sock"), "EDGERELAY_NVML=off", "EDGERELAY_HOSTNET=off",
		"EDGERELAY_STATUS_INTERVAL=1h", "EDGERELAY_LOG_FORMAT=json",
		// The race runtime sleeps 1 s at exit by default: stop times would
		// measure it.
		"GORACE=atexit_sleep_ms=0"}, extra...)...)
	p := &agentProc{cmd: exec.Command(bin, "run"), stderr: &lockedBuffer{}, addr: addr, done: make(chan struct{})}
	p.cmd.Env, p.cmd.Dir, p.cmd.Stderr = env, dir, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("agent log:\n%s", tailLines(p.stderr.String(), 30))
		}
	})
	return p
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitLog waits until the agent logged a line containing msg.
func (p *agentProc) waitLog(t *testing.T, msg string) {
	t.Helper()
	waitFor(t, "log line "+msg, func() bool { return strings.Contains(p.stderr.String(), msg) })
}

var client = &http.Client{Timeout: 10 * time.Second}

// postEvents posts n events with ids prefix<i> and returns the answer.
func postEvents(t *testing.T, addr, prefix string, from, n, pad int) (code int, accepted int, durable bool) {
	t.Helper()
	var b strings.Builder
	p := strings.Repeat("p", pad)
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&b, "{\"id\":\"%s%d\",\"type\":\"load\",\"timestamp\":\"1\",\"data\":{\"pad\":%q}}\n", prefix, i, p)
	}
	resp, err := client.Post("http://"+addr+"/v1/events", "application/x-ndjson", strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	defer resp.Body.Close()
	var ans struct {
		Accepted int
		Durable  *bool
	}
	_ = json.NewDecoder(resp.Body).Decode(&ans)
	return resp.StatusCode, ans.Accepted, ans.Durable != nil && *ans.Durable
}

type statsReport struct {
	State       string                       `json:"state"`
	Durable     bool                         `json:"durable"`
	Degraded    bool                         `json:"spool_degraded"`
	Quarantined int                          `json:"spool_quarantined"`
	Received    map[string]uint64            `json:"received"`
	Dropped     map[string]map[string]uint64 `json:"dropped"`
	Sinks       map[string]struct {
		Received     uint64            `json:"received"`
		Delivered    uint64            `json:"delivered"`
		Dropped      map[string]uint64 `json:"dropped"`
		DroppedTotal uint64            `json:"dropped_total"`
		Pending      uint64            `json:"pending"`
		Balanced     bool              `json:"balanced"`
	} `json:"sinks"`
}

func getStats(t *testing.T, addr string) statsReport {
	t.Helper()
	resp, err := client.Get("http://" + addr + "/v1/stats")
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	defer resp.Body.Close()
	var r statsReport
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("stats: %v", err)
	}
	return r
}

func (r statsReport) received() (n uint64) {
	for _, v := range r.Received {
		n += v
	}
	return n
}

// checkBalanced fails unless every sink's identity holds.
func (r statsReport) checkBalanced(t *testing.T) {
	t.Helper()
	for name, s := range r.Sinks {
		if !s.Balanced || s.Received != s.Delivered+s.DroppedTotal+s.Pending {
			t.Fatalf("sink %s: received %d != delivered %d + dropped %d + pending %d", name, s.Received, s.Delivered, s.DroppedTotal, s.Pending)
		}
	}
}

// blackhole accepts connections and never answers: a sink that hangs.
func blackhole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "http://" + l.Addr().String()
}

// slowClient starts a POST whose body never comes, and returns once the
// agent's handler is reading it (the server's 100 Continue says so).
func slowClient(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, "100") {
		t.Fatalf("slow client: %q %v", line, err)
	}
	if _, err := c.Write([]byte(`{"id":"slow","type":"t",`)); err != nil {
		t.Fatal(err)
	}
}

// TestStopWithinGrace: with a sink that never answers (so the sinks use
// the whole grace) and a client whose body never comes, SIGTERM ends the
// process within EDGERELAY_SHUTDOWN_GRACE plus the stated 500 ms slack; a
// second SIGTERM ends it at once. Acceptance: 3 s grace, exit within 3.5 s;
// second signal, within 0.5 s.
func TestStopWithinGrace(t *testing.T) {
	const grace = 3 * time.Second
	sinkURL := blackhole(t)
	run := func(t *testing.T, second bool) time.Duration {
		dir := t.TempDir()
		p := startProc(t, binPath, dir, testenv.FreeAddr(t), "EDGERELAY_STATE_DIR="+filepath.Join(dir, "state"),
			"EDGERELAY_SHUTDOWN_GRACE="+grace.String(), "EDGERELAY_HTTP_URL="+sinkURL, "EDGERELAY_HTTP_API_KEY=k",
			"EDGERELAY_HTTP_RATE=0", "EDGERELAY_HTTP_LINGER=0s")
		waitReady(t, client, p.addr)
		if code, n, _ := postEvents(t, p.addr, "g", 0, 50, 10); code != 202 || n != 50 {
			t.Fatalf("post: %d %d", code, n)
		}
		slowClient(t, p.addr)
		start := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if second {
			p.waitLog(t, "edgerelay stopping")
			start = time.Now()
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Fatal("the agent did not exit within 30 s")
		}
		took := time.Since(start)
		if p.err != nil {
			t.Fatalf("exit: %v", p.err)
		}
		return took
	}
	t.Run("grace", func(t *testing.T) {
		took := run(t, false)
		t.Logf("SIGTERM to exit with a slow client and a hung sink, grace %s: %s (acceptance: 3.5 s)", grace, took.Round(time.Millisecond))
		// Before, the API's drain (2 s) came on top of the grace: 5 s.
		if took > grace+1500*time.Millisecond {
			t.Errorf("exit took %s, grace %s", took, grace)
		}
	})
	t.Run("second signal", func(t *testing.T) {
		took := run(t, true)
		t.Logf("second SIGTERM to exit: %s (acceptance: 0.5 s)", took.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Errorf("exit took %s after the second signal", took)
		}
	})
}

// makeSpool writes a stopped agent's spool with n records pending for the
// HTTP sink.
func makeSpool(t *testing.T, state string, n int) {
	t.Helper()
	s, err := spool.Open(spool.Options{Path: filepath.Join(state, "spool.db"), MaxBytes: 4 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddSink("http"); err != nil {
		t.Fatal(err)
	}
	const per = 10000
	group := make([][]byte, per)
	for i := 0; i < n; i += per {
		for k := range group {
			group[k] = fmt.Appendf(nil, `{"id":"big-%d","type":"backlog","timestamp":"1","data":{"pad":"%s"}}`, i+k, strings.Repeat("x", 120))
		}
		if err := s.Append(group[:min(per, n-i)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// down answers 503 to everything: a metrics API that is down.
func down(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestStartWithLargeSpool: the local API answers (503 with Retry-After
// while the spool opens) long before a large spool is open. Acceptance:
// a 1,000,000-record spool, the API answers within 200 ms of start.
func TestStartWithLargeSpool(t *testing.T) {
	n := 200_000
	if longTests() {
		n = 1_000_000
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	made := time.Now()
	makeSpool(t, state, n)
	t.Logf("spool of %d records written in %s", n, time.Since(made).Round(time.Millisecond))
	addr, sink := testenv.FreeAddr(t), down(t)
	start := time.Now()
	startProc(t, binPath, dir, addr, "EDGERELAY_STATE_DIR="+state, "EDGERELAY_HTTP_URL="+sink, "EDGERELAY_HTTP_API_KEY=k")
	var first time.Duration
	var firstCode int
	var retryAfter string
	fast := &http.Client{Timeout: time.Second}
	waitFor(t, "the API's first answer", func() bool {
		resp, err := fast.Post("http://"+addr+"/v1/events", "application/json", strings.NewReader(`{"type":"t","data":{}}`))
		if err != nil {
			return false
		}
		resp.Body.Close()
		first, firstCode, retryAfter = time.Since(start), resp.StatusCode, resp.Header.Get("Retry-After")
		return true
	})
	waitReady(t, client, addr)
	ready := time.Since(start)
	t.Logf("%d records: first answer %d (Retry-After %q) %s after exec, ready after %s (acceptance: answer within 200 ms)",
		n, firstCode, retryAfter, first.Round(time.Millisecond), ready.Round(time.Millisecond))
	// The first answer must come while the spool is still opening: a 503
	// with Retry-After. A 202 would be an API that waited for the spool,
	// which the time bound below cannot tell at this size (the whole open
	// takes well under 2 s); the order of the two is the agent's own, not
	// the machine's speed.
	if firstCode != http.StatusServiceUnavailable || retryAfter == "" {
		t.Errorf("first answer %d (Retry-After %q), want 503 with Retry-After while the spool opens", firstCode, retryAfter)
	}
	if first > 2*time.Second {
		t.Errorf("the API answered %s after start", first)
	}
	if st := getStats(t, addr); st.Sinks["http"].Pending < uint64(n) {
		t.Errorf("backlog after start: %+v", st.Sinks["http"])
	}
}

// TestCountersSurviveKill: drops made just before a kill -9 are reported
// after the restart, and no counter goes down; the identity holds.
func TestCountersSurviveKill(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	addr := testenv.FreeAddr(t)
	sink := down(t)
	env := []string{"EDGERELAY_STATE_DIR=" + state, "EDGERELAY_HTTP_URL=" + sink, "EDGERELAY_HTTP_API_KEY=k",
		"EDGERELAY_SPOOL_MAX_BYTES=1048576"}
	p := startProc(t, binPath, dir, addr, env...)
	waitReady(t, client, addr)
	var before statsReport
	for i := 0; ; i += 500 {
		if code, n, durable := postEvents(t, addr, "k", i, 500, 300); code != 202 || n != 500 || !durable {
			t.Fatalf("post: %d %d durable %v", code, n, durable)
		}
		before = getStats(t, addr)
		if before.Dropped["spool"]["spool_full"] > 0 {
			break
		}
		if i > 100_000 {
			t.Fatal("the spool never filled")
		}
	}
	// The drop was made by the last post's commit: kill at once.
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done

	startProc(t, binPath, dir, addr, env...)
	waitReady(t, client, addr)
	after := getStats(t, addr)
	t.Logf("before kill -9: received %d, spool_full %d; after restart: received %d, spool_full %d",
		before.received(), before.Dropped["spool"]["spool_full"], after.received(), after.Dropped["spool"]["spool_full"])
	if after.Dropped["spool"]["spool_full"] < before.Dropped["spool"]["spool_full"] || after.received() < before.received() {
		t.Fatalf("counters went down across kill -9: before %+v, after %+v", before, after)
	}
	b, a := before.Sinks["http"], after.Sinks["http"]
	if a.Received < b.Received || a.DroppedTotal < b.DroppedTotal || a.Pending != b.Pending {
		t.Fatalf("sink http: before %+v, after %+v", b, a)
	}
	after.checkBalanced(t)
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf(`edgerelay_events_dropped_total{reason="spool_full",stage="spool"} %d`, after.Dropped["spool"]["spool_full"])
	if !strings.Contains(string(body), want) {
		t.Errorf("/metrics lacks %s", want)
	}
}

// fillDisk writes a file into dir until the file system is full.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

// TestDiskFullAtStart: a disk already full when the agent starts does not
// stop it: it starts degraded and goes to disk once space returns.
func TestDiskFullAtStart(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	testenv.MountTmpfs(t, state, "1m")
	filler := fillDisk(t, state)
	degradedStartRecovers(t, dir, state, "disk full at start", "the space returned (acceptance: 5 s)", func() {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReadOnlyStateAtStart: a state directory on a file system mounted
// read-only does not stop the agent either: it starts degraded and goes to
// disk once the file system is writable again.
func TestReadOnlyStateAtStart(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	testenv.MountTmpfs(t, state, "8m")
	remount := func(mode string) {
		t.Helper()
		if out, err := exec.Command("mount", "-o", "remount,"+mode, state).CombinedOutput(); err != nil {
			t.Fatalf("remount %s: %v %s", mode, err, out)
		}
	}
	remount("ro")
	degradedStartRecovers(t, dir, state, "read-only state directory at start", "the remount read-write", func() { remount("rw") })
}

// degradedStartRecovers starts the agent on a state directory it cannot
// write: it must answer 202 durable:false and report itself degraded; after
// recover, answers turn durable:true (the time is logged), and a restart
// finds a good spool: nothing quarantined, nothing left behind.
func degradedStartRecovers(t *testing.T, dir, state, what, after string, recover func()) {
	t.Helper()
	addr := testenv.FreeAddr(t)
	env := []string{"EDGERELAY_STATE_DIR=" + state, "EDGERELAY_STDOUT=on", "EDGERELAY_SHUTDOWN_GRACE=1s"}
	p := startProc(t, binPath, dir, addr, env...)
	waitReady(t, client, addr)
	if code, _, durable := postEvents(t, addr, "f", 0, 10, 10); code != 202 || durable {
		t.Fatalf("%s: post %d durable %v, want 202 not durable", what, code, durable)
	}
	if st := getStats(t, addr); !st.Degraded || st.Durable {
		t.Fatalf("%s: stats %+v", what, st)
	}
	recover()
	since := time.Now()
	i := 10
	waitFor(t, "durable answers", func() bool {
		_, _, durable := postEvents(t, addr, "f", i, 1, 10)
		i++
		return durable
	})
	t.Logf("%s: durable:true %s after %s", what, time.Since(since).Round(time.Millisecond), after)
	if took := time.Since(since); took > 10*time.Second {
		t.Errorf("%s: durable again after %s", what, took)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.done
	startProc(t, binPath, dir, addr, env...)
	waitReady(t, client, addr)
	if st := getStats(t, addr); st.Quarantined != 0 || !st.Durable || st.Degraded {
		t.Fatalf("%s, after restart: %+v", what, st)
	}
	if m, _ := filepath.Glob(filepath.Join(state, "spool.db.*")); len(m) != 0 {
		t.Fatalf("%s: left behind: %v", what, m)
	}
}

// buildPlain builds the binary without the race detector, whose shadow
// memory would swamp a measure of resident memory.
func buildPlain(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "edgerelay")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// procMemory returns a process's resident and anonymous resident memory.
func procMemory(pid int) (rss, anon int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
			rss = kb << 10
		}
		if _, err := fmt.Sscanf(line, "RssAnon: %d kB", &kb); err == nil {
			anon = kb << 10
		}
	}
	return rss, anon
}

// TestDiskFullMemoryBudget fills the spool's disk (a real tmpfs) under a
// steady 5,000 events a second with the sink down: the agent holds at most
// its memory budget, drops the oldest beyond it (memory_full), and when
// the space returns, what it holds is on disk again within seconds; the
// identity holds throughout. Acceptance (EDGERELAY_LONG_TESTS=1: default
// caps, two minutes, a binary without the race detector): resident memory
// under the budget plus the stated overhead. The short run uses a 2 MiB
// budget for 8 s.
func TestDiskFullMemoryBudget(t *testing.T) {
	const rate = 5000 // events a second, in posts of 500 every 100 ms
	dur, budget := 8*time.Second, int64(2<<20)
	bin := binPath
	if longTests() {
		dur, budget = 2*time.Minute, 16<<20
		bin = buildPlain(t)
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	testenv.MountTmpfs(t, state, "64m")
	addr := testenv.FreeAddr(t)
	p := startProc(t, bin, dir, addr, "EDGERELAY_STATE_DIR="+state, "EDGERELAY_HTTP_URL="+down(t), "EDGERELAY_HTTP_API_KEY=k",
		fmt.Sprintf("EDGERELAY_SPOOL_MEMORY_MAX_BYTES=%d", budget))
	waitReady(t, client, addr)
	for i := 0; i < 5000; i += 500 { // some on disk before it fills
		if code, _, durable := postEvents(t, addr, "pre", i, 500, 150); code != 202 || !durable {
			t.Fatalf("post: %d durable %v", code, durable)
		}
	}
	_, baseAnon := procMemory(p.cmd.Process.Pid)
	filler := fillDisk(t, state)

	var maxRSS, maxAnon int64
	var accepted, notDurable int
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(dur)
	for n := 0; time.Now().Before(end); n++ {
		<-tick.C
		code, k, durable := postEvents(t, addr, "full", n*500, rate/10, 150)
		if code != 202 {
			t.Fatalf("post while the disk is full: %d", code)
		}
		accepted += k
		if !durable {
			notDurable += k
		}
		if n%5 == 0 {
			rss, anon := procMemory(p.cmd.Process.Pid)
			maxRSS, maxAnon = max(maxRSS, rss), max(maxAnon, anon)
		}
	}
	st := getStats(t, addr)
	st.checkBalanced(t)
	memFull := st.Dropped["spool"]["memory_full"]
	t.Logf("disk full %s at %d ev/s: %d accepted (%d not durable), memory_full %d; budget %d MiB; RSS max %.1f MiB, anonymous max %.1f MiB (%.1f before)",
		dur, rate, accepted, notDurable, memFull, budget>>20, float64(maxRSS)/(1<<20), float64(maxAnon)/(1<<20), float64(baseAnon)/(1<<20))
	if !st.Degraded || notDurable == 0 || memFull == 0 {
		t.Fatalf("degraded %v, not durable %d, memory_full %d", st.Degraded, notDurable, memFull)
	}
	// The stated overhead (docs/OPERATIONS.md): 48 MiB of anonymous memory
	// beyond the budget, for the runtime, the collector's headroom and the
	// requests in flight.
	if longTests() && maxAnon > budget+48<<20 {
		t.Errorf("anonymous memory %d bytes, over the budget plus 48 MiB", maxAnon)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	waitFor(t, "the spool back on disk", func() bool { return !getStats(t, addr).Degraded })
	back := time.Since(freed)
	_, _, durable := postEvents(t, addr, "after", 0, 10, 10)
	st = getStats(t, addr)
	st.checkBalanced(t)
	t.Logf("space returned: everything held on disk after %s (nothing posted meanwhile); next answer durable %v",
		back.Round(time.Millisecond), durable)
	if !durable || back > 10*time.Second {
		t.Errorf("durable %v, back on disk after %s", durable, back)
	}
	if h := st.Sinks["http"]; h.Received < uint64(accepted) {
		t.Errorf("sink http received %d, %d accepted while full", h.Received, accepted)
	}
}
