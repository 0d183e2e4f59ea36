package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/trickle/trickletest"
)

// scrape reads /metrics as series -> value ("name{labels}" as written,
// labels in the order the client library sorts them: by name).
func scrape(t *testing.T, r *running) map[string]float64 {
	t.Helper()
	m, err := scrapeErr(r.base)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func scrapeErr(base string) (map[string]float64, error) {
	resp, err := testClient.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// sessionSink matches the sink label of a session channel, live or retired.
var sessionSink = regexp.MustCompile(`sink="session(s|:[^"]*)"`)

// counters folds the edgerelay counters of a scrape: a session channel's
// series and the retired channels' aggregate are one ("sessions*"), since a
// retiring channel's totals move from the one to the other.
func counters(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if !strings.HasPrefix(k, "edgerelay_") || !strings.HasSuffix(strings.SplitN(k, "{", 2)[0], "_total") {
			continue
		}
		out[sessionSink.ReplaceAllString(k, `sink="sessions*"`)] += v
	}
	return out
}

// decreased lists the counters of before that are lower (or gone) in after.
func decreased(before, after map[string]float64) []string {
	var out []string
	for k, v := range before {
		if w, ok := after[k]; !ok || w < v {
			out = append(out, fmt.Sprintf("%s: %v -> %v (present %v)", k, v, w, ok))
		}
	}
	slices.Sort(out)
	return out
}

// TestCountersAtZeroFromStart: every counter of a known label set has its
// series at 0 before anything happened, enumerated from the tables in the
// code: every drop stage and reason, every source, and each sink's drop and
// retry reasons. A first burst of drops is then an increase rate() sees.
func TestCountersAtZeroFromStart(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	m := scrape(t, r)
	var want []string
	for _, d := range DropSeriesTable() {
		want = append(want, fmt.Sprintf(`edgerelay_events_dropped_total{reason=%q,stage=%q}`, d.Reason, d.Stage))
	}
	for _, src := range sources {
		want = append(want, fmt.Sprintf(`edgerelay_events_received_total{source=%q}`, src), fmt.Sprintf(`edgerelay_events_rejected_total{source=%q}`, src))
	}
	for _, reason := range sinkDropReasons {
		want = append(want, fmt.Sprintf(`edgerelay_sink_dropped_total{reason=%q,sink="stdout"}`, reason))
	}
	for _, reason := range retryReasons {
		want = append(want, fmt.Sprintf(`edgerelay_sink_retries_total{reason=%q,sink="stdout"}`, reason))
	}
	want = append(want, `edgerelay_sink_received_total{sink="stdout"}`, `edgerelay_events_delivered_total{sink="stdout"}`)
	for _, k := range want {
		if v, ok := m[k]; !ok || v != 0 {
			t.Errorf("%s: %v (present %v), want 0 from start", k, v, ok)
		}
	}
	if len(DropSeriesTable()) < 10 {
		t.Errorf("the drop table has %d rows", len(DropSeriesTable()))
	}
}

// TestDropTableDocumented: ARCHITECTURE.md and docs/OPERATIONS.md list
// exactly the drop series of the code's table.
func TestDropTableDocumented(t *testing.T) {
	var want []string
	for _, d := range DropSeriesTable() {
		want = append(want, d.Stage+"/"+d.Reason)
	}
	slices.Sort(want)
	pair := regexp.MustCompile("`([a-z_]+/[a-z_]+)`")
	for _, doc := range []string{"../ARCHITECTURE.md", "../docs/OPERATIONS.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		inTable := false
		for _, line := range strings.Split(string(b), "\n") {
			switch {
			case strings.HasPrefix(line, "| stage / reason |"):
				inTable = true
			case inTable && !strings.HasPrefix(line, "|"):
				inTable = false
			case inTable:
				cell := strings.SplitN(strings.TrimPrefix(line, "|"), "|", 2)[0]
				for _, m := range pair.FindAllStringSubmatch(cell, -1) {
					got = append(got, m[1])
				}
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s lists the drops %v; the code's table is %v", doc, got, want)
		}
	}
}

// TestCountersNeverDecrease scrapes /metrics before and after a session
// channel retires with events it had not sent, and all along while it
// does: no counter goes down (the channel's totals move into the retired
// channels' aggregate), and the top-level drops in /metrics and /v1/stats
// include what the retired sink dropped.
func TestCountersNeverDecrease(t *testing.T) {
	ts := newTrickleServer(t, trickletest.Options{KeepSegments: 100})
	ts.CreateChannel("s1-events")
	r := startAgent(t, testEnv(t, nil))
	if code, _ := r.post(t, "/v1/sessions", fmt.Sprintf(`{"session_id":"s1","events_url":%q}`, ts.ChannelURL("s1-events"))); code != http.StatusCreated {
		t.Fatalf("attach: %d", code)
	}
	postSession := func(from, n int) {
		var b strings.Builder
		for i := from; i < from+n; i++ {
			fmt.Fprintf(&b, "{\"type\":\"gpu_note\",\"data\":{\"session_id\":\"s1\",\"i\":%d}}\n", i)
		}
		if code, ans := r.post(t, "/v1/events", b.String()); code != http.StatusAccepted || ans.Accepted != n {
			t.Fatalf("post: %d %+v", code, ans)
		}
	}
	postSession(0, 5)
	waitUntil(t, "the session channel to deliver 5", func() bool { return r.a.Report().Sinks["session:s1"].Delivered == 5 })
	before := counters(scrape(t, r))

	// A reader scraping all along: each scrape against the one before.
	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		problems []string
		scrapes  int
	)
	wg.Go(func() {
		prev := before
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, err := scrapeErr(r.base)
			if err != nil {
				mu.Lock()
				problems = append(problems, err.Error())
				mu.Unlock()
				return
			}
			cur := counters(m)
			mu.Lock()
			problems = append(problems, decreased(prev, cur)...)
			scrapes++
			mu.Unlock()
			prev = cur
			runtime.Gosched()
		}
	})

	ts.CloseChannel("s1-events") // the channel ends: later POSTs get 404
	postSession(5, 10)
	waitUntil(t, "the session channel to retire", func() bool {
		rep := r.a.Report()
		_, live := rep.Sinks["session:s1"]
		return !live && rep.Sinks["sessions"].Received > 0
	})
	after := counters(scrape(t, r))
	close(stop)
	wg.Wait()

	for _, p := range decreased(before, after) {
		t.Errorf("decreased across the retirement: %s", p)
	}
	mu.Lock()
	for _, p := range problems {
		t.Errorf("while retiring: %s", p)
	}
	t.Logf("%d scrapes while the channel retired", scrapes)
	mu.Unlock()

	rep := r.a.Report()
	sess := rep.Sinks["sessions"]
	sinkClosed, sessionClosed := rep.Dropped["sink"][relay.DropChannelClosed], rep.Dropped["session"][relay.DropChannelClosed]
	if sinkClosed == 0 || sinkClosed != sess.Dropped[relay.DropChannelClosed] || sinkClosed+sessionClosed != 10 {
		t.Errorf("dropped: sink/channel_closed %d, session/channel_closed %d, the retired sink's channel_closed %d; want the sink's in the top level, 10 in all",
			sinkClosed, sessionClosed, sess.Dropped[relay.DropChannelClosed])
	}
	if !sess.Balanced || sess.Delivered != 5 || sess.Pending != 0 {
		t.Errorf("retired sessions: %+v", sess)
	}
	m := scrape(t, r)
	if got := m[`edgerelay_events_dropped_total{reason="channel_closed",stage="sink"}`]; got != float64(sinkClosed) {
		t.Errorf("/metrics sink/channel_closed = %v, /v1/stats says %d", got, sinkClosed)
	}
	resp, err := testClient.Get(r.base + "/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf(`"sink":{"channel_closed":%d,`, sinkClosed); !strings.Contains(string(body), want) {
		t.Errorf("/v1/stats lacks %s:\n%s", want, body)
	}
}

// TestBuildInfo: edgerelay_build_info carries the version main was built
// with, the VCS revision and the Go version; /v1/stats says the version.
func TestBuildInfo(t *testing.T) {
	a, err := New(loadConfig(t, testEnv(t, nil)), Options{Stdout: &syncBuffer{}, Version: "v9.8.7-test"})
	if err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, a, &syncBuffer{})
	b := BuildOf("v9.8.7-test", "")
	want := fmt.Sprintf(`edgerelay_build_info{goversion=%q,revision=%q,version="v9.8.7-test"}`, runtime.Version(), b.Revision)
	if v := scrape(t, r)[want]; v != 1 {
		t.Errorf("/metrics lacks %s 1", want)
	}
	resp, err := testClient.Get(r.base + "/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"version":"v9.8.7-test"`) {
		t.Errorf("/v1/stats lacks the version: %s", body)
	}
	if got := BuildOf("", "").Version; got != "dev" {
		t.Errorf("an unset version is %q, want dev", got)
	}
}

// TestPprof: /debug/pprof/ is 404 unless EDGERELAY_PPROF is on; on, the
// index and a profile are served on the loopback address and the socket.
func TestPprof(t *testing.T) {
	get := func(r *running, path string) (int, string) {
		resp, err := testClient.Get(r.base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	off := startAgent(t, testEnv(t, nil))
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
		if code, _ := get(off, p); code != http.StatusNotFound {
			t.Errorf("pprof off: %s answered %d, want 404", p, code)
		}
	}
	env := testEnv(t, map[string]string{"EDGERELAY_PPROF": "on"})
	on := startAgent(t, env)
	if code, body := get(on, "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof on: index %d %.200s", code, body)
	}
	if code, body := get(on, "/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("pprof on: goroutine profile %d %.200s", code, body)
	}
	sock := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", env["EDGERELAY_SOCKET"])
	}}}
	resp, err := sock.Get("http://agent/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("pprof on the socket: %d", resp.StatusCode)
	}
}
