package agent

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// startAPI listens on the unix socket and the TCP address (either may be
// off) and serves the local API on both.
func (a *Agent) startAPI() error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &collector{a: a})
	for _, c := range a.extraCollectors() {
		reg.MustRegister(c)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events", a.intake(a.handleEvents))
	mux.HandleFunc("GET /v1/stream", a.intake(a.handleStream))
	mux.HandleFunc("GET /v1/tail", a.handleTail)
	mux.HandleFunc("POST /v1/sessions", a.intake(a.handleSessionAttach))
	mux.HandleFunc("DELETE /v1/sessions/{id}", a.handleSessionDetach)
	mux.HandleFunc("POST /v1/sessions/{id}/frames", a.intake(a.handleFrames))
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, a.Report()) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: nil}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s := a.state.Load(); s != stateRunning {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": stateName(s)})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	a.registerRoutes(mux)

	a.srv = &http.Server{
		Handler:           a.authenticate(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ConnContext:       withConn,
		ErrorLog:          nil,
	}
	if a.cfg.Socket != "" {
		l, err := listenUnix(a.cfg.Socket)
		if err != nil {
			return fmt.Errorf("EDGERELAY_SOCKET: %w", err)
		}
		a.listeners = append(a.listeners, l)
	}
	if a.cfg.Listen != "" {
		l, err := net.Listen("tcp", a.cfg.Listen)
		if err != nil {
			for _, l := range a.listeners {
				l.Close()
			}
			return fmt.Errorf("EDGERELAY_LISTEN: %w", err)
		}
		a.tcpAddr = l.Addr()
		a.listeners = append(a.listeners, l)
	}
	for _, l := range a.listeners {
		a.serveWG.Add(1)
		go func() {
			defer a.serveWG.Done()
			if err := a.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("local API listener failed", "addr", l.Addr().String(), "err", err)
			}
		}()
	}
	return nil
}

// listenUnix listens on a unix socket with mode 0660, replacing a stale
// socket file left by a crash but never one that another agent serves.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is served by another process (is another edgerelay running?)", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// authenticate requires the bearer token, when one is configured, on every
// endpoint but the liveness and readiness probes.
func (a *Agent) authenticate(next http.Handler) http.Handler {
	if a.cfg.IngestToken == "" {
		return next
	}
	want := []byte("Bearer " + a.cfg.IngestToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edgerelay"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or bad bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// intake answers 503 unless the agent is running.
func (a *Agent) intake(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s := a.state.Load(); s != stateRunning {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, IngestAnswer{Rejected: []Rejection{}, Error: "agent " + stateName(s)})
			return
		}
		h(w, r)
	}
}

func (a *Agent) handleEvents(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, a.cfg.MaxBodyBytes)
	if err != nil {
		writeBodyError(w, err)
		return
	}
	status, ans := a.ingestBody(r.Context(), "api", body, a.prepareEvent)
	writeJSON(w, status, ans)
}

// ingestBody splits a body into items and ingests them.
func (a *Agent) ingestBody(ctx context.Context, source string, body []byte, prepare prepareFunc) (int, IngestAnswer) {
	items, err := splitItems(body)
	if err != nil {
		return http.StatusBadRequest, IngestAnswer{Rejected: []Rejection{}, Error: err.Error()}
	}
	return a.ingest(ctx, source, items, prepare)
}

// handleStream is the WebSocket form of /v1/events: each text message is a
// body as /v1/events takes it, and each is answered, in order, with the same
// JSON answer once its events are durable.
func (a *Agent) handleStream(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(a.cfg.MaxBodyBytes)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(a.intakeCtx, cancel)()
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusMessageTooBig {
				return
			}
			if ctx.Err() != nil {
				c.Close(websocket.StatusGoingAway, "agent stopping")
			}
			return
		}
		status, ans := a.ingestBody(ctx, "stream", msg, a.prepareEvent)
		out, _ := json.Marshal(struct {
			Status int `json:"status"`
			IngestAnswer
		}{status, ans})
		if err := c.Write(ctx, websocket.MessageText, out); err != nil {
			return
		}
	}
}

func writeBodyError(w http.ResponseWriter, err error) {
	if errors.Is(err, errTooLarge) {
		writeJSON(w, http.StatusRequestEntityTooLarge, IngestAnswer{Rejected: []Rejection{}, Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusBadRequest, IngestAnswer{Rejected: []Rejection{}, Error: "body: " + err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

type connKey struct{}

// withConn keeps the connection in the request context, so a handler can
// ask the kernel who the peer of a unix socket is (SO_PEERCRED).
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// peerPID returns the pid of the process at the other end of a unix-socket
// request, or 0.
func peerPID(r *http.Request) int {
	uc, ok := r.Context().Value(connKey{}).(*net.UnixConn)
	if !ok {
		return 0
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	raw.Control(func(fd uintptr) { pid = peerCredPID(int(fd)) })
	return pid
}
