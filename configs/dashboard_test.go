package configs

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/internal/testenv"
)

// dashQuery is one PromQL query of the dashboard: a panel target's expr,
// or a template variable's label_values(query, label).
type dashQuery struct {
	where string // panel title and refId, or variable name
	expr  string
	label string // label_values' label, for a variable
}

func loadDashboard(t *testing.T) (map[string]any, []dashQuery) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("grafana", "edgerelay.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("edgerelay.json: %v", err)
	}
	var qs []dashQuery
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			pm, _ := p.(map[string]any)
			title, _ := pm["title"].(string)
			targets, _ := pm["targets"].([]any)
			for _, tg := range targets {
				tm, _ := tg.(map[string]any)
				expr, _ := tm["expr"].(string)
				ref, _ := tm["refId"].(string)
				if expr == "" {
					t.Errorf("panel %q target %s has no expr", title, ref)
					continue
				}
				qs = append(qs, dashQuery{where: fmt.Sprintf("panel %q %s", title, ref), expr: expr})
			}
			sub, _ := pm["panels"].([]any)
			walk(sub)
		}
	}
	panels, _ := dash["panels"].([]any)
	walk(panels)
	templating, _ := dash["templating"].(map[string]any)
	vars, _ := templating["list"].([]any)
	for _, v := range vars {
		vm, _ := v.(map[string]any)
		if vm["type"] != "query" {
			continue
		}
		q := vm["query"]
		if qm, ok := q.(map[string]any); ok {
			q = qm["query"]
		}
		qs2, _ := q.(string)
		m := labelValuesQuery.FindStringSubmatch(qs2)
		if m == nil {
			t.Errorf("variable %v: query %q is not label_values(query, label)", vm["name"], qs2)
			continue
		}
		qs = append(qs, dashQuery{where: fmt.Sprintf("variable %v", vm["name"]), expr: m[1], label: m[2]})
	}
	return dash, qs
}

// TestDashboardShape: the panels a fleet view needs are there, each query
// honours the job and instance variables, and panel ids are unique.
func TestDashboardShape(t *testing.T) {
	dash, qs := loadDashboard(t)
	vars := map[string]bool{}
	templating, _ := dash["templating"].(map[string]any)
	list, _ := templating["list"].([]any)
	for _, v := range list {
		vm, _ := v.(map[string]any)
		name, _ := vm["name"].(string)
		vars[name] = true
		// All must mean the values found, not every job Prometheus scrapes.
		if av, _ := vm["allValue"].(string); av != "" {
			t.Errorf("variable %s: allValue %q widens All beyond the edgerelay series", name, av)
		}
	}
	for _, want := range []string{"datasource", "job", "instance"} {
		if !vars[want] {
			t.Errorf("no template variable %q", want)
		}
	}
	ids := map[float64]bool{}
	var count func([]any) int
	count = func(panels []any) int {
		n := 0
		for _, p := range panels {
			pm, _ := p.(map[string]any)
			id, _ := pm["id"].(float64)
			if ids[id] {
				t.Errorf("panel id %v used twice", id)
			}
			ids[id] = true
			if pm["type"] != "row" {
				n++
				if _, ok := pm["gridPos"].(map[string]any); !ok {
					t.Errorf("panel %v has no gridPos", pm["title"])
				}
			}
			sub, _ := pm["panels"].([]any)
			n += count(sub)
		}
		return n
	}
	panels, _ := dash["panels"].([]any)
	t.Logf("%d panels, %d queries", count(panels), len(qs))

	used := map[string]bool{}
	for _, q := range qs {
		info, err := analyzePromQL(expandGrafana(q.expr))
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		for _, m := range info.metrics {
			used[m] = true
		}
		if q.label != "" {
			continue
		}
		// Every selector narrows to the chosen jobs and nodes.
		if n := strings.Count(q.expr, `job=~"$job", instance=~"$instance"`); n != len(info.metrics) {
			t.Errorf("%s: %d of %d selectors filter by $job and $instance: %s", q.where, n, len(info.metrics), q.expr)
		}
	}
	for _, want := range []string{
		// pipeline
		"edgerelay_events_received_total", "edgerelay_events_delivered_total", "edgerelay_events_dropped_total",
		"edgerelay_events_pending", "edgerelay_sink_last_success_timestamp_seconds", "edgerelay_sink_paused",
		// GPUs
		"edgerelay_gpu_memory_used_bytes", "edgerelay_gpu_memory_free_bytes", "edgerelay_gpu_memory_reserved_bytes",
		"edgerelay_gpu_utilization_ratio", "edgerelay_gpu_power_watts", "edgerelay_gpu_temperature_celsius",
		// where the memory goes: per process by container, allocator vs device
		"edgerelay_gpu_process_memory_used_bytes", "edgerelay_gpu_allocator_reserved_bytes",
	} {
		if !used[want] {
			t.Errorf("the dashboard does not chart %s", want)
		}
	}
	names := make([]string, 0, len(used))
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("metrics used: %s", strings.Join(names, " "))
}

// TestDashboardQueriesParse has promtool parse every query of the dashboard,
// each as a recording rule of a generated rules file, with Grafana's
// variables replaced by values Prometheus accepts.
func TestDashboardQueriesParse(t *testing.T) {
	tool := promtool(t)
	_, qs := loadDashboard(t)
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, q := range qs {
		expr, _ := json.Marshal(expandGrafana(q.expr)) // a JSON string is a YAML double-quoted scalar
		fmt.Fprintf(&b, "      - record: dashboard_query_%d\n        expr: %s\n", i, expr)
	}
	path := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "check", "rules", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("SUCCESS: %d rules found", len(qs))) {
		for i, q := range qs {
			t.Logf("dashboard_query_%d: %s: %s", i, q.where, q.expr)
		}
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// exposed is what a set of series offers: metric name -> label names.
type exposed map[string]map[string]bool

func (e exposed) add(name string, labels ...string) {
	if e[name] == nil {
		e[name] = map[string]bool{}
	}
	for _, l := range labels {
		e[name][l] = true
	}
}

// parseExposition reads the Prometheus text format's samples into e.
func parseExposition(e exposed, body string) error {
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.IndexAny(line, "{ ")
		if i <= 0 {
			return fmt.Errorf("bad sample line %q", line)
		}
		name, rest := line[:i], line[i:]
		var labels []string
		if rest[0] == '{' {
			rest = rest[1:]
			for {
				rest = strings.TrimLeft(rest, ", ")
				if strings.HasPrefix(rest, "}") {
					break
				}
				eq := strings.Index(rest, `="`)
				if eq <= 0 {
					return fmt.Errorf("bad labels in %q", line)
				}
				labels = append(labels, rest[:eq])
				rest = rest[eq+2:]
				j := 0
				for ; j < len(rest) && rest[j] != '"'; j++ {
					if rest[j] == '\\' {
						j++
					}
				}
				if j >= len(rest) {
					return fmt.Errorf("unterminated label value in %q", line)
				}
				rest = rest[j+1:]
			}
		}
		e.add(name, labels...)
	}
	return sc.Err()
}

// addRecorded adds the series the rules files record, with the labels they
// carry: those of their source metrics (as exposed), less what `without`
// removes, plus what label_replace creates.
func addRecorded(t *testing.T, e exposed) {
	t.Helper()
	recordRE := regexp.MustCompile(`(?m)^\s*- record:\s*(\S+)\s*\n\s*expr:\s*[|>]?`)
	for _, f := range ruleFiles(t) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(raw)
		locs := recordRE.FindAllStringSubmatchIndex(text, -1)
		for k, loc := range locs {
			name := text[loc[2]:loc[3]]
			end := len(text)
			if k+1 < len(locs) {
				end = locs[k+1][0]
			}
			body := text[loc[1]:end]
			if next := regexp.MustCompile(`(?m)^\s*- (alert|name):`).FindStringIndex(body); next != nil {
				body = body[:next[0]]
			}
			if regexp.MustCompile(`\bby\s*\(`).MatchString(body) {
				t.Fatalf("%s: %s aggregates with by (...): teach addRecorded its labels", f, name)
			}
			info, err := analyzePromQL(body)
			if err != nil {
				t.Fatalf("%s: %s: %v", f, name, err)
			}
			e.add(name, "job", "instance")
			for _, m := range info.metrics {
				for l := range e[m] {
					if !slices.Contains(info.without, l) {
						e.add(name, l)
					}
				}
			}
			e.add(name, info.created...)
		}
	}
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// agentBinary builds cmd/edgerelay once for this package's tests.
func agentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "edgerelay-configs-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "edgerelay")
		cmd := exec.Command("go", "build", "-o", builtBin, "../cmd/edgerelay")
		cmd.Env = os.Environ()
		if os.Getenv("CGO_CFLAGS") == "" {
			cmd.Env = append(cmd.Env, "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/edgerelay: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDashboardNamesExposed runs the agent (demo mode: simulated GPUs) with
// an HTTP sink whose server first refuses events (drops), then fails
// (retries), then refuses the key (pause), so that every series the
// dashboard reads exists; it scrapes /metrics along the way and checks that
// each query names only metrics and labels the agent exposed (or the rules
// files record, or Prometheus adds: up, job, instance).
func TestDashboardNamesExposed(t *testing.T) {
	bin := agentBinary(t)
	var phase atomic.Int32 // 0: 400 (drop), 1: 503 (retry), 2: 401 (pause)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader([]int{http.StatusBadRequest, http.StatusServiceUnavailable, http.StatusUnauthorized}[phase.Load()])
	}))
	defer srv.Close()

	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	cmd := exec.Command(bin, "run", "--demo")
	cmd.Dir = dir
	cmd.Env = testenv.Clean("EDGERELAY_STATE_DIR="+filepath.Join(dir, "state"), "EDGERELAY_LISTEN="+addr,
		"EDGERELAY_SOCKET=off", "EDGERELAY_STDOUT=on", "EDGERELAY_HTTP_URL="+srv.URL, "EDGERELAY_HTTP_API_KEY=k",
		"EDGERELAY_HTTP_RATE=0", "EDGERELAY_HTTP_LINGER=10ms", "EDGERELAY_HTTP_PROBE_INTERVAL=1s",
		"EDGERELAY_SHUTDOWN_GRACE=1s", "EDGERELAY_LOG_FORMAT=json")
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("agent log:\n%s", stderr.String())
		}
	}()

	client := &http.Client{Timeout: 5 * time.Second}
	seen := exposed{}
	scrape := func() bool {
		resp, err := client.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			return false
		}
		if err := parseExposition(seen, string(body)); err != nil {
			t.Fatal(err)
		}
		return true
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			select {
			case err := <-exited:
				exited <- err
				t.Fatalf("the agent exited (%v) while waiting for %s", err, what)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	has := func(name string) func() bool {
		return func() bool { return scrape() && seen[name] != nil }
	}
	waitFor("/metrics", scrape)
	// An item refused at ingest: edgerelay_events_rejected_total.
	resp, err := client.Post("http://"+addr+"/v1/events", "application/json", strings.NewReader(`[{"type":"ok","data":{}},{"data":1}]`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor("edgerelay_events_rejected_total", has("edgerelay_events_rejected_total"))
	waitFor("a drop (HTTP 400)", has("edgerelay_events_dropped_total"))
	waitFor("edgerelay_sink_dropped_total", has("edgerelay_sink_dropped_total"))
	phase.Store(1)
	waitFor("a retry (HTTP 503)", has("edgerelay_sink_retries_total"))
	phase.Store(2)
	waitFor("a pause (HTTP 401)", has("edgerelay_sink_paused"))
	for _, name := range []string{"edgerelay_gpu_memory_used_bytes", "edgerelay_sink_last_success_timestamp_seconds", "edgerelay_sink_requests_total"} {
		waitFor(name, has(name))
	}
	// Per-process memory (the simulated GPUs' processes), and allocator
	// figures, which exist while a runner's snapshot is fresh.
	waitFor("edgerelay_gpu_process_memory_used_bytes", has("edgerelay_gpu_process_memory_used_bytes"))
	waitFor("allocator figures", func() bool {
		resp, err := client.Post("http://"+addr+"/v1/allocator", "application/json",
			strings.NewReader(`{"pid":1,"device_index":0,"stats":{"allocated_bytes.all.current":1000,"reserved_bytes.all.current":2000}}`))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return has("edgerelay_gpu_allocator_reserved_bytes")()
	})

	addRecorded(t, seen)
	seen.add("up", "job", "instance") // Prometheus's own, per target

	_, qs := loadDashboard(t)
	for _, q := range qs {
		info, err := analyzePromQL(expandGrafana(q.expr))
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		allowed := map[string]bool{"job": true, "instance": true, "__name__": true}
		for _, l := range info.created {
			allowed[l] = true
		}
		for _, m := range info.metrics {
			if seen[m] == nil {
				t.Errorf("%s: metric %s is not exposed by the agent: %s", q.where, m, q.expr)
				continue
			}
			for l := range seen[m] {
				allowed[l] = true
			}
		}
		labels := info.labels
		if q.label != "" {
			labels = append(labels, q.label)
		}
		for _, l := range labels {
			if !allowed[l] {
				t.Errorf("%s: label %q is on none of %v: %s", q.where, l, info.metrics, q.expr)
			}
		}
	}
}
