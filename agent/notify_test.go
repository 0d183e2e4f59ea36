package agent

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// notifyListener is a fake systemd: a unixgram socket that records every
// datagram sent to NOTIFY_SOCKET.
type notifyListener struct {
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	done chan struct{}
}

func listenNotify(t *testing.T) *notifyListener {
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifyListener{conn: c, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-n.done })
	t.Setenv("NOTIFY_SOCKET", path)
	return n
}

func (n *notifyListener) count(prefix string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := 0
	for _, m := range n.msgs {
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, prefix) {
				k++
			}
		}
	}
	return k
}

// hangingSink blocks in Send while hang is set.
type hangingSink struct {
	mu      sync.Mutex
	hang    bool
	release chan struct{}
}

func (s *hangingSink) Send(ctx context.Context, recs []spool.Record) relay.Result {
	s.mu.Lock()
	hang, release := s.hang, s.release
	s.mu.Unlock()
	if hang {
		select {
		case <-release:
		case <-ctx.Done():
			return relay.Result{Err: ctx.Err()}
		}
	}
	return relay.Done(len(recs))
}

func TestSystemdNotifyAndWatchdog(t *testing.T) {
	n := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "200000") // 200 ms: pings every 100 ms
	t.Setenv("WATCHDOG_PID", "")
	sink := &hangingSink{release: make(chan struct{})}
	cfg := loadConfig(t, testEnv(t, nil))
	out := &syncBuffer{}
	a, err := New(cfg, Options{Stdout: out, extraSink: sink})
	if err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, a, out)
	waitUntil(t, "READY=1", func() bool { return n.count("READY=1") == 1 })
	waitUntil(t, "3 watchdog pings", func() bool { return n.count("WATCHDOG=1") >= 3 })
	if n.count("STATUS=") == 0 {
		t.Error("no STATUS=")
	}

	// Wedge the test sink's forwarder: the pings must stop.
	sink.mu.Lock()
	sink.hang = true
	sink.mu.Unlock()
	r.post(t, "/v1/events", `{"type":"x","data":{}}`)
	waitUntil(t, "the forwarder to be stalled past the 100 ms limit", func() bool { return a.stalled(time.Now(), 100*time.Millisecond) != "" })
	before := n.count("WATCHDOG=1")
	// Nothing is expected to happen: 500 ms are 5 ping intervals, in which
	// at most the one ping already on its way may arrive.
	time.Sleep(500 * time.Millisecond)
	if after := n.count("WATCHDOG=1"); after > before+1 {
		t.Errorf("watchdog kept pinging with a wedged forwarder: %d -> %d", before, after)
	}
	close(sink.release)
	sink.mu.Lock()
	sink.hang = false
	sink.mu.Unlock()
	waitUntil(t, "pings to resume", func() bool { return n.count("WATCHDOG=1") >= before+2 })

	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "STOPPING=1", func() bool { return n.count("STOPPING=1") == 1 })
	os.Unsetenv("NOTIFY_SOCKET")
}

// An NVML call that hangs in the driver stops the watchdog pings, and the
// agent still stops promptly (the call is left behind).
func TestWatchdogNVMLHang(t *testing.T) {
	n := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", "")
	cfg := loadConfig(t, testEnv(t, map[string]string{"EDGERELAY_NVML": "sim", "EDGERELAY_SAMPLE_INTERVAL": "100ms", "EDGERELAY_PROCESS_INTERVAL": "1s"}))
	out := &syncBuffer{}
	a, err := New(cfg, Options{Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, a, out)
	waitUntil(t, "3 watchdog pings", func() bool { return n.count("WATCHDOG=1") >= 3 })
	release := make(chan struct{})
	defer close(release)
	a.gpus.Sim().SetHang(2, release)
	waitUntil(t, "the NVML call to be reported stalled", func() bool { return a.stalled(time.Now(), 100*time.Millisecond) == "NVML call" })
	before := n.count("WATCHDOG=1")
	// Nothing is expected to happen: 500 ms are 5 ping intervals.
	time.Sleep(500 * time.Millisecond)
	if after := n.count("WATCHDOG=1"); after > before+1 {
		t.Errorf("watchdog kept pinging with a hung NVML call: %d -> %d", before, after)
	}
	began := time.Now()
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 5*time.Second+nvmlCloseWait+5*time.Second {
		t.Errorf("stopping with a hung NVML call took %s", took)
	}
	os.Unsetenv("NOTIFY_SOCKET")
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReloadLogLevel(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), "edgerelay.env")
	os.WriteFile(envFile, []byte("# comment\nEDGERELAY_LOG_LEVEL=info\n"), 0o600)
	level := new(slog.LevelVar)
	cfg := loadConfig(t, testEnv(t, map[string]string{"EDGERELAY_ENV_FILE": envFile}))
	a, err := New(cfg, Options{LogLevel: level})
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, a, &syncBuffer{})
	os.WriteFile(envFile, []byte("EDGERELAY_LOG_LEVEL=\"debug\"\n"), 0o600)
	a.Reload()
	if level.Level() != slog.LevelDebug {
		t.Errorf("level %s after reload, want debug", level.Level())
	}
	os.WriteFile(envFile, []byte("EDGERELAY_LOG_LEVEL=loud\n"), 0o600)
	a.Reload()
	if level.Level() != slog.LevelDebug {
		t.Errorf("a bad value changed the level to %s", level.Level())
	}
}
