package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/livepeer/edgerelay/agent/ingest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a goroutine-safe stdout for the agent under test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// testEnv is the environment of an agent under test: loopback on an
// ephemeral port, a socket and state in a temp dir, no GPUs, no periodic
// status.
func testEnv(t *testing.T, extra map[string]string) map[string]string {
	dir := t.TempDir()
	env := map[string]string{
		"EDGERELAY_ENABLED":         "true",
		"EDGERELAY_LISTEN":          "127.0.0.1:0",
		"EDGERELAY_SOCKET":          filepath.Join(dir, "s.sock"),
		"EDGERELAY_STATE_DIR":       dir,
		"EDGERELAY_NVML":            "off",
		"EDGERELAY_HOSTNET":         "off",
		"EDGERELAY_STATUS_INTERVAL": "1h",
		"EDGERELAY_SHUTDOWN_GRACE":  "2s",
		"EDGERELAY_NODE_ID":         "node-1",
		"EDGERELAY_HOST":            "host-1",
		"EDGERELAY_REGION":          "eu",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func mapEnv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func loadConfig(t *testing.T, env map[string]string) Config {
	t.Helper()
	cfg, err := Load(nil, mapEnv(env), io.Discard)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

// running is an agent started in-process for a test.
type running struct {
	a      *Agent
	base   string
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

func startAgent(t *testing.T, env map[string]string) *running {
	t.Helper()
	cfg := loadConfig(t, env)
	out := &syncBuffer{}
	a, err := New(cfg, Options{Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	return runAgent(t, a, out)
}

// runAgent runs a built agent until the test ends.
func runAgent(t *testing.T, a *Agent, out *syncBuffer) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{a: a, out: out, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-r.done:
		cancel()
		t.Fatalf("agent did not start: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("agent did not become ready in 10s")
	}
	if addr := a.Addr(); addr != nil {
		r.base = "http://" + addr.String()
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop shuts the agent down (idempotent) and returns Run's error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not stop in 15s")
	}
	return nil
}

func (r *running) post(t *testing.T, path, body string, hdr ...string) (int, ingest.Answer) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.base+path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans ingest.Answer
	raw, _ := io.ReadAll(resp.Body)
	json.Unmarshal(raw, &ans)
	return resp.StatusCode, ans
}

// waitLines waits until stdout holds at least n lines (the forwarder is
// asynchronous) and returns them.
func (r *running) waitLines(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines := r.out.Lines()
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("stdout has %d lines, want %d:\n%s", len(lines), n, strings.Join(lines, "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var testClient = &http.Client{Timeout: 20 * time.Second}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
