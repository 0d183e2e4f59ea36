package trickletest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Protocol headers (spec/trickle.md, "Headers").
const (
	HeaderSeq    = "Lp-Trickle-Seq"
	HeaderLatest = "Lp-Trickle-Latest"
	HeaderClosed = "Lp-Trickle-Closed"
	HeaderReset  = "Lp-Trickle-Reset"
)

// StatusNotHeld is trickle's "segment not held" status: too old, or too far
// ahead. Lp-Trickle-Latest says where to jump.
const StatusNotHeld = 470

// BasePath is the path under which channels live, as on an orchestrator.
const BasePath = "/ai/trickle/"

// Defaults of Options.
const (
	DefaultIdleSweep    = 5 * time.Minute
	DefaultKeepSegments = 5
	DefaultMaxLog       = 100_000
)

// Options configures a Server. The zero value behaves like an orchestrator
// of go-livepeer v0.9: channels exist only once CreateChannel made them,
// /next is served, the last 5 segments are kept, and a channel with no new
// segment for 5 minutes is swept.
type Options struct {
	// AutoCreate creates a channel on its first write (or on POST <chan>),
	// as servers in autocreate mode do. Off: unknown channels answer 404.
	AutoCreate bool
	// Legacy mimics servers older than v0.8.11: GET <chan>/next answers
	// 400, POST responses carry no Lp-Trickle-Seq, Lp-Trickle-Reset is
	// ignored.
	Legacy bool
	// IdleSweep removes a channel that got no new segment for this long; 0
	// means DefaultIdleSweep. The sweep runs every IdleSweep/5.
	IdleSweep time.Duration
	// KeepSegments is how many segments a channel holds; 0 means
	// DefaultKeepSegments.
	KeepSegments int
	// InMemory serves on an in-memory listener of net.Pipe connections
	// instead of loopback TCP; clients must dial with Server.DialContext.
	// Such a server works inside a testing/synctest bubble.
	InMemory bool
	// TLS serves HTTPS with a self-signed certificate.
	TLS bool
	// NoRecord keeps neither Received nor Requests (benchmarks).
	NoRecord bool
	// MaxLog caps the Requests log; 0 means DefaultMaxLog. Later requests
	// are counted in LogOverflow only.
	MaxLog int
}

// Request is one finished request, as logged by the server.
type Request struct {
	Method  string
	Path    string // URL path
	Channel string
	Seq     string // the path's seq element ("" for channel routes, "next")
	Status  int    // 0 when no answer was sent (a cut, or the client went away)
	Bytes   int    // body bytes received (POST) or sent (GET)
	Reset   bool   // the POST carried Lp-Trickle-Reset and the server honoured it
	Type    string // the POST's Content-Type
	Dropped bool   // POST of a seq already written: answered 200, data dropped
	Cut     bool   // the server cut the connection (CutPost, Restart, Stop)
	Closed  bool   // answered with Lp-Trickle-Closed
	// Restarts is how many Restarts came before the request reached the
	// channels: a request a restart cut short counts the server it was
	// read by, even when it is logged after the restart.
	Restarts int
}

// Server is a fake trickle server that behaves as spec/trickle.md says the
// go-livepeer server does. It is safe for concurrent use. All channel state
// is in memory: Restart loses it, as a real server restart does.
type Server struct {
	opts Options
	mux  *http.ServeMux
	hs   *http.Server
	ln   net.Listener
	pipe *pipeListener // nil unless InMemory
	url  string

	serveDone chan struct{} // closed when Serve returns
	sweepStop chan struct{}
	sweepDone chan struct{}
	stopOnce  sync.Once
	handlers  sync.WaitGroup // running handlers; Add only under mu while !stopped

	mu       sync.Mutex // guards everything below and every channel and segment
	stopped  bool
	channels map[string]*channel
	conns    map[net.Conn]struct{} // open connections, for Restart
	// dead are the connections Restart closed, until they are gone: a
	// request read on one before the restart must not reach the new
	// server's channels (a restarted process never sees it).
	dead        map[net.Conn]struct{}
	restarts    int
	received    map[string]map[int][]byte
	log         []Request
	logOverflow int
	cuts        map[string]int // channel -> cut the next POST after this many bytes
	readersWake chan struct{}  // closed and replaced when a reader count changes
	latency     map[string]time.Duration
	throttle    int    // the next POSTs to answer 429 (ThrottlePosts)
	throttleRA  string // their Retry-After
}

type channel struct {
	name      string
	segs      []*segment // slot seq % len(segs)
	next      int        // the next write position
	writeTime time.Time  // creation or last segment write, for the idle sweep
	closed    bool       // closed (DELETE, CloseChannel, sweep); removed from the map
	gone      bool       // lost in Restart/Stop: handlers drop their connection without answering
	readers   map[net.Conn]int
	posts     map[*http.ResponseController]struct{} // POSTs reading a body
}

type segment struct {
	seq     int
	data    []byte // append-only: bytes below len are never modified
	written bool   // a POST wrote (or is writing) this seq
	done    bool   // no more bytes will come
	wake    chan struct{}
}

func newSegment(seq int) *segment { return &segment{seq: seq, wake: make(chan struct{})} }

// notifyLocked wakes every reader waiting on the segment.
func (g *segment) notifyLocked() {
	close(g.wake)
	g.wake = make(chan struct{})
}

func (g *segment) endLocked() {
	if !g.done {
		g.done = true
		g.notifyLocked()
	}
}

type connKey struct{}

// NewServer starts a server; Stop it when done (t.Cleanup(srv.Stop)).
func NewServer(opts Options) (*Server, error) {
	if opts.IdleSweep <= 0 {
		opts.IdleSweep = DefaultIdleSweep
	}
	if opts.KeepSegments <= 0 {
		opts.KeepSegments = DefaultKeepSegments
	}
	if opts.MaxLog <= 0 {
		opts.MaxLog = DefaultMaxLog
	}
	s := &Server{
		opts:        opts,
		mux:         http.NewServeMux(),
		serveDone:   make(chan struct{}),
		sweepStop:   make(chan struct{}),
		sweepDone:   make(chan struct{}),
		channels:    make(map[string]*channel),
		conns:       make(map[net.Conn]struct{}),
		dead:        make(map[net.Conn]struct{}),
		received:    make(map[string]map[int][]byte),
		cuts:        make(map[string]int),
		readersWake: make(chan struct{}),
		latency:     make(map[string]time.Duration),
	}
	s.mux.HandleFunc("POST "+BasePath+"{chan}", s.handleCreate)
	s.mux.HandleFunc("GET "+BasePath+"{chan}/next", s.handleNext)
	s.mux.HandleFunc("GET "+BasePath+"{chan}/{seq}", s.handleGet)
	s.mux.HandleFunc("POST "+BasePath+"{chan}/{seq}", s.handlePost)
	s.mux.HandleFunc("DELETE "+BasePath+"{chan}/{seq}", s.handleDeleteSeq)
	s.mux.HandleFunc("DELETE "+BasePath+"{chan}", s.handleDelete)

	var ln net.Listener
	host := pipeHost
	if opts.InMemory {
		s.pipe = newPipeListener()
		ln = s.pipe
	} else {
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ln = tcp
		host = tcp.Addr().String()
	}
	scheme := "http"
	if opts.TLS {
		cert, err := selfSigned()
		if err != nil {
			ln.Close()
			return nil, err
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
		scheme = "https"
	}
	s.ln = ln
	s.url = scheme + "://" + host + BasePath
	s.hs = &http.Server{
		Handler:  s,
		ErrorLog: log.New(io.Discard, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ConnState: s.connState,
	}
	go func() {
		defer close(s.serveDone)
		s.hs.Serve(ln)
	}()
	go s.sweepLoop()
	return s, nil
}

// URL is the base URL of channels: URL()+name is a channel URL.
func (s *Server) URL() string { return s.url }

// ChannelURL is the URL of channel name.
func (s *Server) ChannelURL(name string) string { return s.url + name }

// DialContext connects to the server whatever addr says: through the
// in-memory listener (InMemory) or to the loopback port. Use it as an
// http.Transport's DialContext.
func (s *Server) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	if s.pipe != nil {
		return s.pipe.dial(ctx)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", s.ln.Addr().String())
}

// ServeHTTP counts the handler so Stop can wait for it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.handlers.Add(1)
	delay := s.latency[r.Method]
	s.mu.Unlock()
	defer s.handlers.Done()
	if delay > 0 {
		// A slow server: the answer comes delay later. A POST's body is
		// read first, as a slow server still takes it.
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// SetLatency makes every request of method wait d before it is handled (a
// slow server); 0 ends that.
func (s *Server) SetLatency(method string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency[method] = d
}

// lockLive takes mu for a request's handler, or drops the request without
// an answer when its connection was lost in a Restart: the request was read
// by the server that went away, and the restarted one never sees it.
func (s *Server) lockLive(r *http.Request) {
	s.mu.Lock()
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	if _, dead := s.dead[c]; dead {
		s.mu.Unlock()
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) connState(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateNew:
		s.conns[c] = struct{}{}
	case http.StateHijacked, http.StateClosed:
		delete(s.conns, c)
		delete(s.dead, c)
	}
}

// CreateChannel creates channel name, as an orchestrator does for a
// session. Creating an existing channel is a no-op.
func (s *Server) CreateChannel(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.channels[name] == nil {
		s.newChannelLocked(name)
	}
}

func (s *Server) newChannelLocked(name string) *channel {
	ch := &channel{
		name:      name,
		segs:      make([]*segment, s.opts.KeepSegments),
		writeTime: time.Now(),
		readers:   make(map[net.Conn]int),
		posts:     make(map[*http.ResponseController]struct{}),
	}
	s.channels[name] = ch
	return ch
}

// CloseChannel closes and removes channel name: waiting readers and POSTs
// are answered with Lp-Trickle-Closed, later requests get 404. It reports
// whether the channel existed.
func (s *Server) CloseChannel(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[name]
	if ch == nil {
		return false
	}
	s.closeChannelLocked(ch)
	return true
}

func (s *Server) closeChannelLocked(ch *channel) {
	ch.closed = true
	for _, g := range ch.segs {
		if g != nil {
			g.endLocked()
		}
	}
	// A POST blocked reading its body must answer now: expire its read.
	for rc := range ch.posts {
		rc.SetReadDeadline(time.Now())
	}
	delete(s.channels, ch.name)
}

// Restart drops every channel, as a restarted server has none, and cuts
// every open connection. The address stays the same; Received and Requests
// are kept for assertions.
func (s *Server) Restart() {
	s.mu.Lock()
	s.dropAllLocked()
	conns := make([]net.Conn, 0, len(s.conns))
	s.restarts++
	for c := range s.conns {
		conns = append(conns, c)
		s.dead[c] = struct{}{}
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (s *Server) dropAllLocked() {
	for _, ch := range s.channels {
		ch.gone = true
		s.closeChannelLocked(ch)
	}
	clear(s.cuts)
	s.wakeReadersLocked()
}

// Stop closes the listener and every connection and waits for the handlers
// and the sweeper. It is idempotent.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopped = true
		s.dropAllLocked()
		s.mu.Unlock()
		s.hs.Close()
		<-s.serveDone
		s.handlers.Wait()
		close(s.sweepStop)
		<-s.sweepDone
	})
}

// ThrottlePosts answers the next n segment POSTs 429 Too Many Requests,
// with Retry-After retryAfter when it is not "", and drops their bodies. The
// trickle server itself never throttles; a proxy or rate limiter in front of
// it does, and a publisher must wait what it asks.
func (s *Server) ThrottlePosts(n int, retryAfter string) {
	s.mu.Lock()
	s.throttle, s.throttleRA = n, retryAfter
	s.mu.Unlock()
}

// CutPost arms a fault: the next POST to channel name that carries at
// least afterBytes body bytes has its connection closed once the server
// has read them (the bytes read stay in the segment, which stays open, as
// when a real publisher dies mid-segment).
func (s *Server) CutPost(name string, afterBytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cuts[name] = max(afterBytes, 1)
}

// CutReaders closes the connections of every GET streaming or waiting on
// channel name, and reports how many it closed.
func (s *Server) CutReaders(name string) int {
	s.mu.Lock()
	var conns []net.Conn
	if ch := s.channels[name]; ch != nil {
		for c := range ch.readers {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}

// Received returns the bodies of the segments of channel name whose POST
// ended normally, by seq. Dropped re-POSTs are not in it.
func (s *Server) Received(name string) map[int][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int][]byte, len(s.received[name]))
	for seq, b := range s.received[name] {
		out[seq] = slices.Clone(b)
	}
	return out
}

// Requests returns the log of finished requests, in the order they ended.
// A request is logged before its client can see the end of the answer.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

// LogOverflow is the number of requests not logged over MaxLog.
func (s *Server) LogOverflow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logOverflow
}

// Next returns the next write position of channel name and whether the
// channel exists.
func (s *Server) Next(name string) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[name]
	if ch == nil {
		return 0, false
	}
	return ch.next, true
}

// WaitReaders blocks until at least n GETs are streaming or waiting on
// channel name, or ctx ends.
func (s *Server) WaitReaders(ctx context.Context, name string, n int) error {
	for {
		s.mu.Lock()
		have := 0
		if ch := s.channels[name]; ch != nil {
			for _, k := range ch.readers {
				have += k
			}
		}
		wake := s.readersWake
		s.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Server) wakeReadersLocked() {
	close(s.readersWake)
	s.readersWake = make(chan struct{})
}

func (s *Server) record(r *Request) {
	if s.opts.NoRecord {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.log) >= s.opts.MaxLog {
		s.logOverflow++
		return
	}
	s.log = append(s.log, *r)
}

func (s *Server) sweepLoop() {
	defer close(s.sweepDone)
	t := time.NewTicker(s.opts.IdleSweep / 5)
	defer t.Stop()
	for {
		select {
		case <-s.sweepStop:
			return
		case now := <-t.C:
			s.mu.Lock()
			for _, ch := range s.channels {
				if now.Sub(ch.writeTime) > s.opts.IdleSweep {
					s.closeChannelLocked(ch)
				}
			}
			s.mu.Unlock()
		}
	}
}

func newRequest(r *http.Request) Request {
	return Request{Method: r.Method, Path: r.URL.Path, Channel: r.PathValue("chan"), Seq: r.PathValue("seq"), Type: r.Header.Get("Content-Type")}
}

func reply(w http.ResponseWriter, rec *Request, code int, msg string) {
	rec.Status = code
	if code == http.StatusOK && msg == "" {
		w.WriteHeader(code)
		return
	}
	http.Error(w, msg, code)
}

// handleCreate is POST <chan>: only autocreate servers create on a client's
// request; orchestrators answer 404.
func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	rec := newRequest(r)
	defer s.record(&rec)
	if !s.opts.AutoCreate {
		reply(w, &rec, http.StatusNotFound, "Stream not found")
		return
	}
	s.lockLive(r)
	s.mu.Unlock()
	s.CreateChannel(rec.Channel)
	reply(w, &rec, http.StatusOK, "")
}

func (s *Server) handleNext(w http.ResponseWriter, r *http.Request) {
	rec := newRequest(r)
	rec.Seq = "next"
	defer s.record(&rec)
	if s.opts.Legacy {
		reply(w, &rec, http.StatusBadRequest, "Invalid idx")
		return
	}
	s.lockLive(r)
	ch := s.channels[rec.Channel]
	next := 0
	if ch != nil {
		next = ch.next
	}
	s.mu.Unlock()
	if ch == nil {
		reply(w, &rec, http.StatusNotFound, "Stream not found")
		return
	}
	w.Header().Set(HeaderLatest, strconv.Itoa(next))
	rec.Status = http.StatusOK
	fmt.Fprint(w, next)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	rec := newRequest(r)
	defer s.record(&rec)
	s.lockLive(r)
	s.mu.Unlock()
	if !s.CloseChannel(rec.Channel) {
		reply(w, &rec, http.StatusBadRequest, "Invalid stream")
		return
	}
	reply(w, &rec, http.StatusOK, "")
}

func (s *Server) handleDeleteSeq(w http.ResponseWriter, r *http.Request) {
	rec := newRequest(r)
	defer s.record(&rec)
	s.lockLive(r)
	rec.Restarts = s.restarts
	ch := s.channels[rec.Channel]
	if ch == nil {
		s.mu.Unlock()
		reply(w, &rec, http.StatusNotFound, "Stream not found")
		return
	}
	seq, err := strconv.Atoi(rec.Seq)
	if err != nil || seq < 0 {
		s.mu.Unlock()
		reply(w, &rec, http.StatusBadRequest, "Invalid idx")
		return
	}
	g := ch.segs[seq%len(ch.segs)]
	if g == nil || g.seq != seq {
		s.mu.Unlock()
		reply(w, &rec, http.StatusBadRequest, "Nonexistent segment")
		return
	}
	g.endLocked()
	s.mu.Unlock()
	reply(w, &rec, http.StatusOK, "")
}

func (s *Server) handlePost(w http.ResponseWriter, r *http.Request) {
	rec := newRequest(r)
	recorded := false
	defer func() {
		if !recorded {
			s.record(&rec)
		}
	}()
	defer r.Body.Close()
	rc := http.NewResponseController(w)

	s.lockLive(r)
	rec.Restarts = s.restarts
	if s.throttle > 0 {
		s.throttle--
		ra := s.throttleRA
		s.mu.Unlock()
		if ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		reply(w, &rec, http.StatusTooManyRequests, "Too Many Requests")
		return
	}
	ch := s.channels[rec.Channel]
	if ch == nil && s.opts.AutoCreate {
		ch = s.newChannelLocked(rec.Channel)
	}
	if ch == nil {
		s.mu.Unlock()
		// As the real server, which drops the connection to wake
		// preconnected publishers: the next request must dial.
		w.Header().Set("Connection", "close")
		reply(w, &rec, http.StatusNotFound, "Stream not found")
		return
	}
	seq, err := strconv.Atoi(rec.Seq)
	if err != nil || seq < -1 {
		s.mu.Unlock()
		reply(w, &rec, http.StatusBadRequest, "Invalid idx")
		return
	}
	if seq == -1 {
		seq = ch.next
	}
	if !s.opts.Legacy && r.Header.Get(HeaderReset) != "" {
		// "The publisher restarted": end older open segments so their
		// readers move on.
		rec.Reset = true
		for _, g := range ch.segs {
			if g != nil && g.seq < seq {
				g.endLocked()
			}
		}
	}
	slot := seq % len(ch.segs)
	g := ch.segs[slot]
	drop := false
	switch {
	case g != nil && g.seq == seq:
		// A reader's precreated segment is written into; a seq that was
		// already written is the spec's bite: 200, data dropped, position
		// moved back.
		drop = g.written || g.done
	default:
		if g != nil {
			g.endLocked()
		}
		g = newSegment(seq)
		ch.segs[slot] = g
	}
	if !drop {
		g.written = true
	}
	ch.posts[rc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(ch.posts, rc)
		s.mu.Unlock()
	}()

	if drop {
		n, _ := io.Copy(io.Discard, r.Body)
		rec.Bytes, rec.Dropped = int(n), true
		s.mu.Lock()
		ch.next, ch.writeTime = seq+1, time.Now()
		s.mu.Unlock()
		s.answerPost(w, &rec, seq)
		return
	}

	conn, _ := r.Context().Value(connKey{}).(net.Conn)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			s.mu.Lock()
			if rec.Bytes == 0 {
				ch.next, ch.writeTime = seq+1, time.Now()
			}
			if !g.done {
				g.data = append(g.data, buf[:n]...)
				g.notifyLocked()
			}
			rec.Bytes += n
			cut := false
			if after, ok := s.cuts[rec.Channel]; ok && rec.Bytes >= after {
				delete(s.cuts, rec.Channel)
				cut = true
			}
			s.mu.Unlock()
			if cut && conn != nil {
				// Log first: the client sees the cut at once.
				rec.Cut, recorded = true, true
				s.record(&rec)
				conn.Close()
				return
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			s.mu.Lock()
			closed, gone := ch.closed, ch.gone
			s.mu.Unlock()
			switch {
			case gone:
				rec.Cut = true // recorded by the deferred record
				panic(http.ErrAbortHandler)
			case closed:
				w.Header().Set(HeaderClosed, "terminated")
				rec.Closed = true
				reply(w, &rec, http.StatusOK, "")
			default:
				// The segment stays open, as on the real server: its
				// readers wait until the publisher DELETEs it.
				reply(w, &rec, http.StatusInternalServerError, "Server error")
			}
			return
		}
	}

	s.mu.Lock()
	if ch.gone {
		// The server went away (Restart, Stop) as the body ended: a real
		// one never answers that request.
		s.mu.Unlock()
		rec.Cut = true // recorded by the deferred record
		panic(http.ErrAbortHandler)
	}
	if rec.Bytes == 0 {
		// An empty segment is valid and advances the position.
		ch.next, ch.writeTime = seq+1, time.Now()
	}
	closed := ch.closed
	if !g.done {
		g.endLocked()
		if !s.opts.NoRecord {
			m := s.received[rec.Channel]
			if m == nil {
				m = make(map[int][]byte)
				s.received[rec.Channel] = m
			}
			m[seq] = slices.Clone(g.data)
		}
	}
	s.mu.Unlock()
	if closed {
		w.Header().Set(HeaderClosed, "terminated")
		rec.Closed = true
	}
	s.answerPost(w, &rec, seq)
}

func (s *Server) answerPost(w http.ResponseWriter, rec *Request, seq int) {
	if rec.Bytes == 0 || rec.Dropped {
		// The real server ends a POST that brought no byte (an empty
		// body, or a seq already written, whose data it never reads)
		// with Connection: close.
		w.Header().Set("Connection", "close")
	}
	if !s.opts.Legacy {
		w.Header().Set(HeaderSeq, strconv.Itoa(seq))
	}
	reply(w, rec, http.StatusOK, "")
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	rec := newRequest(r)
	defer s.record(&rec)
	conn, _ := r.Context().Value(connKey{}).(net.Conn)

	s.lockLive(r)
	rec.Restarts = s.restarts
	ch := s.channels[rec.Channel]
	if ch == nil {
		s.mu.Unlock()
		reply(w, &rec, http.StatusNotFound, "Stream not found")
		return
	}
	seq, err := strconv.Atoi(rec.Seq)
	if err != nil || seq < -2 {
		s.mu.Unlock()
		reply(w, &rec, http.StatusBadRequest, "Invalid idx")
		return
	}
	switch seq {
	case -1: // the live edge: the next write
		seq = ch.next
	case -2: // the current segment
		seq = max(ch.next-1, 0)
	}
	slot := seq % len(ch.segs)
	g := ch.segs[slot]
	if g == nil || g.seq != seq {
		// The real server also precreates seq 1 of a channel not yet
		// written (a reader one ahead of a publisher about to start).
		if seq != ch.next && (ch.next != 0 || seq != 1) {
			latest := ch.next
			s.mu.Unlock()
			w.Header().Set(HeaderLatest, strconv.Itoa(latest))
			w.Header().Set(HeaderSeq, strconv.Itoa(seq))
			reply(w, &rec, StatusNotHeld, "Entry not found")
			return
		}
		// The next write: precreate it and wait.
		if g != nil {
			g.endLocked()
		}
		g = newSegment(seq)
		ch.segs[slot] = g
	}
	// The real server's Lp-Trickle-Latest of a 200 with data is the next
	// write when the request came, and only when it is not the seq served.
	asked := ch.next
	ch.readers[conn]++
	s.wakeReadersLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if ch.readers[conn]--; ch.readers[conn] <= 0 {
			delete(ch.readers, conn)
		}
		s.wakeReadersLocked()
		s.mu.Unlock()
	}()

	for pos := 0; ; {
		s.mu.Lock()
		data := g.data[pos:]
		done, wake := g.done, g.wake
		closed, gone, latest := ch.closed, ch.gone, ch.next
		s.mu.Unlock()
		if gone {
			// The process "died": the connection drops without an answer
			// (returning would make net/http answer 200 with no body).
			rec.Cut = true // recorded by the deferred record
			panic(http.ErrAbortHandler)
		}
		if len(data) > 0 {
			if pos == 0 {
				w.Header().Set(HeaderSeq, strconv.Itoa(seq))
				if seq != asked {
					w.Header().Set(HeaderLatest, strconv.Itoa(asked))
				}
				w.Header().Set("Content-Type", "application/jsonl")
				w.WriteHeader(http.StatusOK)
				rec.Status = http.StatusOK
			}
			n, err := w.Write(data)
			pos += n
			rec.Bytes = pos
			if err != nil {
				return
			}
			http.NewResponseController(w).Flush()
			continue
		}
		if done {
			if pos > 0 {
				return
			}
			// Ended before any byte: an empty segment, or one abandoned
			// (DELETE), reset, overwritten or evicted before its first
			// byte. The real server answers all of them alike: 200 with
			// no body (which ends livepeer-python-gateway's
			// ChannelReader), never a 470.
			w.Header().Set(HeaderSeq, strconv.Itoa(seq))
			w.Header().Set(HeaderLatest, strconv.Itoa(latest))
			if closed {
				w.Header().Set(HeaderClosed, "terminated")
				rec.Closed = true
			}
			reply(w, &rec, http.StatusOK, "")
			return
		}
		select {
		case <-wake:
		case <-r.Context().Done():
			return // the client went away, or CutReaders
		}
	}
}
