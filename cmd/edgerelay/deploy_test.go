package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDeploySystemdUnit checks the unit's required directives, and has
// systemd-analyze verify it when the tool is installed (.ci/run installs it).
func TestDeploySystemdUnit(t *testing.T) {
	unit, err := os.ReadFile(repoFile(t, "systemd/edgerelay.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{
		"Type=notify", "WatchdogSec=", "Restart=on-failure", "EnvironmentFile=-/etc/edgerelay/edgerelay.env",
		"StateDirectory=edgerelay", "RuntimeDirectory=edgerelay", "DeviceAllow=/dev/nvidiactl rw",
		"DeviceAllow=/dev/nvidia-uvm rw", "DeviceAllow=char-nvidia-frontend rw", "NoNewPrivileges=yes",
		"ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "CapabilityBoundingSet=\n", "MemoryMax=",
	} {
		if !bytes.Contains(unit, []byte(d)) {
			t.Errorf("unit lacks %q", d)
		}
	}
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze is missing in CI; .ci/run installs Debian's systemd package")
		}
		t.Log("systemd-analyze not installed: directives checked, verify not run")
		return
	}
	dir := t.TempDir()
	fixed := strings.ReplaceAll(string(unit), "/usr/local/bin/edgerelay", binPath)
	path := filepath.Join(dir, "edgerelay.service")
	os.WriteFile(path, []byte(fixed), 0o644)
	out, err := exec.Command(tool, "verify", path).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("edgerelay.service")) {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestDeployMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is required (.ci/run installs it)")
	}
	dest := t.TempDir()
	cmd := exec.Command("make", "-C", repoFile(t, ""), "install", "DESTDIR="+dest, "BIN="+filepath.Join(t.TempDir(), "edgerelay"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, f := range []string{"usr/local/bin/edgerelay", "etc/systemd/system/edgerelay.service", "etc/edgerelay/edgerelay.env", "usr/local/lib/edgerelay/runner-entrypoint.sh"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("not installed: %s", f)
		}
	}
}

// TestValidateCorpus runs `edgerelay validate` on the telemetry corpus, as a
// user would, and compares its report with the expected one.
func TestValidateCorpus(t *testing.T) {
	dir := repoFile(t, "agent/telemetry")
	files, _ := filepath.Glob(filepath.Join(dir, "testdata/validate/*"))
	var args []string
	for _, f := range files {
		base := filepath.Base(f)
		if strings.HasPrefix(base, "expected") {
			continue
		}
		rel, _ := filepath.Rel(dir, f)
		args = append(args, rel)
	}
	cmd := exec.Command(binPath, append([]string{"validate"}, args...)...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1 (invalid records present); stderr %s", err, stderr.String())
	}
	want, err := os.ReadFile(filepath.Join(dir, "testdata/validate/expected.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if stdout.String() != string(want) {
		t.Errorf("report differs:\n--- got\n%s--- want\n%s", stdout.String(), want)
	}
	// A valid file alone exits 0 and prints nothing.
	ok := exec.Command(binPath, "validate", "testdata/validate/valid_array.json")
	ok.Dir = dir
	if out, err := ok.CombinedOutput(); err != nil || len(out) != 0 {
		t.Errorf("valid file: %v %q", err, out)
	}
}

// expect compares got and want as printed.
func expect(t *testing.T, what string, got, want any) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}

// notifyMsg is one sd_notify datagram as the service manager sees it.
type notifyMsg struct {
	pid   int32 // the sender, from SCM_CREDENTIALS
	state string
}

// fakeManager is the service manager's side of NOTIFY_SOCKET: it reads each
// datagram with the sender's credentials, and answers BARRIER=1 by closing
// the file descriptor sent with it, as systemd does, after barrierDelay.
type fakeManager struct {
	path         string
	barrierDelay time.Duration
	mu           sync.Mutex
	msgs         []notifyMsg
	barrierDone  time.Time // when the last barrier was answered
}

func newFakeManager(t *testing.T, barrierDelay time.Duration) *fakeManager {
	t.Helper()
	dir, err := os.MkdirTemp("", "nfy") // short: a socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	m := &fakeManager{path: filepath.Join(dir, "notify"), barrierDelay: barrierDelay}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: m.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	raw, _ := conn.SyscallConn()
	raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			msg := notifyMsg{state: string(buf[:n])}
			var fds []int
			cmsgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, c := range cmsgs {
				if cred, err := unix.ParseUnixCredentials(&c); err == nil {
					msg.pid = cred.Pid
				}
				if rights, err := unix.ParseUnixRights(&c); err == nil {
					fds = append(fds, rights...)
				}
			}
			m.mu.Lock()
			m.msgs = append(m.msgs, msg)
			m.mu.Unlock()
			if len(fds) > 0 {
				if msg.state == "BARRIER=1" {
					time.Sleep(m.barrierDelay)
				}
				for _, fd := range fds {
					unix.Close(fd)
				}
				m.mu.Lock()
				m.barrierDone = time.Now()
				m.mu.Unlock()
			}
		}
	}()
	return m
}

func (m *fakeManager) messages() []notifyMsg {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]notifyMsg(nil), m.msgs...)
}

// has reports whether pid sent a message with the line (or line prefix).
func (m *fakeManager) has(pid int, line string) bool {
	for _, msg := range m.messages() {
		if msg.pid != int32(pid) {
			continue
		}
		for _, l := range strings.Split(msg.state, "\n") {
			if l == line || (strings.HasSuffix(line, "*") && strings.HasPrefix(l, strings.TrimSuffix(line, "*"))) {
				return true
			}
		}
	}
	return false
}

// unitRules are the directives of systemd/edgerelay.service that decide what
// systemd makes of the main process's end.
type unitRules struct {
	typ, notifyAccess, restart string
	success, preventRestart    []string
}

func readUnitRules(t *testing.T) unitRules {
	t.Helper()
	b, err := os.ReadFile(repoFile(t, "systemd/edgerelay.service"))
	if err != nil {
		t.Fatal(err)
	}
	u := unitRules{restart: "no", notifyAccess: "none"}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		switch k {
		case "Type":
			u.typ = v
		case "NotifyAccess":
			u.notifyAccess = v
		case "Restart":
			u.restart = v
		case "SuccessExitStatus":
			u.success = append(u.success, strings.Fields(v)...)
		case "RestartPreventExitStatus":
			u.preventRestart = append(u.preventRestart, strings.Fields(v)...)
		}
	}
	return u
}

// outcome applies systemd's rules to how the main process ended, given
// whether it sent READY=1 (from the main pid, as NotifyAccess=main demands):
//
//   - systemd.service(5), SuccessExitStatus=: a clean exit is 0, the listed
//     statuses, and (Type≠oneshot) death by SIGHUP, SIGINT, SIGTERM, SIGPIPE.
//   - src/core/service.c, service_sigchld_event(): a Type=notify main process
//     that exits before READY=1 fails the unit with result "protocol", even
//     with a clean exit ("only enter running through a notification").
//   - systemd.service(5), Restart=on-failure: restart unless the result is
//     success; RestartPreventExitStatus= statuses are never restarted.
//   - A unit whose result is success ends inactive, any other ends failed.
func (u unitRules) outcome(ready bool, ps *os.ProcessState) (state, result string, restart bool) {
	ws := ps.Sys().(syscall.WaitStatus)
	status := strconv.Itoa(ws.ExitStatus())
	if ws.Signaled() {
		status = unix.SignalName(ws.Signal())
	}
	clean := status == "0" || slices.Contains(u.success, status) ||
		slices.Contains([]string{"SIGHUP", "SIGINT", "SIGTERM", "SIGPIPE"}, status)
	switch {
	case !clean && ws.Signaled():
		result = "signal"
	case !clean:
		result = "exit-code"
	case u.typ == "notify" && !ready:
		result = "protocol"
	default:
		result = "success"
	}
	switch u.restart {
	case "always":
		restart = true
	case "on-success":
		restart = result == "success"
	case "on-failure":
		restart = result != "success"
	}
	if slices.Contains(u.preventRestart, status) {
		restart = false
	}
	state = "failed"
	if result == "success" {
		state = "inactive"
	}
	return state, result, restart
}

// runUnderNotify runs `edgerelay run` as the unit's main process would be:
// with NOTIFY_SOCKET (and a watchdog), under a fake manager.
func runUnderNotify(t *testing.T, m *fakeManager, env []string, args ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(binPath, append([]string{"run"}, args...)...)
	cmd.Dir = t.TempDir()
	cmd.Env = cleanEnv(append([]string{"NOTIFY_SOCKET=" + m.path, "WATCHDOG_USEC=400000", "GORACE=atexit_sleep_ms=0"}, env...)...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, out
}

// TestDeployNotifyRules checks the rules above on the failure that the
// disabled agent used to cause: exit 0 before READY=1 is "protocol", failed,
// and restarted every RestartSec.
func TestDeployNotifyRules(t *testing.T) {
	u := readUnitRules(t)
	if u.typ != "notify" || u.notifyAccess != "main" || u.restart != "on-failure" {
		t.Fatalf("unit rules %+v", u)
	}
	exit0 := exec.Command("/bin/sh", "-c", "exit 0")
	exit0.Run()
	state, result, restart := u.outcome(false, exit0.ProcessState)
	expect(t, "exit 0 before READY=1", []any{state, result, restart}, []any{"failed", "protocol", true})
	exit2 := exec.Command("/bin/sh", "-c", "exit 2")
	exit2.Run()
	state, result, restart = u.outcome(false, exit2.ProcessState)
	expect(t, "exit 2", []any{state, result, restart}, []any{"failed", "exit-code", false})
}

// TestDisabledUnderSystemd: EDGERELAY_ENABLED=false under the unit's notify
// rules: READY=1 and STATUS=disabled from the main pid, the exit waits for
// the manager to have read them (BARRIER=1), exit 0: the unit ends inactive,
// with result success, and is not restarted.
func TestDisabledUnderSystemd(t *testing.T) {
	u := readUnitRules(t)
	m := newFakeManager(t, 300*time.Millisecond)
	cmd, out := runUnderNotify(t, m, []string{"EDGERELAY_ENABLED=false"})
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, out.String())
	}
	exited := time.Now()
	pid := cmd.Process.Pid
	ready := m.has(pid, "READY=1")
	expect(t, "READY=1 from the main pid", ready, true)
	expect(t, "STATUS=disabled from the main pid", m.has(pid, "STATUS=disabled*"), true)
	m.mu.Lock()
	answered := m.barrierDone
	m.mu.Unlock()
	if answered.IsZero() || answered.After(exited) {
		t.Errorf("the exit did not wait for the manager's answer to BARRIER=1 (answered %v, exited %v)", answered, exited)
	}
	state, result, restart := u.outcome(ready, cmd.ProcessState)
	t.Logf("EDGERELAY_ENABLED=false: exit %d, messages %+v: unit %s (result %s), restart %v\n%s",
		cmd.ProcessState.ExitCode(), m.messages(), state, result, restart, out.String())
	expect(t, "unit", []any{state, result, restart}, []any{"inactive", "success", false})
}

// TestDisabledMistypedIsAnError: a switch that is not a boolean is exit 2
// naming the variable (or flag) and the value, never "off"; under the unit
// it fails without a restart.
func TestDisabledMistypedIsAnError(t *testing.T) {
	u := readUnitRules(t)
	for _, tc := range []struct {
		env, args []string
		name      string
	}{
		{[]string{"EDGERELAY_ENABLED=ture"}, nil, `EDGERELAY_ENABLED: "ture" is not a boolean`},
		{nil, []string{"--enabled=ture"}, `--enabled: "ture" is not a boolean`},
	} {
		m := newFakeManager(t, 0)
		cmd, out := runUnderNotify(t, m, tc.env, tc.args...)
		cmd.Wait()
		state, result, restart := u.outcome(m.has(cmd.Process.Pid, "READY=1"), cmd.ProcessState)
		t.Logf("%v%v: exit %d, %q: unit %s (result %s), restart %v", tc.env, tc.args, cmd.ProcessState.ExitCode(),
			strings.TrimSpace(out.String()), state, result, restart)
		expect(t, "exit status", cmd.ProcessState.ExitCode(), 2)
		if !strings.Contains(out.String(), tc.name) {
			t.Errorf("the message does not name the switch and the value: %q", out.String())
		}
		expect(t, "unit", []any{state, result, restart}, []any{"failed", "exit-code", false})
	}
}

// TestDeployEnabledUnderSystemd: enabled, the main process sends READY=1,
// STATUS= and watchdog pings; SIGTERM (systemctl stop) brings STOPPING=1 and
// exit 0: inactive, not restarted.
func TestDeployEnabledUnderSystemd(t *testing.T) {
	u := readUnitRules(t)
	m := newFakeManager(t, 0)
	dir := t.TempDir()
	cmd, out := runUnderNotify(t, m, []string{"EDGERELAY_ENABLED=true", "EDGERELAY_LISTEN=" + freePort(t),
		"EDGERELAY_STATE_DIR=" + filepath.Join(dir, "state"), "EDGERELAY_SOCKET=" + filepath.Join(dir, "s.sock"),
		"EDGERELAY_NVML=off", "EDGERELAY_STATUS_INTERVAL=1h", "EDGERELAY_STDOUT=off"})
	pid := cmd.Process.Pid
	waitFor(t, "READY=1", func() bool { return m.has(pid, "READY=1") })
	waitFor(t, "a watchdog ping", func() bool { return m.has(pid, "WATCHDOG=1") })
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, out.String())
	}
	expect(t, "STOPPING=1", m.has(pid, "STOPPING=1"), true)
	state, result, restart := u.outcome(true, cmd.ProcessState)
	expect(t, "unit", []any{state, result, restart}, []any{"inactive", "success", false})
}
