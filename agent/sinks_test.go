package agent

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHTTPKeyFileMissingFailsAlone: an HTTP sink whose key file is missing
// at start does not stop the agent: it is paused (misconfigured) while
// stdout delivers, and starts with every held event once the file exists
// and the agent is told (SIGHUP's Reload; the probes would find it too).
func TestHTTPKeyFileMissingFailsAlone(t *testing.T) {
	ms := &metricsServer{ids: map[string]int{}, key: "late-key-789"}
	hs := httptest.NewServer(ms)
	defer hs.Close()
	srv := hs.URL
	keyFile := filepath.Join(t.TempDir(), "key")
	var logs syncBuffer
	env := testEnv(t, map[string]string{
		"EDGERELAY_HTTP_URL": srv, "EDGERELAY_HTTP_API_KEY_FILE": keyFile, "EDGERELAY_HTTP_LINGER": "0s",
		"EDGERELAY_HTTP_RATE": "0", "EDGERELAY_STDOUT": "on",
	})
	out := &syncBuffer{}
	a, err := New(loadConfig(t, env), Options{Stdout: out, Logger: newTestLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, a, out)
	if s := a.Report().Sinks["http"]; s.Paused != "misconfigured" {
		t.Errorf("right after start the HTTP sink shows %+v, want paused misconfigured", s)
	}
	postIDs(t, r, "h", 0, 10)
	waitUntil(t, "stdout to deliver, HTTP to hold", func() bool {
		rep := a.Report()
		return rep.Sinks["stdout"].Delivered == 10 && rep.Sinks["http"].Pending == 10 && rep.Sinks["http"].Paused == "misconfigured"
	})
	if !strings.Contains(logs.String(), "sink cannot start") || !strings.Contains(logs.String(), keyFile) {
		t.Errorf("the log does not say why the sink cannot start:\n%s", logs.String())
	}
	if err := os.WriteFile(keyFile, []byte("late-key-789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.Reload()
	waitUntil(t, "the HTTP sink to start and deliver", func() bool {
		s := a.Report().Sinks["http"]
		return s.Delivered == 10 && s.Pending == 0 && s.Paused == ""
	})
	ms.mu.Lock()
	got := len(ms.ids)
	ms.mu.Unlock()
	if got != 10 {
		t.Errorf("the metrics API got %d events", got)
	}
	if strings.Contains(logs.String(), "late-key-789") {
		t.Error("the key appears in the logs")
	}
}

// TestNoSinkWarns: a configuration with no sink at all says so in the log.
func TestNoSinkWarns(t *testing.T) {
	var logs syncBuffer
	a, err := New(loadConfig(t, testEnv(t, map[string]string{"EDGERELAY_STDOUT": "off"})), Options{Logger: newTestLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, a, &syncBuffer{})
	if !strings.Contains(logs.String(), `"level":"WARN","msg":"no sink configured`) {
		t.Errorf("no warning about the missing sink:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), `"sinks":null`) {
		t.Errorf("the start line logs the sinks as null:\n%s", logs.String())
	}
	var logs2 syncBuffer
	b, err := New(loadConfig(t, testEnv(t, nil)), Options{Stdout: &syncBuffer{}, Logger: newTestLogger(&logs2)})
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, b, &syncBuffer{})
	if strings.Contains(logs2.String(), "no sink configured") {
		t.Errorf("a warning with the stdout sink on:\n%s", logs2.String())
	}
}
