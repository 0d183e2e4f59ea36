package httpsink

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// metricsAPI is a fake of the metrics API that keeps the rules of
// spec/metrics-api.md, in this order:
//
//   - a bearer key (401 otherwise);
//   - perMinute requests per rolling minute per key (429 with a Retry-After
//     of the whole seconds until a request leaves the window; refused
//     requests do not count);
//   - a body of at most maxBody bytes, uncompressed (413);
//   - 1 to maxEvents events (none or malformed: 400; more: 413);
//   - success: 200 {"status":"accepted","accepted":N}, where N leaves out the
//     events notAccepted names (partial acceptance). The events are then
//     written (counted in got) before the answer goes out, as the real API
//     writes them to Kafka first: an answer that breaks off on the way
//     (wire) leaves them written, and a retry writes them again.
//
// override, when it returns a code, answers that instead (before any rule),
// with the Retry-After it gives. The zero values of the limits are the
// API's. It is safe for concurrent use.
type metricsAPI struct {
	t           testing.TB
	key         string
	maxBody     int // 0: 1,000,000
	maxEvents   int // 0: 500
	perMinute   int // 0: 30; negative: no budget
	notAccepted func(id string) bool
	override    func(n int, now time.Time) (code int, retryAfter string)
	wire        func(n int) wireFault // how the n-th request's success answer travels; nil: whole

	mu     sync.Mutex
	window []time.Time // requests counted against the budget in the last minute
	reqs   []apiRequest
	got    map[string]int // id -> times written
	order  []string       // ids in the order first written
}

// apiRequest is one request as the fake saw and answered it.
type apiRequest struct {
	at       time.Time
	code     int
	bytes    int // uncompressed body
	events   int
	accepted int
	wire     wireFault
}

// wireFault is how a success answer reaches the client.
type wireFault int

const (
	wireWhole    wireFault = iota
	wireShort              // half the body, less than its Content-Length, then close
	wireReset              // half the body, then a TCP reset (a close on a pipe)
	wireChunkCut           // chunked, the first chunk, then close without the last chunk
	wireCloseCut           // no length, delimited by close: half the JSON, then close
	wireStall              // headers and half the body, then nothing until the client goes
	wireNoAnswer           // the connection closes before any answer
)

func (w wireFault) String() string {
	return [...]string{"whole", "short", "reset", "chunk-cut", "close-cut", "stall", "no-answer"}[w]
}

func newMetricsAPI(t testing.TB) *metricsAPI {
	return &metricsAPI{t: t, key: testKey, got: map[string]int{}}
}

func (a *metricsAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return // the client went away
	}
	now := time.Now()
	a.mu.Lock()
	n := len(a.reqs)
	a.reqs = append(a.reqs, apiRequest{at: now})
	a.mu.Unlock()
	answer := func(code int, body string) {
		a.mu.Lock()
		a.reqs[n].code = code
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	}

	if a.override != nil {
		if code, ra := a.override(n, now); code != 0 {
			if ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			answer(code, fmt.Sprintf(`{"error":%q}`, http.StatusText(code)))
			return
		}
	}
	if r.Header.Get("Authorization") != "Bearer "+a.key {
		answer(401, `{"error":"invalid api key"}`)
		return
	}
	if ra, ok := a.admit(now); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(ra))
		answer(429, `{"error":"rate limit exceeded"}`)
		return
	}
	body := raw
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err == nil {
			body, err = io.ReadAll(zr)
		}
		if err != nil {
			answer(400, `{"error":"bad gzip"}`)
			return
		}
	}
	a.mu.Lock()
	a.reqs[n].bytes = len(body)
	maxBody := cmp0(a.maxBody, 1_000_000) // a test may change it while serving
	a.mu.Unlock()
	if len(body) > maxBody {
		answer(413, `{"error":"payload too large"}`)
		return
	}
	var batch struct {
		App    string            `json:"app"`
		Host   string            `json:"host"`
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &batch); err != nil || len(batch.Events) == 0 {
		answer(400, `{"error":"empty or malformed batch"}`)
		return
	}
	if len(batch.Events) > cmp0(a.maxEvents, 500) {
		answer(413, `{"error":"too many events"}`)
		return
	}
	ids := make([]string, 0, len(batch.Events))
	for _, e := range batch.Events {
		var env struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(e, &env); err != nil || env.ID == "" {
			answer(400, `{"error":"malformed event"}`)
			return
		}
		ids = append(ids, env.ID)
	}
	accepted := 0
	a.mu.Lock()
	for _, id := range ids {
		if a.notAccepted != nil && a.notAccepted(id) {
			continue
		}
		accepted++
		if a.got[id] == 0 {
			a.order = append(a.order, id)
		}
		a.got[id]++
	}
	fault := wireWhole
	if a.wire != nil {
		fault = a.wire(n)
	}
	rq := &a.reqs[n] // under the lock: a concurrent append may move the slice
	rq.code, rq.events, rq.accepted, rq.wire = 200, len(ids), accepted, fault
	a.mu.Unlock()
	writeAnswer(w, r, fault, fmt.Sprintf(`{"status":"accepted","accepted":%d}`, accepted))
}

// admit counts a request against the budget, or says how many whole
// seconds until one leaves the window.
func (a *metricsAPI) admit(now time.Time) (retryAfter int, ok bool) {
	limit := cmp0(a.perMinute, 30)
	if limit < 0 {
		return 0, true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	i := 0
	for i < len(a.window) && now.Sub(a.window[i]) >= time.Minute {
		i++
	}
	a.window = a.window[i:]
	if len(a.window) >= limit {
		wait := a.window[0].Add(time.Minute).Sub(now)
		return int((wait + time.Second - 1) / time.Second), false
	}
	a.window = append(a.window, now)
	return 0, true
}

// writeAnswer sends a success answer as fault says.
func writeAnswer(w http.ResponseWriter, r *http.Request, fault wireFault, body string) {
	if fault == wireWhole {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		io.WriteString(w, body)
		return
	}
	conn, bw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	half := body[:len(body)/2]
	switch fault {
	case wireShort, wireReset, wireStall:
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), half)
	case wireChunkCut:
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(half), half)
	case wireCloseCut:
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n%s", half)
	case wireNoAnswer:
	}
	bw.Flush()
	switch fault {
	case wireReset:
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // close sends RST
		}
	case wireStall:
		// Nothing more until the client gives up and closes (or a minute
		// passes: the test is broken then).
		conn.SetReadDeadline(time.Now().Add(time.Minute))
		io.Copy(io.Discard, bufio.NewReader(conn))
	}
}

func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// requests returns a copy of what the fake saw.
func (a *metricsAPI) requests() []apiRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]apiRequest(nil), a.reqs...)
}

// written returns how many times each id was written, and the ids in the
// order first written.
func (a *metricsAPI) written() (map[string]int, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[string]int, len(a.got))
	for k, v := range a.got {
		m[k] = v
	}
	return m, append([]string(nil), a.order...)
}

// codes counts the answers by status code.
func (a *metricsAPI) codes() map[int]int {
	m := map[int]int{}
	for _, r := range a.requests() {
		m[r.code]++
	}
	return m
}
