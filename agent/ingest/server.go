package ingest

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/livepeer/edgerelay/agent/pipeline"
	"github.com/livepeer/edgerelay/agent/session"
	"github.com/livepeer/edgerelay/agent/telemetry"
	"github.com/livepeer/edgerelay/envelope"
)

// Options are the local API's listeners and limits.
type Options struct {
	Listen          string // TCP host:port; "" when off
	Socket          string // unix socket path; "" when off
	Token           string // bearer token every endpoint but the probes requires; "" for none
	MaxBodyBytes    int64
	MaxEventBytes   int
	TelemetryLegacy bool // accept legacy stormlog records on /v1/telemetry
	// IngestSlots bounds the requests parsed and stamped at once; 0 means
	// the number of CPUs (at least 2). QueueWait is how long a request
	// waits for a slot before a 429; 0 means DefaultQueueWait.
	IngestSlots int
	QueueWait   time.Duration

	// MaxRequestEvents and MaxRequestBytes bound what one request hands to
	// the ring (events, and bytes once stamped); a larger request is
	// refused whole with 413, so a request on an idle agent is never partly
	// dropped for a full ring. The agent sets half the ring's caps. 0 means
	// no limit.
	MaxRequestEvents int
	MaxRequestBytes  int64
	// LingerBytes and LingerTime bound how much of a body the server reads
	// and throws away after answering early (linger.go), and for how long.
	// 0 means the defaults: 16 times MaxBodyBytes, 30 s.
	LingerBytes int64
	LingerTime  time.Duration
}

// Server is the local API (see the package doc for its routes). Set the
// fields, then Start once; Shutdown stops it. Handlers run concurrently.
type Server struct {
	Options
	// Submit hands prepared envelopes to the pipeline; the waiter settles
	// once they are in the spool.
	Submit func(source string, entries []pipeline.Entry) (*pipeline.Waiter, error)
	// Durable reports whether accepted events survive a crash now.
	Durable func() bool
	// Rejected counts items refused at ingest, by source.
	Rejected func(source string, n uint64)
	// Refused counts items an overloaded agent refused as a whole (429 or
	// 503 with Retry-After), by source and reason (admit.go). May be nil.
	Refused func(source, reason string, n uint64)
	// Room waits until the ring has room for more (the spool writer is not
	// far behind) or ctx ends, and reports whether it has; a request that
	// found none within QueueWait is refused (503) rather than pushing
	// events out of the ring. May be nil.
	Room      func(ctx context.Context) bool
	Stamper   *envelope.Stamper
	Sessions  *session.Registry
	Allocs    *telemetry.Allocators
	Envelopes *telemetry.Envelopes // stamps allocator_sample envelopes
	Tail      *TailHub
	// Running reports whether the agent accepts events, and its state name.
	Running func() (bool, string)
	// Stopping ends when intake stops; open WebSockets then close.
	Stopping context.Context
	Report   func() any   // GET /v1/stats
	Metrics  http.Handler // GET /metrics
	// Debug, when set, serves /debug/pprof/ (EDGERELAY_PPROF); behind the
	// token like every route but the probes.
	Debug  http.Handler
	Logger *slog.Logger

	admission *admission
	srv       *http.Server
	tcpAddr   net.Addr
	listeners []net.Listener
	wg        sync.WaitGroup
}

// Start listens on the unix socket and the TCP address (either may be off)
// and serves on both.
func (s *Server) Start() error {
	s.admission = newAdmission(s.IngestSlots, s.QueueWait)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events", s.intake(s.handleEvents))
	mux.HandleFunc("GET /v1/stream", s.intake(s.handleStream))
	mux.HandleFunc("GET /v1/tail", s.handleTail)
	mux.HandleFunc("POST /v1/telemetry", s.intake(s.handleTelemetry))
	mux.HandleFunc("POST /v1/allocator", s.intake(s.handleAllocator))
	mux.HandleFunc("POST /v1/sessions", s.intake(s.handleSessionAttach))
	mux.HandleFunc("DELETE /v1/sessions/{id}", s.handleSessionDetach)
	mux.HandleFunc("POST /v1/sessions/{id}/frames", s.intake(s.handleFrames))
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Report()) })
	mux.Handle("GET /metrics", s.Metrics)
	if s.Debug != nil {
		mux.Handle("/debug/pprof/", s.Debug)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if ok, state := s.Running(); !ok {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": state})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})

	s.srv = &http.Server{
		Handler:           s.linger(s.authenticate(mux)),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ConnContext:       withConn,
	}
	if s.Socket != "" {
		l, err := listenUnix(s.Socket)
		if err != nil {
			return fmt.Errorf("EDGERELAY_SOCKET: %w", err)
		}
		s.listeners = append(s.listeners, l)
	}
	if s.Listen != "" {
		l, err := net.Listen("tcp", s.Listen)
		if err != nil {
			for _, l := range s.listeners {
				l.Close()
			}
			return fmt.Errorf("EDGERELAY_LISTEN: %w", err)
		}
		s.tcpAddr = l.Addr()
		s.listeners = append(s.listeners, l)
	}
	for _, l := range s.listeners {
		s.wg.Go(func() {
			if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.Logger.Error("local API listener failed", "addr", l.Addr().String(), "err", err)
			}
		})
	}
	return nil
}

// Addr returns the TCP address (useful with port 0), or nil.
func (s *Server) Addr() net.Addr { return s.tcpAddr }

// Shutdown stops accepting connections, waits for the requests in flight
// until ctx ends, then closes what is left and removes the socket file.
func (s *Server) Shutdown(ctx context.Context) {
	if s.srv == nil {
		return
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	s.wg.Wait()
	if s.Socket != "" {
		os.Remove(s.Socket)
	}
}

// Close stops at once (a start that failed half way).
func (s *Server) Close() {
	if s.srv != nil {
		s.srv.Close()
	}
	for _, l := range s.listeners {
		l.Close()
	}
	s.wg.Wait()
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
// endpoint but the liveness and readiness probes. The scheme is matched
// without regard to case ("bearer", "BEARER"), as RFC 7235 says; the token
// exactly, in constant time.
func (s *Server) authenticate(next http.Handler) http.Handler {
	if s.Token == "" {
		return next
	}
	want := []byte(s.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		if subtle.ConstantTimeCompare(bearerToken(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edgerelay"`)
			writeError(w, http.StatusUnauthorized, map[string]string{"error": "missing or bad bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearerToken returns the credentials of an Authorization header of the
// Bearer scheme (RFC 7235: "Bearer" in any case, then one or more spaces),
// or nil.
func bearerToken(h string) []byte {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil
	}
	return []byte(strings.TrimLeft(token, " "))
}

// intake answers 503 unless the agent is running.
func (s *Server) intake(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ok, state := s.Running(); !ok {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, Answer{Rejected: []Rejection{}, Error: "agent " + state})
			return
		}
		h(w, r)
	}
}

// writeJSON writes v as the whole answer, with its Content-Length: an answer
// that is complete by itself, which a client can read before the server has
// finished with the request's body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"error":"answer could not be encoded"}`)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// writeError answers a request with an error, in JSON. It may be called
// before the body is read, or with the body half read: the server's
// lingering close (linger.go) then lets the client read the answer, whatever
// the handler did with the body. Use it for every refusal.
func writeError(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v) }

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
