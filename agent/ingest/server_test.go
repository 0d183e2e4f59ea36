package ingest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/agent/pipeline"
	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/spool"
)

// testAPI is a local API over a real pipeline and a memory spool, listening
// on loopback TCP and on a unix socket.
type testAPI struct {
	s       *Server
	pipe    *pipeline.Pipeline
	running atomic.Bool
	stop    context.CancelFunc // ends intake (Stopping)
}

// startAPI starts a local API with o's limits (MaxBodyBytes defaults to
// the agent's 4 MiB) until the test ends.
func startAPI(t *testing.T, o Options) *testAPI {
	t.Helper()
	// A short directory: a unix socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "ingest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	o.Listen, o.Socket = "127.0.0.1:0", filepath.Join(dir, "s.sock")
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 4 << 20
	}
	if o.MaxEventBytes == 0 {
		o.MaxEventBytes = 1 << 20
	}
	p := pipeline.New(pipeline.Options{RingMaxEvents: 1000, RingMaxBytes: 64 << 20, GroupEvents: 100, Store: spool.NewMemory(64 << 20)})
	p.Start()
	stopping, stop := context.WithCancel(context.Background())
	a := &testAPI{pipe: p, stop: stop}
	a.running.Store(true)
	a.s = &Server{
		Options:  o,
		Submit:   p.Submit,
		Durable:  func() bool { return false },
		Rejected: func(string, uint64) {},
		Stamper:  envelope.NewStamper(envelope.StamperOptions{Node: envelope.Identity{"host": "h"}, MaxBytes: o.MaxEventBytes}),
		Running: func() (bool, string) {
			if a.running.Load() {
				return true, "running"
			}
			return false, "stopping"
		},
		Stopping: stopping,
		Report:   func() any { return map[string]int{} },
		Metrics:  http.NotFoundHandler(),
		Logger:   slog.New(slog.DiscardHandler),
	}
	if err := a.s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.s.Shutdown(ctx)
		p.Close()
		p.Wait()
	})
	return a
}

// dial opens a connection to the API on network "tcp" or "unix".
func (a *testAPI) dial(t *testing.T, network string) net.Conn {
	t.Helper()
	addr := a.s.Socket
	if network == "tcp" {
		addr = a.s.Addr().String()
	}
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// post sends an ordinary request and returns its status and answer.
func (a *testAPI) post(t *testing.T, network, path, body string) (int, Answer) {
	t.Helper()
	c := a.dial(t, network)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: agent\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
	resp, ans := readAnswer(t, c)
	return resp.StatusCode, ans
}

func readAnswer(t *testing.T, c net.Conn) (*http.Response, Answer) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the answer's body: %v", err)
	}
	var ans Answer
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &ans); err != nil {
			t.Fatalf("answer %d is not JSON: %v: %q", resp.StatusCode, err, raw)
		}
	} else {
		ans.Error = string(raw) // the mux's own 404 and 405
	}
	return resp, ans
}

// pattern is an endless body of 'x', read without allocating.
type pattern struct{}

func (pattern) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func TestBearerScheme(t *testing.T) {
	for h, want := range map[string]string{
		"Bearer abc":   "abc",
		"bearer abc":   "abc",
		"BEARER abc":   "abc",
		"bEaReR   abc": "abc",
		"Bearer":       "",
		"Basic abc":    "",
		"Bearerabc":    "",
		"":             "",
		"Bearer a b":   "a b",
	} {
		if got := string(bearerToken(h)); got != want {
			t.Errorf("bearerToken(%q) = %q, want %q", h, got, want)
		}
	}
}

func TestTokenSchemeAnyCase(t *testing.T) {
	a := startAPI(t, Options{Token: "s3cret"})
	for _, auth := range []string{"Bearer s3cret", "bearer s3cret", "BEARER s3cret", "Bearer  s3cret"} {
		c := a.dial(t, "tcp")
		body := `{"type":"a","data":{}}`
		fmt.Fprintf(c, "POST /v1/events HTTP/1.1\r\nHost: agent\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n%s", auth, len(body), body)
		if resp, ans := readAnswer(t, c); resp.StatusCode != http.StatusAccepted {
			t.Errorf("%q: %d %+v", auth, resp.StatusCode, ans)
		}
	}
	for _, auth := range []string{"Bearer S3CRET", "Basic s3cret", "Bearers3cret", "s3cret"} {
		c := a.dial(t, "tcp")
		fmt.Fprintf(c, "POST /v1/events HTTP/1.1\r\nHost: agent\r\nAuthorization: %s\r\nContent-Length: 2\r\n\r\n{}", auth)
		if resp, _ := readAnswer(t, c); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%q: %d, want 401", auth, resp.StatusCode)
		}
	}
}

// TestEarlyAnswerIsRead: a client that writes its whole request before it
// reads (as Python's urllib and httpx do) reads the answer to a body refused
// before it was read (over the limit, no token, agent stopping, no such
// endpoint), on loopback TCP and on the unix socket, however large the body
// (up to the linger bound), with or without a Content-Length.
func TestEarlyAnswerIsRead(t *testing.T) {
	const limit = 4 << 20
	open := startAPI(t, Options{LingerTime: time.Minute}) // the byte bound, not the clock, in this test
	token := startAPI(t, Options{Token: "s3cret", LingerTime: time.Minute})
	stopping := startAPI(t, Options{LingerTime: time.Minute})
	stopping.running.Store(false)
	cases := []struct {
		name    string
		api     *testAPI
		path    string
		size    int64
		chunked bool
		status  int
		limit   *Limit
	}{
		{"just over the limit", open, "/v1/events", limit + 1, false, 413, &Limit{Name: limitBody, Unit: "bytes", Max: limit, Got: limit + 1}},
		{"ten times the limit", open, "/v1/events", 10 * limit, false, 413, &Limit{Name: limitBody, Unit: "bytes", Max: limit, Got: 10 * limit}},
		{"64 MiB", open, "/v1/events", 64 << 20, false, 413, &Limit{Name: limitBody, Unit: "bytes", Max: limit, Got: 64 << 20}},
		{"64 MiB chunked", open, "/v1/events", 64 << 20, true, 413, &Limit{Name: limitBody, Unit: "bytes", Max: limit, Got: limit + 1}},
		{"just over chunked", open, "/v1/events", limit + 1, true, 413, &Limit{Name: limitBody, Unit: "bytes", Max: limit, Got: limit + 1}},
		{"telemetry", open, "/v1/telemetry", 10 * limit, true, 413, &Limit{Name: limitBody, Unit: "bytes", Max: limit, Got: limit + 1}},
		{"allocator", open, "/v1/allocator", 10 << 20, false, 413, &Limit{Name: limitAllocator, Unit: "bytes", Max: 1 << 20, Got: 10 << 20}},
		{"session attach", open, "/v1/sessions", 10 << 20, true, 413, &Limit{Name: limitAttach, Unit: "bytes", Max: 64 << 10, Got: 64<<10 + 1}},
		{"no token", token, "/v1/events", 10 * limit, false, 401, nil},
		{"agent stopping", stopping, "/v1/events", 10 * limit, false, 503, nil},
		{"no such endpoint", open, "/v1/event", 10 * limit, false, 404, nil},
		{"no such method", open, "/v1/stats", 10 * limit, false, 405, nil},
	}
	for _, network := range []string{"tcp", "unix"} {
		for _, tc := range cases {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				c := tc.api.dial(t, network)
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n", tc.path)
				w := bufio.NewWriterSize(c, 64<<10)
				var err error
				if tc.chunked {
					fmt.Fprintf(w, "%sTransfer-Encoding: chunked\r\n\r\n", head)
					cw := httputil.NewChunkedWriter(w)
					if _, err = io.CopyN(cw, pattern{}, tc.size); err == nil {
						if err = cw.Close(); err == nil {
							_, err = io.WriteString(w, "\r\n") // the end of the trailer
						}
					}
				} else {
					fmt.Fprintf(w, "%sContent-Length: %d\r\n\r\n", head, tc.size)
					_, err = io.CopyN(w, pattern{}, tc.size)
				}
				if err == nil {
					err = w.Flush()
				}
				if err != nil {
					t.Fatalf("writing the request (%d bytes) failed: %v", tc.size, err)
				}
				resp, ans := readAnswer(t, c)
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d: %+v", resp.StatusCode, tc.status, ans)
				}
				if tc.limit != nil {
					if ans.Limit == nil || *ans.Limit != *tc.limit {
						t.Errorf("limit %+v, want %+v", ans.Limit, tc.limit)
					}
					if !strings.Contains(ans.Error, fmt.Sprint(tc.limit.Max)) || !strings.Contains(ans.Error, tc.limit.Name) || !strings.Contains(ans.Error, "split") {
						t.Errorf("error %q should name the limit, its value and say to split", ans.Error)
					}
				}
				if !resp.Close {
					// The body happened to be read whole (a chunked body
					// whose end came with its last bytes): the connection
					// stays in step and serves the next request.
					fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
					if resp, _ := readAnswer(t, c); resp.StatusCode != http.StatusOK {
						t.Errorf("next request on the connection: %d", resp.StatusCode)
					}
					return
				}
				// The server read the whole body, so its close is clean:
				// end of stream, not a reset.
				if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Errorf("after the answer: %d, %v; want a clean end of stream", n, err)
				}
			})
		}
	}
}

// slowPost starts a request with a huge Content-Length on c and then sends
// its body one byte every few milliseconds, from a goroutine, until the
// server closes the connection; the returned channel is closed then.
func slowPost(c net.Conn) <-chan struct{} {
	fmt.Fprintf(c, "POST /v1/events HTTP/1.1\r\nHost: agent\r\nContent-Length: %d\r\n\r\n", int64(1)<<30)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := c.Write([]byte{'x'}); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond) // a slow client, not a wait for the test
		}
	}()
	return done
}

// waitClosed waits until the server has closed c: reads end (EOF or reset)
// and the writer has stopped.
func waitClosed(t *testing.T, c net.Conn, br *bufio.Reader, writer <-chan struct{}) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.Copy(io.Discard, br); err != nil && !isReset(err) {
		t.Fatalf("the server did not close the connection: %v", err)
	}
	select {
	case <-writer:
	case <-time.After(time.Minute):
		t.Fatal("the client could still write a minute after the server closed")
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe")
}

// TestLingerBounds: after an early answer, a slow body is cut off at the
// time bound, and other clients are served while it lingers; an endless
// fast body is cut off at the byte bound, without buffering it; the agent
// stopping ends a linger at once.
func TestLingerBounds(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network+"/slow body, time bound", func(t *testing.T) {
			a := startAPI(t, Options{LingerTime: 200 * time.Millisecond})
			c := a.dial(t, network)
			writer := slowPost(c)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("answer: %v %v", resp, err)
			}
			io.Copy(io.Discard, resp.Body)
			waitClosed(t, c, br, writer)
		})
		t.Run(network+"/stalled body, idle bound", func(t *testing.T) {
			a := startAPI(t, Options{LingerTime: time.Hour})
			c := a.dial(t, network)
			fmt.Fprintf(c, "POST /v1/events HTTP/1.1\r\nHost: agent\r\nContent-Length: %d\r\n\r\nxxx", int64(1)<<30)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("answer: %v %v", resp, err)
			}
			io.Copy(io.Discard, resp.Body)
			idle := make(chan struct{})
			close(idle) // no writer: the client sends nothing more
			waitClosed(t, c, br, idle)
		})
		t.Run(network+"/others served while one lingers; stopping ends it", func(t *testing.T) {
			a := startAPI(t, Options{LingerTime: time.Hour})
			c := a.dial(t, network)
			writer := slowPost(c)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("answer: %v %v", resp, err)
			}
			io.Copy(io.Discard, resp.Body)
			for _, n := range []string{"tcp", "unix"} {
				if code, ans := a.post(t, n, "/v1/events", `{"type":"a","data":{}}`); code != http.StatusAccepted {
					t.Fatalf("another client on %s: %d %+v", n, code, ans)
				}
			}
			select {
			case <-writer:
				t.Fatal("the lingering connection closed before its bound")
			default:
			}
			a.stop() // intake stops: lingering ends now, not in an hour
			waitClosed(t, c, br, writer)
		})
		t.Run(network+"/endless body, byte bound, memory flat", func(t *testing.T) {
			const bound = 32 << 20
			a := startAPI(t, Options{LingerBytes: bound, LingerTime: time.Hour})
			c := a.dial(t, network)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			fmt.Fprintf(c, "POST /v1/events HTTP/1.1\r\nHost: agent\r\nContent-Length: %d\r\n\r\n", int64(1)<<40)
			var written atomic.Int64
			writer := make(chan struct{})
			go func() {
				defer close(writer)
				buf := make([]byte, 64<<10)
				pattern{}.Read(buf)
				for {
					n, err := c.Write(buf)
					written.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("answer: %v %v", resp, err)
			}
			io.Copy(io.Discard, resp.Body)
			waitClosed(t, c, br, writer)
			runtime.ReadMemStats(&after)
			t.Logf("written %d bytes, bound %d, allocated %d bytes meanwhile", written.Load(), bound, after.TotalAlloc-before.TotalAlloc)
			if w := written.Load(); w < bound || w > bound+64<<20 {
				t.Errorf("the client wrote %d bytes before the server closed; the bound is %d", w, bound)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > bound/4 {
				t.Errorf("%d bytes allocated while %d were thrown away: the body was buffered", alloc, written.Load())
			}
		})
	}
}
