package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/internal/testenv"

	"golang.org/x/sys/unix"
)

// pythonRunner is a runner as the runners are: a Python process. It records
// in $MARK how SIGINT was set up and every signal it gets; with $AGENT it
// waits for the agent and posts $START_EVENTS prebuilt envelopes, and
// $FINAL_EVENTS more when it is stopped (a runner's last words), before
// exiting with $TERM_EXIT on SIGTERM, by KeyboardInterrupt on SIGINT (which
// Python turns into a death by SIGINT), or with $EXIT_AFTER_START on its own.
// $STOP_DELAY makes its SIGTERM handling slow.
const pythonRunner = `import json, os, signal, sys, time, urllib.request

MARK = os.environ["MARK"]
AGENT = os.environ.get("AGENT", "")

def mark(line):
    with open(MARK, "a") as f:
        f.write(line + "\n")

def post(prefix, n):
    if not AGENT or n == 0:
        return
    body = "".join(json.dumps({"id": "%s-%d" % (prefix, i), "type": "runner_event", "timestamp": "1", "data": {"n": i}}) + "\n" for i in range(n))
    req = urllib.request.Request("http://%s/v1/events" % AGENT, data=body.encode(), headers={"Content-Type": "application/x-ndjson"})
    with urllib.request.urlopen(req, timeout=30) as r:
        mark("posted %s %d %d" % (prefix, n, r.status))

def wait_ready():
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen("http://%s/readyz" % AGENT, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.02)
    mark("agent never ready")

def on_term(signum, frame):
    mark("TERM")
    post("final", int(os.environ.get("FINAL_EVENTS", "0")))
    time.sleep(float(os.environ.get("STOP_DELAY", "0")))
    sys.exit(int(os.environ.get("TERM_EXIT", "0")))

signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGHUP, lambda s, f: mark("HUP"))
mark("sigint " + ("ignored" if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else "handled"))
if AGENT:
    wait_ready()
    post("start", int(os.environ.get("START_EVENTS", "0")))
if "EXIT_AFTER_START" in os.environ:
    mark("started")
    post("final", int(os.environ.get("FINAL_EVENTS", "0")))
    sys.exit(int(os.environ["EXIT_AFTER_START"]))
try:
    # Inside the try: a Ctrl-C sent as soon as the mark is seen may land
    # before the mark's file is closed.
    mark("started")
    while True:
        time.sleep(0.02)
except KeyboardInterrupt:
    mark("INT")
    post("final", int(os.environ.get("FINAL_EVENTS", "0")))
    raise
`

// shellRunner is a runner that is a shell script: exit 3 on SIGTERM, death by
// SIGINT on SIGINT.
const shellRunner = `#!/bin/sh
trap 'echo TERM >> "$MARK"; exit 3' TERM
trap 'echo HUP >> "$MARK"' HUP
trap 'echo INT >> "$MARK"; trap - INT; kill -INT $$' INT
if [ -n "${ORPHAN_PID_FILE:-}" ]; then
	# a child that outlives its parent: an orphan for the wrapper to reap
	( sleep 600 & echo $! > "$ORPHAN_PID_FILE" )
fi
echo started >> "$MARK"
if [ -n "${EXIT_AFTER_START:-}" ]; then
	# wait for the agent's socket, if asked, so that it has started
	while [ -n "${WAIT_SOCKET:-}" ] && [ ! -S "$WAIT_SOCKET" ]; do sleep 0.02; done
	exit "$EXIT_AFTER_START"
fi
while :; do sleep 0.02; done
`

// metricsAPI is the HTTP metrics API: it records the ids it was given.
type metricsAPI struct {
	*httptest.Server
	mu   sync.Mutex
	ids  map[string]bool
	down bool
}

func newMetricsAPI(t *testing.T, down bool, delay time.Duration) *metricsAPI {
	s := &metricsAPI{ids: map[string]bool{}, down: down}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.down {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		time.Sleep(delay) // a peer that takes its time
		var body struct{ Events []struct{ ID string } }
		json.NewDecoder(r.Body).Decode(&body)
		s.mu.Lock()
		for _, e := range body.Events {
			s.ids[e.ID] = true
		}
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *metricsAPI) count(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id := range s.ids {
		if strings.HasPrefix(id, prefix) {
			n++
		}
	}
	return n
}

func python3(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("/usr/bin/python3 is missing in CI; .ci/run installs Debian's python3")
		}
		t.Skip("/usr/bin/python3 not installed: the Python runner cases need Debian's python3")
	}
	return py
}

// wrapped is one `edgerelay wrap` under test.
type wrapped struct {
	t       *testing.T
	cmd     *exec.Cmd
	out     *lockedBuffer
	mark    string
	state   string
	pidFile string
	exited  chan struct{}
	started time.Time
	pty     *os.File // the terminal's master side, with tty
}

type wrapOpts struct {
	python     bool     // the Python runner, else the shell runner
	entrypoint bool     // through configs/runner-entrypoint.sh
	background bool     // as a background job of a non-interactive sh (SIGINT ignored)
	tty        bool     // on a terminal it controls, as under docker run -it
	env        []string // beyond the defaults
	sink       *metricsAPI
}

func startWrapped(t *testing.T, o wrapOpts) *wrapped {
	t.Helper()
	dir := t.TempDir()
	w := &wrapped{t: t, out: &lockedBuffer{}, mark: filepath.Join(dir, "mark"), state: filepath.Join(dir, "state"),
		pidFile: filepath.Join(dir, "pid"), exited: make(chan struct{})}
	var runner []string
	if o.python {
		script := filepath.Join(dir, "runner.py")
		os.WriteFile(script, []byte(pythonRunner), 0o644)
		runner = []string{python3(t), "-u", script}
	} else {
		script := filepath.Join(dir, "runner.sh")
		os.WriteFile(script, []byte(shellRunner), 0o755)
		runner = []string{script}
	}
	args := append([]string{binPath, "wrap", "--"}, runner...)
	if o.entrypoint {
		args = append([]string{"/bin/sh", repoFile(t, "configs/runner-entrypoint.sh")}, runner...)
	}
	if o.background {
		args = append([]string{"/bin/sh", "-c", `"$@" & echo $! > "$PIDFILE"; wait $!`, "sh"}, args...)
	}
	addr := testenv.FreeAddr(t)
	env := []string{"MARK=" + w.mark, "AGENT=" + addr, "PIDFILE=" + w.pidFile, "EDGERELAY_BIN=" + binPath,
		"EDGERELAY_LISTEN=" + addr, "EDGERELAY_STATE_DIR=" + w.state, "EDGERELAY_SOCKET=" + filepath.Join(dir, "s.sock"),
		"EDGERELAY_NVML=off", "EDGERELAY_STATUS_INTERVAL=1h", "WAIT_SOCKET=" + filepath.Join(dir, "s.sock"),
		// The race detector sleeps 1 s at exit by default; these timings
		// are the product's.
		"GORACE=atexit_sleep_ms=0"}
	if o.sink != nil {
		env = append(env, "EDGERELAY_HTTP_URL="+o.sink.URL, "EDGERELAY_HTTP_API_KEY=k", "EDGERELAY_HTTP_RATE=0",
			"EDGERELAY_HTTP_BATCH=10", "EDGERELAY_HTTP_LINGER=10ms")
	}
	w.cmd = exec.Command(args[0], args[1:]...)
	w.cmd.Dir = dir
	w.cmd.Env = testenv.Clean(append(env, o.env...)...)
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	var tty *os.File
	if o.tty {
		w.pty, tty = openPty(t)
		w.cmd.Stdin, w.cmd.Stdout, w.cmd.Stderr = tty, tty, tty
		w.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if tty != nil {
		tty.Close()
		go io.Copy(w.out, w.pty) // ends with EIO once every process has left the terminal
		t.Cleanup(func() { w.pty.Close() })
	}
	w.started = time.Now()
	go func() { w.cmd.Wait(); close(w.exited) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(w.out.String())
		}
		select {
		case <-w.exited:
		default:
			syscall.Kill(w.wrapperPid(), syscall.SIGKILL)
			w.cmd.Process.Kill()
			<-w.exited
		}
	})
	return w
}

// wrapperPid is the pid of `edgerelay wrap`, also when started by a shell.
func (w *wrapped) wrapperPid() int {
	if b, err := os.ReadFile(w.pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return pid
		}
	}
	return w.cmd.Process.Pid
}

func (w *wrapped) marks() string { b, _ := os.ReadFile(w.mark); return string(b) }

func (w *wrapped) waitMark(s string) {
	w.t.Helper()
	waitForLong(w.t, "the runner to record "+strconv.Quote(s), func() bool { return strings.Contains(w.marks(), s) })
}

func (w *wrapped) waitOut(s string) {
	w.t.Helper()
	waitForLong(w.t, strconv.Quote(s)+" in the output", func() bool { return strings.Contains(w.out.String(), s) })
}

func (w *wrapped) signal(s syscall.Signal) {
	w.t.Helper()
	if err := syscall.Kill(w.wrapperPid(), s); err != nil {
		w.t.Fatal(err)
	}
}

// wait returns the exit status; the wrapper must exit within limit.
func (w *wrapped) wait(limit time.Duration) int {
	w.t.Helper()
	select {
	case <-w.exited:
	case <-time.After(limit):
		w.t.Fatalf("no exit within %s\n%s", limit, w.out.String())
	}
	return w.cmd.ProcessState.ExitCode()
}

// spoolHTTP is what the stopped agent's spool holds for the http sink, as
// `edgerelay spool stat` reads it: its cursor (the last record delivered:
// a stopped spool keeps no count of what it took) and the records still
// pending. A spool without the http sink fails the test, so a pending
// count of 0 is never read from a sink that was not there.
func (w *wrapped) spoolHTTP() (cursor, pending uint64) {
	w.t.Helper()
	out, err := exec.Command(binPath, "spool", "stat", "--json", "--state-dir", w.state).CombinedOutput()
	if err != nil {
		w.t.Fatalf("spool stat: %v\n%s", err, out)
	}
	var st struct {
		Sinks map[string]struct{ Cursor, Pending uint64 }
	}
	if err := json.Unmarshal(out, &st); err != nil {
		w.t.Fatalf("spool stat --json: %v\n%s", err, out)
	}
	h, ok := st.Sinks["http"]
	if !ok {
		w.t.Fatalf("the spool has no http sink:\n%s", out)
	}
	return h.Cursor, h.Pending
}

// stop does act (a signal, a keystroke; nil when the runner ends by
// itself, timed then from the start) and waits at most a minute for the
// wrapper's exit status.
func (w *wrapped) stop(act func()) (status int, took time.Duration) {
	w.t.Helper()
	start := w.started
	if act != nil {
		start = time.Now()
		act()
	}
	status = w.wait(60 * time.Second)
	return status, time.Since(start)
}

// stopAndReadSpool is stop, then what the agent left in its spool for the
// http sink, with the scenario logged.
func (w *wrapped) stopAndReadSpool(name string, act func()) (status int, took time.Duration, cursor, pending uint64) {
	w.t.Helper()
	status, took = w.stop(act)
	cursor, pending = w.spoolHTTP()
	w.report(name, status, took, fmt.Sprintf("%d (delivered through seq %d)", pending, cursor))
	return status, took, cursor, pending
}

// expectDelivered: the agent was told to stop once, and delivered
// everything its spool took for the http sink (something: a cursor past 0,
// so that 0 pending is a count, not an empty spool).
func (w *wrapped) expectDelivered(cursor, pending uint64) {
	w.t.Helper()
	first, second := w.agentSignals()
	expect(w.t, "agent stop signals", [2]int{first, second}, [2]int{1, 0})
	if cursor == 0 {
		w.t.Error("the http sink's cursor is 0: the spool delivered nothing, so 0 pending checks nothing")
	}
	expect(w.t, "pending in the spool", pending, 0)
}

// agentSignals counts the stop signals the agent acted on.
func (w *wrapped) agentSignals() (first, second int) {
	out := w.out.String()
	return strings.Count(out, "signal received; shutting down"), strings.Count(out, "second signal; exiting")
}

func (w *wrapped) runnerSignals() []string {
	var sigs []string
	for _, l := range strings.Split(w.marks(), "\n") {
		if l == "TERM" || l == "INT" || l == "HUP" {
			sigs = append(sigs, l)
		}
	}
	return sigs
}

func (w *wrapped) agentPid() int {
	w.t.Helper()
	m := regexp.MustCompile(`agent started \(pid (\d+)\)`).FindStringSubmatch(w.out.String())
	if m == nil {
		w.t.Fatalf("no agent pid in the output:\n%s", w.out.String())
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// report logs one scenario's outcome in the form the operations notes use.
func (w *wrapped) report(name string, status int, took time.Duration, pending string) {
	first, second := w.agentSignals()
	w.t.Logf("SCENARIO %-38s exit=%-3d runner_signals=%v agent_stop_signals=%d+%d took=%s spool_pending=%s",
		name, status, w.runnerSignals(), first, second, took.Round(10*time.Millisecond), pending)
}

// openPty opens a new terminal: its master side and its terminal.
func openPty(t *testing.T) (master, tty *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, tty
}

// ppid is the parent of pid, from /proc (0 when it is gone).
func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// TestWrapStopDeliversEverything is the container stop with the sink up: the
// runner gets SIGTERM once and posts its last events, the agent takes them,
// then gets one SIGTERM and delivers everything within its 20 s grace. The
// container's status is the runner's; nothing is left in the spool. So with a
// stop timeout the grace fits in (30 s), and with docker's default (10 s),
// where it does not.
func TestWrapStopDeliversEverything(t *testing.T) {
	for _, stop := range []string{"30s", ""} {
		t.Run("stop timeout "+cmp.Or(stop, "default"), func(t *testing.T) {
			sink := newMetricsAPI(t, false, 50*time.Millisecond)
			w := startWrapped(t, wrapOpts{python: true, sink: sink, env: []string{
				"EDGERELAY_ENABLED=true", "EDGERELAY_SHUTDOWN_GRACE=20s", "EDGERELAY_STOP_TIMEOUT=" + stop,
				"START_EVENTS=50", "FINAL_EVENTS=100", "TERM_EXIT=0"}})
			w.waitMark("started")
			w.waitOut("edgerelay running")
			status, _, cursor, pending := w.stopAndReadSpool("python, SIGTERM, sink up, grace 20s, stop "+cmp.Or(stop, "10s"),
				func() { w.signal(syscall.SIGTERM) })
			expect(t, "exit status", status, 0)
			expect(t, "runner signals", w.runnerSignals(), []string{"TERM"})
			expect(t, "the runner's last events accepted", strings.Contains(w.marks(), "posted final 100 202"), true)
			w.expectDelivered(cursor, pending)
			expect(t, "start events delivered", sink.count("start-"), 50)
			expect(t, "final events delivered", sink.count("final-"), 100)
		})
	}
}

// TestWrapSIGINTStopsPythonRunner: the wrapper started as a background job of
// a non-interactive sh, so with SIGINT ignored; SIGINT still reaches the
// Python runner as KeyboardInterrupt, and the status is its death by SIGINT.
func TestWrapSIGINTStopsPythonRunner(t *testing.T) {
	sink := newMetricsAPI(t, false, 0)
	w := startWrapped(t, wrapOpts{python: true, background: true, sink: sink, env: []string{
		"EDGERELAY_ENABLED=true", "EDGERELAY_SHUTDOWN_GRACE=20s", "EDGERELAY_STOP_TIMEOUT=30s", "FINAL_EVENTS=20"}})
	w.waitMark("started")
	w.waitOut("edgerelay running")
	waitForLong(t, "the pid file", func() bool { _, err := os.Stat(w.pidFile); return err == nil })
	status, _, cursor, pending := w.stopAndReadSpool("python, SIGINT, wrapper a background job", func() { w.signal(syscall.SIGINT) })
	expect(t, "exit status (128+SIGINT)", status, 130)
	expect(t, "the runner's SIGINT", strings.Contains(w.marks(), "sigint handled"), true)
	expect(t, "runner signals", w.runnerSignals(), []string{"INT"})
	w.expectDelivered(cursor, pending)
	expect(t, "final events delivered", sink.count("final-"), 20)
}

// TestWrapRunnerExits: the runner ends by itself; the agent gets one SIGTERM
// and delivers; the status is the runner's.
func TestWrapRunnerExits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		python bool
		code   int
	}{{"python exits 0", true, 0}, {"shell exits 3", false, 3}} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newMetricsAPI(t, false, 0)
			w := startWrapped(t, wrapOpts{python: tc.python, sink: sink, env: []string{
				"EDGERELAY_ENABLED=true", "EDGERELAY_SHUTDOWN_GRACE=20s", "EXIT_AFTER_START=" + strconv.Itoa(tc.code),
				"FINAL_EVENTS=30"}})
			status, _, cursor, pending := w.stopAndReadSpool(tc.name+" (from start)", nil)
			expect(t, "exit status", status, tc.code)
			expect(t, "runner signals", len(w.runnerSignals()), 0)
			w.expectDelivered(cursor, pending)
			if tc.python {
				expect(t, "final events delivered", sink.count("final-"), 30)
			}
		})
	}
}

// TestWrapRunnerExitsAtOnce: a runner that ends before the agent is up; the
// agent, stopped while starting, still ends, and the status is the runner's.
// (A SIGTERM that lands before the agent's runtime has installed its signal
// handlers kills it with status 143, before it has opened anything.)
func TestWrapRunnerExitsAtOnce(t *testing.T) {
	w := startWrapped(t, wrapOpts{env: []string{"EDGERELAY_ENABLED=true", "EXIT_AFTER_START=3", "WAIT_SOCKET="}})
	status, took := w.stop(nil)
	w.report("shell exits 3 at once (from start)", status, took, "-")
	expect(t, "exit status", status, 3)
	if out := w.out.String(); !strings.Contains(out, "agent exited with status 0") && !strings.Contains(out, "agent was killed by SIGTERM") {
		t.Errorf("the agent did not stop on its SIGTERM:\n%s", out)
	}
}

// TestWrapShellRunnerSignals: a shell runner through the kept
// runner-entrypoint.sh: SIGHUP reaches both, SIGTERM the runner (exit 3) and
// then the agent once; SIGINT kills a shell runner (130).
func TestWrapShellRunnerSignals(t *testing.T) {
	t.Run("HUP then TERM, through runner-entrypoint.sh", func(t *testing.T) {
		sink := newMetricsAPI(t, false, 0)
		w := startWrapped(t, wrapOpts{entrypoint: true, sink: sink, env: []string{"EDGERELAY_ENABLED=true"}})
		w.waitMark("started")
		w.waitOut("edgerelay running")
		w.signal(syscall.SIGHUP)
		w.waitMark("HUP")
		w.waitOut("reloading secrets")
		status, _, cursor, pending := w.stopAndReadSpool("shell, SIGHUP then SIGTERM (entrypoint)", func() { w.signal(syscall.SIGTERM) })
		expect(t, "exit status", status, 3)
		expect(t, "runner signals", w.runnerSignals(), []string{"HUP", "TERM"})
		expect(t, "agent reloads", strings.Count(w.out.String(), "reloading secrets"), 1)
		w.expectDelivered(cursor, pending)
	})
	t.Run("INT", func(t *testing.T) {
		sink := newMetricsAPI(t, false, 0)
		w := startWrapped(t, wrapOpts{sink: sink, env: []string{"EDGERELAY_ENABLED=true"}})
		w.waitMark("started")
		w.waitOut("edgerelay running")
		status, _, cursor, pending := w.stopAndReadSpool("shell, SIGINT", func() { w.signal(syscall.SIGINT) })
		expect(t, "exit status (128+SIGINT)", status, 130)
		expect(t, "runner signals", w.runnerSignals(), []string{"INT"})
		w.expectDelivered(cursor, pending)
	})
}

// TestWrapAgentOff: disabled or mistyped, the runner runs alone and a line
// says why; the status is the runner's.
func TestWrapAgentOff(t *testing.T) {
	for _, tc := range []struct {
		name, value, line string
	}{
		{"disabled", "false", "EDGERELAY_ENABLED is off; the runner runs alone"},
		{"unset", "", "EDGERELAY_ENABLED is off; the runner runs alone"},
		{"mistyped", "ture", `ERROR: EDGERELAY_ENABLED: "ture" is not a boolean`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := startWrapped(t, wrapOpts{python: true, env: []string{"EDGERELAY_ENABLED=" + tc.value, "AGENT=", "TERM_EXIT=3"}})
			w.waitMark("started")
			w.waitOut(tc.line)
			status, took := w.stop(func() { w.signal(syscall.SIGTERM) })
			w.report("python, agent "+tc.name+", SIGTERM", status, took, "no spool")
			expect(t, "exit status", status, 3)
			expect(t, "runner signals", w.runnerSignals(), []string{"TERM"})
			expect(t, "agent started", strings.Contains(w.out.String(), "agent started"), false)
			if _, err := os.Stat(w.state); err == nil {
				t.Error("an agent that is off created its state directory")
			}
			if tc.name == "mistyped" && !strings.Contains(w.out.String(), "NOT started") {
				t.Errorf("the mistyped switch is not loud:\n%s", w.out.String())
			}
		})
	}
}

// TestWrapAgentFails: an agent that is killed (as by the OOM killer) or
// refuses its configuration never stops the runner: a line says so, the
// runner goes on, and the status is the runner's.
func TestWrapAgentFails(t *testing.T) {
	t.Run("agent killed", func(t *testing.T) {
		sink := newMetricsAPI(t, false, 0)
		w := startWrapped(t, wrapOpts{sink: sink, env: []string{"EDGERELAY_ENABLED=true"}})
		w.waitMark("started")
		w.waitOut("edgerelay running")
		syscall.Kill(w.agentPid(), syscall.SIGKILL)
		w.waitOut("ERROR: the agent was killed by SIGKILL")
		w.signal(syscall.SIGHUP) // the runner is still there
		w.waitMark("HUP")
		// A killed agent's spool is still readable.
		status, _, _, _ := w.stopAndReadSpool("shell, agent killed, SIGTERM", func() { w.signal(syscall.SIGTERM) })
		expect(t, "exit status", status, 3)
		expect(t, "runner signals", w.runnerSignals(), []string{"HUP", "TERM"})
	})
	t.Run("agent refuses its configuration", func(t *testing.T) {
		w := startWrapped(t, wrapOpts{python: true, env: []string{"EDGERELAY_ENABLED=true", "EDGERELAY_SAMPLE_INTERVAL=10ms", "AGENT=", "TERM_EXIT=3"}})
		w.waitMark("started")
		w.waitOut("ERROR: the agent exited with status 2 while the runner runs")
		status, took := w.stop(func() { w.signal(syscall.SIGTERM) })
		w.report("python, agent bad config, SIGTERM", status, took, "no spool")
		expect(t, "exit status", status, 3)
		expect(t, "runner signals", w.runnerSignals(), []string{"TERM"})
	})
	t.Run("bad shutdown grace", func(t *testing.T) {
		// The wrapper reads the grace as the agent does, and says at once
		// that the agent will refuse it; the runner's status stands.
		cmd := exec.Command(binPath, "wrap", "--", "/bin/sh", "-c", "exit 4")
		cmd.Env = append(testenv.Clean(), "EDGERELAY_ENABLED=true", "EDGERELAY_SHUTDOWN_GRACE=soon")
		out, _ := cmd.CombinedOutput()
		expect(t, "exit status", cmd.ProcessState.ExitCode(), 4)
		if !strings.Contains(string(out), `ERROR: EDGERELAY_SHUTDOWN_GRACE: "soon" is not a duration`) ||
			!strings.Contains(string(out), "the agent will refuse it and not start") {
			t.Errorf("not loud: %s", out)
		}
	})
	t.Run("bad stop timeout", func(t *testing.T) {
		cmd := exec.Command(binPath, "wrap", "--stop-timeout=soon", "--", "/bin/sh", "-c", "exit 4")
		cmd.Env = testenv.Clean()
		out, _ := cmd.CombinedOutput()
		expect(t, "exit status", cmd.ProcessState.ExitCode(), 4)
		if !strings.Contains(string(out), `ERROR: --stop-timeout="soon" is not a duration`) {
			t.Errorf("not loud: %s", out)
		}
	})
	t.Run("runner not found", func(t *testing.T) {
		cmd := exec.Command(binPath, "wrap", "--", "/nonexistent/runner")
		cmd.Env = testenv.Clean("EDGERELAY_ENABLED=true")
		out, err := cmd.CombinedOutput()
		expect(t, "exit status", cmd.ProcessState.ExitCode(), 127)
		if err == nil || strings.Contains(string(out), "agent started") {
			t.Errorf("%v\n%s", err, out)
		}
	})
}

// TestWrapStopTimeoutBoundsGrace: the agent's grace never outlasts the
// container's stop timeout. With the sink down and a 20 s grace in a 4 s stop
// timeout, the agent is told to stop at once, then to stop now before the
// timeout, and closes its spool cleanly with the events kept. With a runner
// slow to stop, the agent's grace starts in time while the runner still runs.
func TestWrapStopTimeoutBoundsGrace(t *testing.T) {
	t.Run("sink down, 4s stop timeout", func(t *testing.T) {
		sink := newMetricsAPI(t, true, 0)
		w := startWrapped(t, wrapOpts{sink: sink, env: []string{"EDGERELAY_ENABLED=true", "EDGERELAY_SHUTDOWN_GRACE=20s", "EDGERELAY_STOP_TIMEOUT=4s"}})
		w.waitMark("started")
		w.waitOut("edgerelay running")
		w.waitOut("WARNING: EDGERELAY_SHUTDOWN_GRACE=20s is longer than the stop timeout (4s) allows")
		status, took, _, pending := w.stopAndReadSpool("shell, sink down, grace 20s, stop 4s", func() { w.signal(syscall.SIGTERM) })
		expect(t, "exit status", status, 3)
		first, second := w.agentSignals()
		expect(t, "agent stop signals", [2]int{first, second}, [2]int{1, 1})
		if took > 4*time.Second+4*time.Second {
			t.Errorf("took %s, past the 4 s stop timeout", took)
		}
		if pending == 0 {
			t.Error("the sink was down: the spool should keep the undelivered events")
		}
	})
	t.Run("runner slow to stop", func(t *testing.T) {
		sink := newMetricsAPI(t, false, 0)
		w := startWrapped(t, wrapOpts{python: true, sink: sink, env: []string{"EDGERELAY_ENABLED=true",
			"EDGERELAY_SHUTDOWN_GRACE=1s", "EDGERELAY_STOP_TIMEOUT=5s", "STOP_DELAY=4", "FINAL_EVENTS=10", "TERM_EXIT=0"}})
		w.waitMark("started")
		w.waitOut("edgerelay running")
		status, _, cursor, pending := w.stopAndReadSpool("python slow to stop, grace 1s, stop 5s", func() { w.signal(syscall.SIGTERM) })
		expect(t, "exit status", status, 0)
		out := w.out.String()
		agentStop := strings.Index(out, "the agent's grace must start now")
		runnerExit := strings.Index(out, "runner exited with status 0")
		if agentStop < 0 || runnerExit < 0 || agentStop > runnerExit {
			t.Errorf("the agent's stop did not come before the runner's exit:\n%s", out)
		}
		w.expectDelivered(cursor, pending)
		expect(t, "final events delivered", sink.count("final-"), 10)
	})
}

// TestWrapCtrlCInTerminal: under a terminal (docker run -it), the runner's
// group is the terminal's foreground: Ctrl-C reaches the Python runner once,
// straight from the terminal, and the agent (its own group) only gets its one
// SIGTERM when the runner has exited.
func TestWrapCtrlCInTerminal(t *testing.T) {
	sink := newMetricsAPI(t, false, 0)
	w := startWrapped(t, wrapOpts{python: true, tty: true, sink: sink, env: []string{
		"EDGERELAY_ENABLED=true", "EDGERELAY_SHUTDOWN_GRACE=20s", "EDGERELAY_STOP_TIMEOUT=30s", "FINAL_EVENTS=20"}})
	w.waitMark("started")
	w.waitOut("edgerelay running")
	status, _, cursor, pending := w.stopAndReadSpool("python, Ctrl-C on its terminal", func() { w.pty.Write([]byte{3}) }) // Ctrl-C
	expect(t, "exit status (128+SIGINT)", status, 130)
	expect(t, "runner signals", w.runnerSignals(), []string{"INT"})
	w.expectDelivered(cursor, pending)
	expect(t, "final events delivered", sink.count("final-"), 20)
}

// TestWrapReapsOrphans: a process the runner leaves behind is reparented to
// the wrapper (PID 1 in a container, a child subreaper elsewhere), and reaped
// when it dies: no zombie.
func TestWrapReapsOrphans(t *testing.T) {
	orphanFile := filepath.Join(t.TempDir(), "orphan")
	w := startWrapped(t, wrapOpts{env: []string{"ORPHAN_PID_FILE=" + orphanFile}})
	w.waitMark("started")
	var orphan int
	waitForLong(t, "the orphan's pid", func() bool {
		b, _ := os.ReadFile(orphanFile)
		orphan, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return orphan > 0
	})
	t.Cleanup(func() { syscall.Kill(orphan, syscall.SIGKILL) })
	waitForLong(t, "the orphan to be the wrapper's", func() bool { return ppid(orphan) == w.wrapperPid() })
	syscall.Kill(orphan, syscall.SIGKILL)
	waitForLong(t, "the orphan to be reaped", func() bool { return ppid(orphan) == 0 })
	status, _ := w.stop(func() { w.signal(syscall.SIGTERM) })
	expect(t, "exit status", status, 3)
	if !strings.Contains(w.out.String(), "orphaned processes reaped: 1") {
		t.Errorf("no orphan reaped:\n%s", w.out.String())
	}
}
