package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/internal/testenv"
)

// binPath is the edgerelay binary built once for the tests of this package,
// which run it as a user would.
var binPath string

// testVersion and testRevision are what the test binary is built with;
// a revision Go stamps (with -buildvcs) takes the place of testRevision.
const testVersion, testRevision = "v0.0.0-test", "0123456789abcdef0123456789abcdef01234567"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edgerelay-bin-")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "edgerelay")
	// The version and revision as the Makefile sets them.
	build := exec.Command("go", "build", "-race", "-ldflags", "-X main.version="+testVersion+" -X main.revision="+testRevision, "-o", binPath, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building edgerelay:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestDisabledExitsAtOnce(t *testing.T) {
	cmd := exec.Command(binPath, "run")
	cmd.Env = testenv.Clean("EDGERELAY_ENABLED=")
	cmd.Dir = t.TempDir()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("exit: %v (%s)", err, stderr.String())
	}
	// "At once" is judged by what it did, not by the clock: it opened no
	// spool and no socket (nothing in its working directory).
	if ents, _ := os.ReadDir(cmd.Dir); len(ents) != 0 {
		t.Errorf("a disabled agent left %d entries in its directory (%v)", len(ents), ents[0].Name())
	}
	if !strings.Contains(stderr.String(), "EDGERELAY_ENABLED=true") {
		t.Errorf("stderr does not say how to enable: %q", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(cmd.Dir, ".edgerelay")); err == nil {
		t.Error("a disabled agent created its state directory")
	}
}

func TestBadConfigExitsTwo(t *testing.T) {
	cmd := exec.Command(binPath, "run")
	cmd.Env = testenv.Clean("EDGERELAY_ENABLED=true", "EDGERELAY_SAMPLE_INTERVAL=10ms")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2: %s", err, out)
	}
	if !strings.Contains(string(out), "EDGERELAY_SAMPLE_INTERVAL") {
		t.Errorf("message does not name the variable: %s", out)
	}
}

// lockedBuffer collects a child's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor polls cond until it holds, failing the test after 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, 15*time.Second, what, cond)
}

// waitForLong is waitFor for a minute: for what takes a whole process's
// start or stop (the wrapper, a container).
func waitForLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, time.Minute, what, cond)
}

// waitWithin polls cond every 10 ms until it holds, failing the test
// after limit.
func waitWithin(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitReady waits until the agent at addr answers /readyz with 200.
func waitReady(t *testing.T, client *http.Client, addr string) {
	t.Helper()
	waitFor(t, "readyz", func() bool {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func TestDemoEndToEndWithTail(t *testing.T) {
	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	agentCmd := exec.Command(binPath, "run", "--demo")
	agentCmd.Env = testenv.Clean("EDGERELAY_LISTEN="+addr, "EDGERELAY_SHUTDOWN_GRACE=3s")
	agentCmd.Dir = dir
	out, errOut := &lockedBuffer{}, &lockedBuffer{}
	agentCmd.Stdout, agentCmd.Stderr = out, errOut
	if err := agentCmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- agentCmd.Wait() }()
	defer func() {
		agentCmd.Process.Kill()
		<-exited
	}()
	client := &http.Client{Timeout: 5 * time.Second}
	waitReady(t, client, addr)

	tail := exec.Command(binPath, "tail", "--socket", filepath.Join(dir, ".edgerelay", "ingest.sock"), "--type", "demo_event")
	tail.Env = testenv.Clean()
	tailOut, err := tail.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tail.Stderr = os.Stderr
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { tail.Process.Kill(); tail.Wait() }()
	tailLines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(tailOut)
		for sc.Scan() {
			tailLines <- sc.Text()
		}
		close(tailLines)
	}()

	prebuilt := `{"id":"demo-1","type":"demo_event","timestamp":"1767908945298","gateway":"","data":{"n":1}}`
	post := func(body string) int {
		resp, err := client.Post("http://"+addr+"/v1/events", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// Post until the tail shows it: the tail connects asynchronously.
	var seen string
	deadline := time.After(15 * time.Second)
	for seen == "" {
		if code := post(prebuilt); code != 202 {
			t.Fatalf("POST: %d", code)
		}
		select {
		case l := <-tailLines:
			seen = l
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("edgerelay tail showed nothing")
		}
	}
	if seen != prebuilt {
		t.Errorf("tail line %q, want %q", seen, prebuilt)
	}
	waitFor(t, "envelope on stdout", func() bool { return strings.Contains(out.String(), prebuilt+"\n") })
	waitFor(t, "agent_status on stdout", func() bool { return strings.Contains(out.String(), `"type":"agent_status"`) })
	// The JSON log writes durations as Go duration text, like every other.
	checkedTook := false
	for _, line := range strings.Split(errOut.String(), "\n") {
		var l struct {
			Msg  string
			Took any
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Msg != "spool opened" {
			continue
		}
		s, ok := l.Took.(string)
		if _, err := time.ParseDuration(s); !ok || err != nil {
			t.Errorf("spool opened: took = %#v, want a duration text", l.Took)
		}
		checkedTook = true
	}
	if !checkedTook {
		t.Errorf("no JSON \"spool opened\" line with took in the log:\n%s", errOut.String())
	}

	start := time.Now()
	agentCmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, errOut.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit within the 3s grace (+2s)")
	}
	t.Logf("SIGTERM to exit: %s", time.Since(start))
}
