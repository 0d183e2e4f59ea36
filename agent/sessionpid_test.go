package agent

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestSessionAttachPID: a session attached over the unix socket without
// "pid" takes the runner's pid from SO_PEERCRED (here: this test process);
// an explicit pid is kept; a negative one is refused.
func TestSessionAttachPID(t *testing.T) {
	env := testEnv(t, nil)
	startAgent(t, env)
	uc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", env["EDGERELAY_SOCKET"])
	}}}
	defer uc.CloseIdleConnections()
	attach := func(body string) (int, map[string]any) {
		resp, err := uc.Post("http://agent/v1/sessions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		json.Unmarshal(raw, &m)
		return resp.StatusCode, m
	}
	if code, m := attach(`{"session_id":"s1"}`); code != http.StatusCreated || m["pid"] != float64(os.Getpid()) {
		t.Errorf("attach without pid: %d %v, want pid %d", code, m, os.Getpid())
	}
	if code, m := attach(`{"session_id":"s2","pid":4242}`); code != http.StatusCreated || m["pid"] != float64(4242) {
		t.Errorf("attach with pid: %d %v", code, m)
	}
	if code, m := attach(`{"session_id":"s3","pid":-3}`); code != http.StatusBadRequest || !strings.Contains(m["error"].(string), "pid") {
		t.Errorf("negative pid: %d %v", code, m)
	}
}
