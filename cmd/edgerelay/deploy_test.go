package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/internal/testenv"

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
// systemd-analyze verify it and rate its exposure when the tool is installed
// (.ci/run installs it).
func TestDeploySystemdUnit(t *testing.T) {
	unit, err := os.ReadFile(repoFile(t, "systemd/edgerelay.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{
		"Type=notify", "NotifyAccess=main", "WatchdogSec=", "Restart=on-failure", "RestartPreventExitStatus=2",
		"EnvironmentFile=-/etc/edgerelay/edgerelay.env", "Environment=EDGERELAY_ENV_FILE=/etc/edgerelay/edgerelay.env",
		"SupplementaryGroups=video edgerelay-config", "Documentation=file:///usr/local/share/doc/edgerelay/OPERATIONS.md",
		"StateDirectory=edgerelay", "RuntimeDirectory=edgerelay", "DeviceAllow=/dev/nvidiactl rw",
		"DeviceAllow=/dev/nvidia-uvm rw", "DeviceAllow=char-nvidia-frontend rw", "NoNewPrivileges=yes",
		"ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "CapabilityBoundingSet=\n", "MemoryMax=",
	} {
		if !bytes.Contains(unit, []byte(d)) {
			t.Errorf("unit lacks %q", d)
		}
	}
	verifyUnit(t, strings.ReplaceAll(string(unit), "/usr/local/bin/edgerelay", binPath))
}

// systemdAnalyze is the path of systemd-analyze, or "" (and a loud log) when
// it is not installed; CI must have it.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze is missing in CI; .ci/run installs Debian's systemd package")
		}
		t.Log("SKIPPED: systemd-analyze is not installed: the unit was not verified nor rated (apt-get install systemd)")
		return ""
	}
	return tool
}

// maxExposure is the unit's `systemd-analyze security` rating, which must not
// get worse.
const maxExposure = 2.1

// verifyUnit has systemd-analyze verify a unit's text (its ExecStart= binary
// must exist) and rate its exposure offline.
func verifyUnit(t *testing.T, text string) {
	t.Helper()
	tool := systemdAnalyze(t)
	if tool == "" {
		return
	}
	path := filepath.Join(t.TempDir(), "edgerelay.service")
	os.WriteFile(path, []byte(text), 0o644)
	out, err := exec.Command(tool, "verify", path).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("edgerelay.service")) {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(tool, "security", "--offline=yes", path).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for edgerelay\.service: (\d+\.\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security --offline=yes: %v, no rating in:\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %.1f (at most %.1f)", score, maxExposure)
	if score > maxExposure {
		t.Errorf("exposure %.1f is worse than %.1f", score, maxExposure)
	}
}

// TestDeployMakeInstall installs into a DESTDIR, as a package build would,
// and checks what the unit and the documents point at: paths, modes, the
// group that lets the service (and nobody else) read its configuration, and
// that a second install keeps an edited configuration.
func TestDeployMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is required (.ci/run installs it)")
	}
	// An existing group stands for edgerelay-config, which the install creates
	// only on a real (DESTDIR-less) install.
	var group *user.Group
	for _, name := range []string{"nogroup", "daemon", "adm"} {
		if g, err := user.LookupGroup(name); err == nil {
			group = g
			break
		}
	}
	if group == nil {
		t.Fatal("none of the groups nogroup, daemon, adm exists")
	}
	dest, bin := t.TempDir(), filepath.Join(t.TempDir(), "edgerelay")
	install := func() string {
		cmd := exec.Command("make", "-C", repoFile(t, ""), "install", "DESTDIR="+dest, "BIN="+bin, "CONFIG_GROUP="+group.Name)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
		return string(out)
	}
	install()
	for f, mode := range map[string]os.FileMode{
		"usr/local/bin/edgerelay":                      0o755,
		"usr/local/lib/edgerelay/runner-entrypoint.sh": 0o755,
		"etc/systemd/system/edgerelay.service":         0o644,
		"etc/sysusers.d/edgerelay.conf":                0o644,
		"etc/edgerelay/edgerelay.env":                  0o640,
		"usr/local/share/doc/edgerelay/OPERATIONS.md":  0o644,
		"usr/local/share/doc/edgerelay/README.md":      0o644,
		"usr/local/share/doc/edgerelay/BENCHMARKS.md":  0o644,
		"usr/local/share/doc/edgerelay/edgerelay.env":  0o644,
	} {
		st, err := os.Stat(filepath.Join(dest, f))
		if err != nil {
			t.Errorf("not installed: %s", f)
			continue
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", f, st.Mode().Perm(), mode)
		}
	}
	// The configuration: root's, readable by the group the service has, by no
	// one else.
	env := filepath.Join(dest, "etc/edgerelay/edgerelay.env")
	if st, err := os.Stat(env); err == nil {
		sys := st.Sys().(*syscall.Stat_t)
		if strconv.Itoa(int(sys.Gid)) != group.Gid || sys.Uid != uint32(os.Getuid()) || st.Mode().Perm()&0o007 != 0 {
			t.Errorf("edgerelay.env: uid %d gid %d mode %v, want ours, group %s (%s), nothing for others", sys.Uid, sys.Gid, st.Mode().Perm(), group.Name, group.Gid)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "etc/systemd/system/edgerelay.service"))
	sysusers, _ := os.ReadFile(filepath.Join(dest, "etc/sysusers.d/edgerelay.conf"))
	if !bytes.Contains(unit, []byte("SupplementaryGroups=video "+group.Name+"\n")) || !bytes.Contains(sysusers, []byte("\ng "+group.Name+" -\n")) {
		t.Errorf("the unit's supplementary group and the sysusers.d group differ from %s:\n%s\n%s", group.Name, unit, sysusers)
	}
	// What the unit points at is installed.
	for _, re := range []string{`(?m)^Documentation=file://(\S+)$`, `(?m)^ExecStart=(\S+) run$`} {
		m := regexp.MustCompile(re).FindSubmatch(unit)
		if m == nil {
			t.Errorf("no %s in the installed unit", re)
			continue
		}
		if _, err := os.Stat(filepath.Join(dest, string(m[1]))); err != nil {
			t.Errorf("the unit points at %s, which is not installed", m[1])
		}
	}
	verifyUnit(t, strings.ReplaceAll(string(unit), "/usr/local/bin/edgerelay", filepath.Join(dest, "usr/local/bin/edgerelay")))

	// An edited configuration survives a second install.
	os.WriteFile(env, []byte("EDGERELAY_ENABLED=true\n"), 0o600)
	out := install()
	if b, _ := os.ReadFile(env); string(b) != "EDGERELAY_ENABLED=true\n" || !strings.Contains(out, "kept "+env) {
		t.Errorf("the second install did not keep the edited configuration: %q\n%s", b, out)
	}
	if st, _ := os.Stat(env); st.Mode().Perm() != 0o640 {
		t.Errorf("the second install left edgerelay.env %v", st.Mode().Perm())
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
	cmd.Env = testenv.Clean(append([]string{"NOTIFY_SOCKET=" + m.path, "WATCHDOG_USEC=400000", "GORACE=atexit_sleep_ms=0"}, env...)...)
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
	cmd, out := runUnderNotify(t, m, []string{"EDGERELAY_ENABLED=true", "EDGERELAY_LISTEN=" + testenv.FreeAddr(t),
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

// TestDeployDocsCommands checks the shell commands of the README and the
// operations guide as written: a Go build carries the cgo flags, a make
// target exists, and an edgerelay command is one the binary has.
func TestDeployDocsCommands(t *testing.T) {
	makefile, err := os.ReadFile(repoFile(t, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-z][\w-]*):`).FindAllSubmatch(makefile, -1) {
		targets[string(m[1])] = true
	}
	help, _ := exec.Command(binPath, "help").Output()
	checked := 0
	for _, doc := range []string{"README.md", "docs/OPERATIONS.md"} {
		b, err := os.ReadFile(repoFile(t, doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, block := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllSubmatch(b, -1) {
			for _, line := range strings.Split(string(block[1]), "\n") {
				line, _, _ = strings.Cut(line, " #")
				if strings.HasPrefix(strings.TrimSpace(line), "#") {
					continue
				}
				if regexp.MustCompile(`\bgo (run|build|test)\b`).MatchString(line) && !strings.Contains(line, "CGO_CFLAGS=") {
					t.Errorf("%s: %q builds without the cgo flags (use make, or set them)", doc, line)
				}
				for _, seg := range regexp.MustCompile(`&&|\||;`).Split(line, -1) {
					f := strings.Fields(seg)
					if len(f) > 0 && f[0] == "sudo" {
						f = f[1:]
					}
					if len(f) == 0 {
						continue
					}
					switch {
					case f[0] == "make":
						for _, a := range f[1:] {
							if !strings.Contains(a, "=") && !targets[a] {
								t.Errorf("%s: %q: no make target %q", doc, line, a)
							}
						}
						checked++
					case filepath.Base(f[0]) == "edgerelay":
						if len(f) < 2 || !strings.Contains(string(help), "\n  "+f[1]+" ") {
							t.Errorf("%s: %q: not an edgerelay command", doc, line)
						}
						checked++
					}
				}
			}
		}
	}
	if checked < 5 {
		t.Errorf("only %d commands found in the documents' sh blocks", checked)
	}
}
