package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/livepeer/edgerelay/agent/ingest"
)

// The load generator of `edgerelay bench`: a process of its own, so that
// the agent's CPU is measured alone and the clients do not share its
// scheduler. It serves the loopback metrics API the agent delivers to, and
// runs ingest clients when told. The bench starts it as
// `edgerelay bench-loadgen` (not listed in the usage) and talks to it in
// JSON lines: one loadCmd on its stdin, then "mark" lines at the measured
// window's start and end, then one loadReply.

func init() { extraCommands["bench-loadgen"] = cmdBenchLoadgen }

// loadCmd is one order to the load generator.
type loadCmd struct {
	Op      string  `json:"op"`                // "load", "count", "until", "total"
	URL     string  `json:"url,omitempty"`     // the agent's base URL (load)
	Proto   string  `json:"proto,omitempty"`   // "http" or "ws" (load)
	Clients int     `json:"clients,omitempty"` // concurrent clients (load)
	Rate    float64 `json:"rate,omitempty"`    // offered events/s in all; 0: each client as fast as it is answered
	WarmS   float64 `json:"warm_s,omitempty"`  // load before the window, not counted
	WindowS float64 `json:"window_s,omitempty"`
	Events  int64   `json:"events,omitempty"` // until: the server's total to wait for
	// SinkRTTMS holds each answer of the metrics API this long after its
	// body was read (a remote API's round trip). Every command sets it:
	// 0 answers at once.
	SinkRTTMS float64 `json:"sink_rtt_ms,omitempty"`
}

// loadReply is what the load generator measured.
type loadReply struct {
	Mark            string  `json:"mark,omitempty"` // "start" or "end" of the window; a mark line has nothing else
	Accepted        int64   `json:"accepted"`       // events answered 202 durable in the window
	Refused         int64   `json:"refused"`        // events answered 429/503 (refused whole) in the window
	RefusedAll      int64   `json:"refused_all"`    // the same, warm-up and tail included
	RefusedRequests int64   `json:"refused_requests"`
	Requests        int64   `json:"requests"`
	Errors          int64   `json:"errors"`
	FirstError      string  `json:"first_error,omitempty"`
	P50ms           float64 `json:"p50_ms"`
	P99ms           float64 `json:"p99_ms"`
	ServerEvents    int64   `json:"server_events"` // the metrics API received, in the window
	ServerTotal     int64   `json:"server_total"`
	WindowS         float64 `json:"window_s"`
}

func cmdBenchLoadgen(args []string, stdout, stderr io.Writer) int {
	srv, err := startSinkServer()
	if err != nil {
		fmt.Fprintf(stderr, "bench-loadgen: %v\n", err)
		return 1
	}
	defer srv.close()
	out := json.NewEncoder(stdout)
	out.Encode(map[string]string{"server": srv.url})
	bodies := benchBodies(8)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	for in.Scan() {
		var c loadCmd
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			fmt.Fprintf(stderr, "bench-loadgen: bad command: %v\n", err)
			return 2
		}
		rep := runLoadCmd(c, srv, bodies, func(mark string) { out.Encode(loadReply{Mark: mark}) })
		rep.ServerTotal = srv.events.Load()
		out.Encode(rep)
	}
	return 0
}

// benchBodies returns n ingest bodies of benchPerRequest events each.
func benchBodies(n int) [][]byte {
	var bodies [][]byte
	for k := range n {
		body := []byte{'['}
		for i := range benchPerRequest {
			if i > 0 {
				body = append(body, ',')
			}
			body = append(body, benchEvent(k*benchPerRequest+i)...)
		}
		bodies = append(bodies, append(body, ']'))
	}
	return bodies
}

func runLoadCmd(c loadCmd, srv *sinkServer, bodies [][]byte, mark func(string)) loadReply {
	window := time.Duration(c.WindowS * float64(time.Second))
	srv.rtt.Store(int64(c.SinkRTTMS * float64(time.Millisecond)))
	switch c.Op {
	case "total":
		return loadReply{}
	case "count":
		mark("start")
		t0, n0 := time.Now(), srv.events.Load()
		time.Sleep(window)
		n1, t1 := srv.events.Load(), time.Now()
		mark("end")
		return loadReply{ServerEvents: n1 - n0, WindowS: t1.Sub(t0).Seconds()}
	case "until":
		mark("start")
		t0, n0 := time.Now(), srv.events.Load()
		t1 := <-srv.reached(c.Events)
		mark("end")
		return loadReply{ServerEvents: srv.events.Load() - n0, WindowS: t1.Sub(t0).Seconds()}
	case "load":
		return runLoad(c, srv, bodies, mark)
	}
	return loadReply{FirstError: "unknown op " + strconv.Quote(c.Op), Errors: 1}
}

// runLoad runs c.Clients clients for the warm-up and the window and counts
// what was answered within the window. A client answered 429 or 503 waits
// the Retry-After (at most the time left), as a well-behaved runner would.
func runLoad(c loadCmd, srv *sinkServer, bodies [][]byte, mark func(string)) loadReply {
	warm := time.Duration(c.WarmS * float64(time.Second))
	window := time.Duration(c.WindowS * float64(time.Second))
	start := time.Now()
	from, until := start.Add(warm), start.Add(warm+window)
	ctx, cancel := context.WithDeadline(context.Background(), until.Add(30*time.Second))
	defer cancel()

	var (
		rep        loadReply
		mu         sync.Mutex
		lats       []time.Duration
		refusedAll atomic.Int64
		n0, n1     int64
		t0, t1     time.Time
		marks      sync.WaitGroup
	)
	marks.Go(func() {
		time.Sleep(time.Until(from))
		t0, n0 = time.Now(), srv.events.Load()
		mark("start")
		time.Sleep(time.Until(until))
		t1, n1 = time.Now(), srv.events.Load()
		mark("end")
	})
	transport := &http.Transport{MaxIdleConns: c.Clients, MaxIdleConnsPerHost: c.Clients, DisableCompression: true, IdleConnTimeout: time.Minute}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: time.Minute}
	var pace time.Duration
	if c.Rate > 0 {
		pace = time.Duration(float64(time.Second) * float64(c.Clients*benchPerRequest) / c.Rate)
	}
	var wg sync.WaitGroup
	for k := range c.Clients {
		wg.Go(func() {
			var send func(body []byte) (status int, a ingest.Answer, err error)
			if c.Proto == "ws" {
				conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(c.URL, "http")+"/v1/stream", &websocket.DialOptions{HTTPClient: client})
				if err != nil {
					mu.Lock()
					rep.Errors++
					if rep.FirstError == "" {
						rep.FirstError = err.Error()
					}
					mu.Unlock()
					return
				}
				defer conn.CloseNow()
				conn.SetReadLimit(1 << 20)
				send = func(body []byte) (int, ingest.Answer, error) {
					var a struct {
						Status int `json:"status"`
						ingest.Answer
					}
					if err := conn.Write(ctx, websocket.MessageText, body); err != nil {
						return 0, a.Answer, err
					}
					_, msg, err := conn.Read(ctx)
					if err != nil {
						return 0, a.Answer, err
					}
					err = json.Unmarshal(msg, &a)
					return a.Status, a.Answer, err
				}
			} else {
				send = func(body []byte) (int, ingest.Answer, error) {
					var a ingest.Answer
					req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL+"/v1/events", bytes.NewReader(body))
					if err != nil {
						return 0, a, err
					}
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						return 0, a, err
					}
					defer resp.Body.Close()
					raw, err := io.ReadAll(resp.Body)
					if err != nil {
						return 0, a, err
					}
					err = json.Unmarshal(raw, &a)
					return resp.StatusCode, a, err
				}
			}
			next := time.Now()
			var my []time.Duration
			var acc, ref, refReq, reqs, errs int64
			var firstErr string
			for i := k; ; i++ {
				if pace > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					next = next.Add(pace)
					if time.Until(next) < -pace { // fell behind: no burst to catch up
						next = time.Now()
					}
				}
				s0 := time.Now()
				if !s0.Before(until) {
					break
				}
				status, a, err := send(bodies[i%len(bodies)])
				s1 := time.Now()
				in := !s1.Before(from) && s1.Before(until)
				switch {
				case err != nil:
					errs++
					if firstErr == "" {
						firstErr = err.Error()
					}
					if c.Proto == "ws" {
						i = -1 // the connection is gone
					}
				case status == http.StatusAccepted && a.Durable != nil && *a.Durable:
					if in {
						acc += int64(a.Accepted)
						reqs++
						my = append(my, s1.Sub(s0))
					}
				case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
					refusedAll.Add(int64(a.Refused))
					if in {
						ref += int64(a.Refused)
						refReq++
					}
					wait := time.Duration(max(a.RetryAfter, 1)) * time.Second
					time.Sleep(min(wait, max(time.Until(until), 0)))
				default:
					errs++
					if firstErr == "" {
						firstErr = fmt.Sprintf("ingest answered %d: %s", status, a.Error)
					}
				}
				if i < 0 {
					break
				}
			}
			mu.Lock()
			rep.Accepted += acc
			rep.Refused += ref
			rep.RefusedRequests += refReq
			rep.Requests += reqs
			rep.Errors += errs
			if rep.FirstError == "" {
				rep.FirstError = firstErr
			}
			lats = append(lats, my...)
			mu.Unlock()
		})
	}
	wg.Wait()
	marks.Wait()
	rep.RefusedAll = refusedAll.Load()
	rep.ServerEvents = n1 - n0
	rep.WindowS = t1.Sub(t0).Seconds()
	rep.P50ms = ms(percentile(lats, 0.5))
	rep.P99ms = ms(percentile(lats, 0.99))
	return rep
}

// loadgen is the bench's handle on a load generator process.
type loadgen struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	server string // the metrics API it serves
	nice   int    // its niceness
	stderr bytes.Buffer
}

// remoteNice is the niceness of the overload scenarios' metrics API. It
// stands for an API on another machine, whose answers do not wait for this
// machine's CPU: run at normal priority beside an agent and clients that
// fill both cores, it read each request 0.4 ms late on average (up to 4 ms),
// a delay of the bench's making that no remote API adds (docs/BENCHMARKS.md).
const remoteNice = -10

// startLoadgen starts bin as a load generator and reads its server's URL.
// With remote, it runs at remoteNice where this process may raise a
// priority (nice(1) warns and runs it as it is elsewhere); l.nice says
// which.
func startLoadgen(bin string, remote bool) (*loadgen, error) {
	l := &loadgen{cmd: exec.Command(bin, "bench-loadgen")}
	if nice, err := exec.LookPath("nice"); remote && err == nil {
		l.cmd = exec.Command(nice, "-n", strconv.Itoa(remoteNice), bin, "bench-loadgen")
	}
	l.cmd.Stderr = &l.stderr
	l.cmd.Env = append(os.Environ(), "GOGC=400") // its garbage is not the agent's CPU
	in, err := l.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := l.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	l.in, l.out = in, bufio.NewScanner(out)
	if err := l.cmd.Start(); err != nil {
		return nil, fmt.Errorf("load generator %s: %w", bin, err)
	}
	var hello struct{ Server string }
	if !l.out.Scan() || json.Unmarshal(l.out.Bytes(), &hello) != nil || hello.Server == "" {
		l.close()
		return nil, fmt.Errorf("load generator did not start: %s", strings.TrimSpace(l.stderr.String()))
	}
	l.server = hello.Server
	l.nice = niceOf(l.cmd.Process.Pid)
	return l, nil
}

// niceOf is the niceness of process pid (field 19 of /proc/pid/stat), or 0
// where it cannot be read.
func niceOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields count from its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 17 {
		return 0
	}
	n, _ := strconv.Atoi(f[16])
	return n
}

// do sends c and returns the reply; onMark runs at the window's marks.
func (l *loadgen) do(c loadCmd, onMark func(mark string)) (loadReply, error) {
	line, _ := json.Marshal(c)
	if _, err := l.in.Write(append(line, '\n')); err != nil {
		return loadReply{}, fmt.Errorf("load generator: %w (%s)", err, strings.TrimSpace(l.stderr.String()))
	}
	for l.out.Scan() {
		var r loadReply
		if err := json.Unmarshal(l.out.Bytes(), &r); err != nil {
			return r, fmt.Errorf("load generator: %w", err)
		}
		if r.Mark != "" {
			if onMark != nil {
				onMark(r.Mark)
			}
			continue
		}
		if r.Errors > 0 {
			return r, fmt.Errorf("load generator: %d errors, the first: %s", r.Errors, r.FirstError)
		}
		return r, nil
	}
	return loadReply{}, errors.Join(errors.New("load generator exited"), l.out.Err(), errors.New(strings.TrimSpace(l.stderr.String())))
}

// readAtMarks is an onMark for do: it stores read() in *atStart at the
// window's "start" mark and in *atEnd at its end.
func readAtMarks[T any](read func() T, atStart, atEnd *T) func(mark string) {
	return func(mark string) {
		if mark == "start" {
			*atStart = read()
		} else {
			*atEnd = read()
		}
	}
}

func (l *loadgen) close() {
	l.in.Close()
	done := make(chan struct{})
	go func() { l.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		l.cmd.Process.Kill()
		<-done
	}
}
