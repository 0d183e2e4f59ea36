package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/livepeer/edgerelay/agent/ingest"
)

// metricsServer is a loopback metrics API that records every event id it
// accepted and can inject faults.
type metricsServer struct {
	mu       sync.Mutex
	ids      map[string]int
	requests int
	fault    func(n int) string // by request number: "", "500", "429", "413", "timeout", "drop"
	key      string
}

func (m *metricsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	m.requests++
	n := m.requests
	key := m.key
	m.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+key {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var body struct {
		App, Host string
		Events    []struct{ ID string }
	}
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	fault := ""
	if m.fault != nil {
		fault = m.fault(n)
	}
	if len(raw) > 16<<10 && len(body.Events) > 1 {
		fault = "413" // a body limit below the sink's, which the sink learns
	}
	switch fault {
	case "500":
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	case "429":
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	case "413":
		if len(body.Events) > 1 {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
	case "timeout": // accepted, but the answer comes after the client gave up: a duplicate follows
		m.mu.Lock()
		for _, e := range body.Events {
			m.ids[e.ID]++
		}
		m.mu.Unlock()
		time.Sleep(300 * time.Millisecond) // past the client's 200 ms timeout
		return
	case "drop":
		if hj, ok := w.(http.Hijacker); ok {
			c, _, _ := hj.Hijack()
			c.Close()
			return
		}
	}
	m.mu.Lock()
	for _, e := range body.Events {
		m.ids[e.ID]++
	}
	m.mu.Unlock()
	w.WriteHeader(http.StatusAccepted) // any 2xx is success
	fmt.Fprintf(w, `{"status":"accepted","accepted":%d}`, len(body.Events))
}

func fastBackOff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 5*time.Millisecond, 50*time.Millisecond, 0
	b.Reset()
	return b
}

// TestHTTPSoak pushes 100,000 events through the running agent's ingest API
// to a metrics server that injects 5xx, 429, timeouts, dropped connections
// and 413s. Every event must arrive at least once, and the accounting must
// close with nothing pending.
func TestHTTPSoak(t *testing.T) {
	ms := &metricsServer{ids: map[string]int{}, key: "soak-key"}
	ms.fault = func(n int) string {
		switch rand.IntN(20) {
		case 0:
			return "500"
		case 1:
			return "429"
		case 2:
			return "timeout"
		case 3:
			return "drop"
		}
		return ""
	}
	srv := httptest.NewServer(ms)
	defer srv.Close()
	env := testEnv(t, map[string]string{
		"EDGERELAY_HTTP_URL": srv.URL + "/v1/metrics", "EDGERELAY_HTTP_API_KEY": "soak-key",
		"EDGERELAY_HTTP_RATE": "0", "EDGERELAY_HTTP_LINGER": "20ms", "EDGERELAY_HTTP_TIMEOUT": "200ms",
		"EDGERELAY_STDOUT": "off",
	})
	cfg := loadConfig(t, env)
	a, err := New(cfg, Options{newBackOff: fastBackOff})
	if err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, a, &syncBuffer{})

	const clients, perClient, perRequest = 4, 25000, 500
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perClient; i += perRequest {
				var b strings.Builder
				for k := range perRequest {
					fmt.Fprintf(&b, "{\"id\":\"c%d-%d\",\"type\":\"soak\",\"timestamp\":\"1\",\"data\":{\"k\":%d}}\n", c, i+k, k)
				}
				resp, err := testClient.Post(r.base+"/v1/events", "application/x-ndjson", strings.NewReader(b.String()))
				if err != nil {
					errs <- err
					return
				}
				var ans ingest.Answer
				json.NewDecoder(resp.Body).Decode(&ans)
				resp.Body.Close()
				if resp.StatusCode != 202 || ans.Accepted != perRequest {
					errs <- fmt.Errorf("ingest: %d %+v", resp.StatusCode, ans)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	deadline := time.Now().Add(45 * time.Second)
	for {
		ms.mu.Lock()
		n := len(ms.ids)
		ms.mu.Unlock()
		if n == clients*perClient {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d events delivered", n, clients*perClient)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitUntil(t, "pending 0", func() bool { return a.Report().Sinks["http"].Pending == 0 })
	rep := a.Report()
	s := rep.Sinks["http"]
	ms.mu.Lock()
	total := 0
	for _, c := range ms.ids {
		total += c
	}
	requests := ms.requests
	ms.mu.Unlock()
	t.Logf("delivered %d unique, %d duplicates, %d requests; sink %+v", clients*perClient, total-clients*perClient, requests, s)
	if !s.Balanced || s.Pending != 0 || s.DroppedTotal != 0 || s.Received != clients*perClient || s.Delivered != clients*perClient {
		t.Errorf("accounting: %+v", s)
	}
}

// TestHTTPKeyRecovery: a 401 pauses the sink without losing anything; a
// rewritten key file, or SIGHUP's Reload, resumes it within 2 s and every
// event spooled meanwhile arrives. The key never appears in the logs.
func TestHTTPKeyRecovery(t *testing.T) {
	for _, how := range []string{"file change", "reload"} {
		t.Run(how, func(t *testing.T) {
			ms := &metricsServer{ids: map[string]int{}, key: "good-key-123"}
			srv := httptest.NewServer(ms)
			defer srv.Close()
			keyFile := filepath.Join(t.TempDir(), "key")
			os.WriteFile(keyFile, []byte("bad-key-456\n"), 0o600)
			var logs syncBuffer
			env := testEnv(t, map[string]string{
				"EDGERELAY_HTTP_URL": srv.URL, "EDGERELAY_HTTP_API_KEY_FILE": keyFile, "EDGERELAY_HTTP_LINGER": "10ms",
				"EDGERELAY_HTTP_RATE": "0", "EDGERELAY_STDOUT": "off",
			})
			a, err := New(loadConfig(t, env), Options{Logger: newTestLogger(&logs)})
			if err != nil {
				t.Fatal(err)
			}
			r := runAgent(t, a, &syncBuffer{})
			for i := range 10 {
				r.post(t, "/v1/events", fmt.Sprintf(`{"type":"k","data":{"i":%d}}`, i))
			}
			waitUntil(t, "the sink to pause", func() bool { return a.Report().Sinks["http"].Paused == "unauthorized" })
			for i := range 10 {
				r.post(t, "/v1/events", fmt.Sprintf(`{"type":"k","data":{"j":%d}}`, i))
			}
			if how == "reload" {
				// Written so the 1 s file watch may not see it first: same size.
				os.WriteFile(keyFile, []byte("good-key-123"), 0o600)
				a.Reload()
			} else {
				os.WriteFile(keyFile, []byte("good-key-123\n"), 0o600)
			}
			changed := time.Now()
			waitUntil(t, "a delivery", func() bool { ms.mu.Lock(); defer ms.mu.Unlock(); return len(ms.ids) > 0 })
			if d := time.Since(changed); d > 2*time.Second {
				t.Errorf("resumed %s after the change, want < 2s", d)
			}
			waitUntil(t, "all 20 delivered", func() bool { ms.mu.Lock(); defer ms.mu.Unlock(); return len(ms.ids) == 20 })
			waitUntil(t, "the sink to settle", func() bool { return a.Report().Sinks["http"].Pending == 0 })
			if s := a.Report().Sinks["http"]; s.Paused != "" || !s.Balanced || s.DroppedTotal != 0 {
				t.Errorf("after recovery: %+v", s)
			}
			for _, secret := range []string{"good-key-123", "bad-key-456"} {
				if strings.Contains(logs.String(), secret) {
					t.Errorf("key %q appears in the logs", secret)
				}
				resp, _ := testClient.Get(r.base + "/v1/stats")
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(body), secret) {
					t.Errorf("key %q appears in /v1/stats", secret)
				}
			}
		})
	}
}
