package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/livepeer/edgerelay/agent/ingest"
)

func TestPrebuiltEnvelopeForwardedByteForByte(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	// Unusual key order, spacing and number forms must all survive.
	in := []string{
		`{"type":"stream_trace","id":"0194b7c4-6f2a-7c3e-9a51-2f0e6d1b8a90", "timestamp":"1767908945298","gateway":"gw","data":{"z":1.50,"a":[1e3, {"k":"\u00e9"}],"stream_id":"s"}}`,
		`{"id":"x-2","type":"t","timestamp":"0","data":[1,2,3]}`,
	}
	code, ans := r.post(t, "/v1/events", strings.Join(in, "\n"))
	if code != http.StatusAccepted || ans.Accepted != 2 {
		t.Fatalf("got %d %+v", code, ans)
	}
	lines := r.waitLines(t, 2)
	for i := range in {
		if lines[i] != in[i] {
			t.Errorf("line %d changed:\n in: %s\nout: %s", i, in[i], lines[i])
		}
	}
}

func TestStampedEvent(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	before := time.Now().UnixMilli()
	code, ans := r.post(t, "/v1/events", `{"type":"runner_metric","data":{"fps":29.97,"big":12345678901234567890,"host":""}}`)
	if code != http.StatusAccepted || ans.Accepted != 1 {
		t.Fatalf("got %d %+v", code, ans)
	}
	after := time.Now().UnixMilli()
	var env struct {
		ID        string
		Type      string
		Timestamp string
		Gateway   *string
		Data      map[string]json.RawMessage
	}
	if err := json.Unmarshal([]byte(r.waitLines(t, 1)[0]), &env); err != nil {
		t.Fatal(err)
	}
	id, err := uuid.Parse(env.ID)
	if err != nil || id.Version() != 7 {
		t.Errorf("id %q is not a UUIDv7 (%v)", env.ID, err)
	}
	ts, err := strconv.ParseInt(env.Timestamp, 10, 64)
	if err != nil || ts < before || ts > after {
		t.Errorf("timestamp %q not ms in [%d,%d]", env.Timestamp, before, after)
	}
	if env.Type != "runner_metric" || env.Gateway == nil {
		t.Errorf("type %q gateway %v", env.Type, env.Gateway)
	}
	want := map[string]string{
		"type": `"runner_metric"`, "client_source": `"edgerelay"`, "node_id": `"node-1"`,
		"region": `"eu"`, "fps": `29.97`, "big": `12345678901234567890`,
		"host": `"host-1"`, // an empty identity value is unknown: filled from the node
	}
	for k, v := range want {
		if got := string(env.Data[k]); got != v {
			t.Errorf("data.%s = %s, want %s", k, got, v)
		}
	}
	if _, ok := env.Data["stream_id"]; ok {
		t.Error("unknown identity stream_id must be omitted")
	}
}

func TestArrayWithOneBadItem(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	code, ans := r.post(t, "/v1/events", `[{"type":"a","data":{}},{"type":"b","data":"nope"},{"id":"e1","type":"c","timestamp":"17","data":{}}]`)
	if code != http.StatusAccepted || ans.Accepted != 2 || len(ans.Rejected) != 1 {
		t.Fatalf("got %d %+v", code, ans)
	}
	if rej := ans.Rejected[0]; rej.Index != 1 || !strings.Contains(rej.Error, "data") {
		t.Errorf("rejection %+v should name index 1 and field data", rej)
	}
	if ans.Durable == nil {
		t.Error("answer lacks durable")
	}
}

func TestRejections(t *testing.T) {
	r := startAgent(t, testEnv(t, map[string]string{"EDGERELAY_MAX_EVENT_BYTES": "1024", "EDGERELAY_MAX_BODY_BYTES": "8192"}))
	big := strings.Repeat("x", 2000)
	cases := []struct {
		name      string
		body      string
		code      int
		accepted  int
		wantInErr []string // substrings of the rejections or the error, in order of items
	}{
		{"empty", "  ", 400, 0, []string{"empty"}},
		{"not json", "hello", 400, 0, []string{"line 1: invalid JSON"}},
		{"broken array", `[{"type":"a","data":{}}`, 400, 0, []string{"invalid JSON array"}},
		{"unknown field", `{"type":"a","data":{},"extra":1}`, 400, 0, []string{`unknown field "extra"`}},
		{"envelope unknown field", `{"id":"1","type":"a","timestamp":"1","data":{},"x":2}`, 400, 0, []string{`unknown field "x"`}},
		{"timestamp number", `{"id":"1","type":"a","timestamp":1,"data":{}}`, 400, 0, []string{"timestamp"}},
		{"timestamp not digits", `{"id":"1","type":"a","timestamp":"12a","data":{}}`, 400, 0, []string{"timestamp"}},
		{"empty id", `{"id":" ","type":"a","timestamp":"1","data":{}}`, 400, 0, []string{"id: must be a non-empty string"}},
		{"data scalar", `{"id":"1","type":"a","timestamp":"1","data":5}`, 400, 0, []string{"data: must be a JSON object or array"}},
		{"type wrong type", `{"type":5,"data":{}}`, 400, 0, []string{"type: must be a non-empty string"}},
		{"event too large", `{"type":"a","data":{"s":"` + big + `"}}`, 400, 0, []string{"over the limit of 1024"}},
		{"not an object", `[1, {"type":"a","data":{}}]`, 202, 1, []string{"must be a JSON object"}},
		{"jsonl bad middle line", "{\"type\":\"a\",\"data\":{}}\n{oops\n{\"type\":\"b\",\"data\":{}}\n", 202, 2, []string{"line 2: invalid JSON"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, ans := r.post(t, "/v1/events", tc.body)
			if code != tc.code || ans.Accepted != tc.accepted {
				t.Fatalf("got %d %+v, want %d accepted %d", code, ans, tc.code, tc.accepted)
			}
			all := ans.Error
			for _, rej := range ans.Rejected {
				all += " | " + rej.Error
			}
			for _, w := range tc.wantInErr {
				if !strings.Contains(all, w) {
					t.Errorf("errors %q lack %q", all, w)
				}
			}
		})
	}
	t.Run("body over limit", func(t *testing.T) {
		code, _ := r.post(t, "/v1/events", `{"type":"a","data":{"s":"`+strings.Repeat("y", 9000)+`"}}`)
		if code != http.StatusRequestEntityTooLarge {
			t.Fatalf("got %d, want 413", code)
		}
	})
	// Nothing above harmed what was accepted: exactly 3 events reached the
	// spool (every answer above came after its commit), and those 3 came out.
	if got := r.a.Report().Sinks["stdout"].Received; got != 3 {
		t.Errorf("the stdout sink received %d events, want 3", got)
	}
	waitUntil(t, "3 delivered", func() bool { return r.a.Report().Sinks["stdout"].Delivered == 3 })
	if got := len(r.out.Lines()); got != 3 {
		t.Errorf("stdout has %d lines, want 3", got)
	}
}

func TestStatsAndMetrics(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	for i := range 5 {
		r.post(t, "/v1/events", fmt.Sprintf(`{"type":"n","data":{"i":%d}}`, i))
	}
	r.waitLines(t, 5)
	// A line is written before its batch is acknowledged and counted.
	waitUntil(t, "the stdout sink to count 5 delivered", func() bool { return r.a.Report().Sinks["stdout"].Delivered == 5 })
	resp, err := testClient.Get(r.base + "/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	s := rep.Sinks["stdout"]
	if s.Received != 5 || s.Delivered != 5 || s.Pending != 0 || !s.Balanced {
		t.Errorf("stdout sink report %+v", s)
	}
	if rep.Received["api"] != 5 {
		t.Errorf("received %v", rep.Received)
	}
	resp, err = testClient.Get(r.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`edgerelay_events_received_total{source="api"} 5`,
		`edgerelay_events_delivered_total{sink="stdout"} 5`,
		`edgerelay_events_pending{sink="stdout"} 0`,
		`edgerelay_spool_durable`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestUnixSocketAndToken(t *testing.T) {
	env := testEnv(t, map[string]string{"EDGERELAY_INGEST_TOKEN": "s3cret"})
	r := startAgent(t, env)
	fi, err := os.Stat(env["EDGERELAY_SOCKET"])
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	if code, _ := r.post(t, "/v1/events", `{"type":"a","data":{}}`); code != http.StatusUnauthorized {
		t.Errorf("no token: got %d, want 401", code)
	}
	if code, _ := r.post(t, "/v1/events", `{"type":"a","data":{}}`, "Authorization", "Bearer wrong"); code != http.StatusUnauthorized {
		t.Errorf("bad token: got %d, want 401", code)
	}
	if resp, err := testClient.Get(r.base + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("healthz needs no token: %v", err)
	} else {
		resp.Body.Close()
	}
	uc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", env["EDGERELAY_SOCKET"])
	}}}
	defer uc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, "http://agent/v1/events", strings.NewReader(`{"type":"via_socket","data":{}}`))
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := uc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("socket post: %d", resp.StatusCode)
	}
	if !strings.Contains(r.waitLines(t, 1)[0], `"via_socket"`) {
		t.Error("event posted on the socket did not come out")
	}
}

func TestSessionIdentity(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	code, _ := r.post(t, "/v1/sessions", `{"session_id":"sess-1","stream_id":"st-1","request_id":"rq-1","manifest_id":"m-1","pipeline":"live-video-to-video","model_id":"streamdiffusion","gpu_id":"GPU-1"}`)
	if code != http.StatusCreated {
		t.Fatalf("attach: %d", code)
	}
	if code, _ := r.post(t, "/v1/sessions", `{"session_id":"x","bogus":1}`); code != http.StatusBadRequest {
		t.Errorf("attach with unknown field: %d", code)
	}
	prebuilt := `{"id":"p1","type":"t","timestamp":"5","data":{"session_id":"sess-1"}}`
	r.post(t, "/v1/events", `{"type":"frame_stats","data":{"session_id":"sess-1","pipeline":"own"}}`+"\n"+prebuilt)
	lines := r.waitLines(t, 2)
	var env struct{ Data map[string]string }
	json.Unmarshal([]byte(lines[0]), &env)
	want := map[string]string{"stream_id": "st-1", "request_id": "rq-1", "connection_id": "m-1", "model_id": "streamdiffusion", "gpu_id": "GPU-1", "pipeline": "own"}
	for k, v := range want {
		if env.Data[k] != v {
			t.Errorf("data.%s = %q, want %q", k, env.Data[k], v)
		}
	}
	if lines[1] != prebuilt {
		t.Errorf("prebuilt envelope modified: %s", lines[1])
	}
	req, _ := http.NewRequest(http.MethodDelete, r.base+"/v1/sessions/sess-1", nil)
	resp, err := testClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("detach: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, _ = testClient.Do(req)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("second detach: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

func TestTail(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(r.base, "http", "ws", 1)+"/v1/tail?type=keep", &websocket.DialOptions{HTTPClient: testClient})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	// The subscription is registered once the handler runs; post until the
	// first envelope shows up so the test does not depend on timing.
	got := make(chan string, 16)
	go func() {
		for {
			_, m, err := c.Read(ctx)
			if err != nil {
				close(got)
				return
			}
			got <- string(m)
		}
	}()
	deadline := time.After(5 * time.Second)
	for i := 0; ; i++ {
		r.post(t, "/v1/events", fmt.Sprintf(`[{"type":"skip","data":{}},{"type":"keep","data":{"i":%d}}]`, i))
		select {
		case m := <-got:
			if !strings.Contains(m, `"type":"keep"`) {
				t.Fatalf("tail passed a filtered type: %s", m)
			}
			c.Close(websocket.StatusNormalClosure, "")
			return
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatal("no envelope on /v1/tail")
		}
	}
}

func TestShutdownDeliversAndRefuses(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	var body strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&body, "{\"type\":\"s\",\"data\":{\"i\":%d}}\n", i)
	}
	if code, ans := r.post(t, "/v1/events", body.String()); code != 202 || ans.Accepted != 1000 {
		t.Fatalf("%d %+v", code, ans)
	}
	start := time.Now()
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %s, grace is 2s", d)
	}
	// 1000 events plus the final agent_status.
	if n := len(r.out.Lines()); n != 1001 {
		t.Errorf("stdout has %d lines after shutdown, want 1001", n)
	}
	if _, err := testClient.Get(r.base + "/healthz"); err == nil {
		t.Error("API still answers after shutdown")
	}
}

func TestRefusesNonLoopbackWithoutToken(t *testing.T) {
	env := testEnv(t, map[string]string{"EDGERELAY_LISTEN": "0.0.0.0:7781"})
	_, err := Load(nil, mapEnv(env), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "EDGERELAY_LISTEN") || !strings.Contains(err.Error(), "EDGERELAY_INGEST_TOKEN") {
		t.Fatalf("err = %v", err)
	}
	env["EDGERELAY_INGEST_TOKEN"] = "t"
	if _, err := Load(nil, mapEnv(env), io.Discard); err != nil {
		t.Fatalf("with a token: %v", err)
	}
}

// TestStream: /v1/stream takes /v1/events bodies as WebSocket messages and
// answers each, in order, once its events are durable.
func TestStream(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(r.base, "http", "ws", 1)+"/v1/stream", &websocket.DialOptions{HTTPClient: testClient})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	msgs := []string{
		`[{"type":"s","data":{"n":1}},{"type":"s","data":{"n":2}}]`,
		`{"type":"","data":{}}`,
		`{"id":"st-1","type":"s","timestamp":"3","data":{}}`,
	}
	want := []struct{ status, accepted int }{{202, 2}, {400, 0}, {202, 1}}
	for _, m := range msgs {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	for i, w := range want {
		_, raw, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ans struct {
			Status int `json:"status"`
			ingest.Answer
		}
		json.Unmarshal(raw, &ans)
		if ans.Status != w.status || ans.Accepted != w.accepted || (w.status == 202 && (ans.Durable == nil || !*ans.Durable)) {
			t.Errorf("answer %d: %s", i, raw)
		}
	}
	if lines := r.waitLines(t, 3); lines[2] != msgs[2] {
		t.Errorf("stdout: %q", lines)
	}
	c.Close(websocket.StatusNormalClosure, "")
}
