package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livepeer/edgerelay/agent"
)

func init() { extraCommands["wrap"] = cmdWrap }

const wrapUsage = `usage: edgerelay wrap [--stop-timeout D] [--] <runner command> [args...]

The init of a runner container: runs the runner's command and, when
EDGERELAY_ENABLED is true, the agent ('edgerelay run') beside it.

  - SIGTERM and SIGINT go to the runner, once each. The agent keeps taking
    the runner's last events until the runner has exited; then it gets one
    SIGTERM and EDGERELAY_SHUTDOWN_GRACE to deliver, within the stop timeout.
  - SIGHUP goes to both.
  - The exit status is the runner's (128+n when it died of signal n; 127 when
    it cannot be found, 126 when it cannot be run).
  - Orphaned processes are reaped.
  - EDGERELAY_ENABLED off, a value that is not a boolean, or an agent that
    fails: the runner runs alone, and a line on stderr says why.

flags:
`

const (
	// defaultStopTimeout is docker's: SIGKILL follows SIGTERM after 10 s.
	defaultStopTimeout = 10 * time.Second
	// closeMargin is kept at the end of the stop timeout for the agent to
	// stop its sinks and close its spool once told to stop without waiting.
	closeMargin = 2 * time.Second
)

// child is a process the wrapper started and alone reaps. Signals are sent
// and exits reaped by the wrapper's one loop, so a pid is never signalled
// after it was reaped (and possibly reused).
type child struct {
	name     string
	pid      int
	started  time.Time
	done     bool
	status   syscall.WaitStatus
	stopSent bool // the agent was sent its SIGTERM
}

func (c *child) alive() bool { return c != nil && !c.done }

// exitCode is the shell's convention: the exit status, or 128+n for a
// death by signal n.
func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func describeExit(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return fmt.Sprintf("was killed by %s (status %d)", signalName(ws.Signal()), exitCode(ws))
	}
	return fmt.Sprintf("exited with status %d", ws.ExitStatus())
}

func signalName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return s.String()
}

type wrapper struct {
	stderr      io.Writer
	runner      *child
	agent       *child
	stopTimeout time.Duration
	grace       time.Duration
	foreground  bool // the runner's process group owns the terminal
	orphans     int
}

func (w *wrapper) say(format string, args ...any) {
	fmt.Fprintf(w.stderr, "edgerelay wrap: "+format+"\n", args...)
}

func (w *wrapper) signal(c *child, s syscall.Signal) {
	if !c.alive() {
		return
	}
	if err := syscall.Kill(c.pid, s); err != nil {
		w.say("cannot send %s to the %s (pid %d): %v", signalName(s), c.name, c.pid, err)
		return
	}
	w.say("sent %s to the %s (pid %d)", signalName(s), c.name, c.pid)
}

// stopAgent sends the agent its one SIGTERM: it stops intake and gives its
// sinks the grace period. A second one would cut that short, so it is sent
// only by the deadline.
func (w *wrapper) stopAgent() {
	if !w.agent.alive() || w.agent.stopSent {
		return
	}
	w.agent.stopSent = true
	w.signal(w.agent, syscall.SIGTERM)
}

// reap collects every exited child: the runner, the agent, and orphans
// reparented to the wrapper (it is PID 1, or a child subreaper).
func (w *wrapper) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		var c *child
		switch {
		case w.runner != nil && pid == w.runner.pid:
			c = w.runner
		case w.agent != nil && pid == w.agent.pid:
			c = w.agent
		default:
			w.orphans++
			continue
		}
		c.done, c.status = true, ws
		took := time.Since(c.started).Round(time.Millisecond)
		switch {
		case c == w.runner:
			w.say("runner %s, %s after it started", describeExit(ws), took)
			w.restoreTerminal()
		case w.runner.alive() && !c.stopSent:
			w.say("ERROR: the agent %s while the runner runs; the runner goes on without it (see the agent's log above)", describeExit(ws))
		default:
			w.say("agent %s", describeExit(ws))
		}
	}
}

// restoreTerminal takes the terminal back from the runner's process group,
// so that a Ctrl-C during the agent's grace reaches the wrapper.
func (w *wrapper) restoreTerminal() {
	if !w.foreground {
		return
	}
	w.foreground = false
	signal.Ignore(syscall.SIGTTOU) // a background group may set the foreground only so
	defer signal.Reset(syscall.SIGTTOU)
	unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, syscall.Getpgrp())
}

func cmdWrap(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("edgerelay wrap", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() { fmt.Fprint(stderr, wrapUsage); fset.PrintDefaults() }
	stopFlag := fset.String("stop-timeout", "", "the container's stop timeout, from the stop signal to SIGKILL (env EDGERELAY_STOP_TIMEOUT; default 10s, docker's default)")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	argv := fset.Args()
	if len(argv) == 0 {
		fset.Usage()
		return 2
	}
	w := &wrapper{stderr: stderr, stopTimeout: defaultStopTimeout}

	// Bad values of the wrapper's own settings fall back to the defaults,
	// loudly: the runner is never held back by the sidecar.
	name, v := "--stop-timeout", *stopFlag
	if v == "" {
		name, v = "EDGERELAY_STOP_TIMEOUT", os.Getenv("EDGERELAY_STOP_TIMEOUT")
	}
	if v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 2*closeMargin {
			w.say("ERROR: %s=%q is not a duration of at least %s; using %s", name, v, 2*closeMargin, defaultStopTimeout)
		} else {
			w.stopTimeout = d
		}
	}
	// The grace is the agent's setting, read as the agent reads it; a
	// value it refuses stops the agent at its start (the runner runs alone).
	if d, err := agent.ShutdownGrace(os.Getenv); err != nil {
		w.say("ERROR: %v; the agent will refuse it and not start", err)
	} else {
		w.grace = d
	}

	path, err := exec.LookPath(argv[0])
	if err != nil {
		w.say("ERROR: cannot run the runner %q: %v", argv[0], err)
		if errors.Is(err, fs.ErrPermission) {
			return 126
		}
		return 127
	}

	// Orphans of the runner are reparented to us and reaped, even when the
	// wrapper is not PID 1 (under docker --init, or by hand).
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	defer signal.Stop(chld)

	enabled, err := agent.Enabled(os.Getenv)
	switch {
	case err != nil:
		w.say("ERROR: %v; the agent is NOT started, the runner runs alone", err)
	case !enabled:
		w.say("EDGERELAY_ENABLED is off; the runner runs alone (set EDGERELAY_ENABLED=true to run the agent beside it)")
	default:
		w.agent = w.startAgent()
	}
	if w.agent != nil && w.grace > w.stopTimeout-closeMargin {
		w.say("WARNING: EDGERELAY_SHUTDOWN_GRACE=%s is longer than the stop timeout (%s) allows: on a stop the agent gets at most %s; raise the container's stop timeout and EDGERELAY_STOP_TIMEOUT together",
			w.grace, w.stopTimeout, w.stopTimeout-closeMargin)
	}

	if err := w.startRunner(path, argv); err != nil {
		w.say("ERROR: cannot start the runner %q: %v", argv[0], err)
		w.stopAgent()
		w.loop(sigs, chld)
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENOEXEC) {
			return 126
		}
		return 127
	}
	w.loop(sigs, chld)
	if w.orphans > 0 {
		w.say("orphaned processes reaped: %d", w.orphans)
	}
	return exitCode(w.runner.status)
}

func (w *wrapper) startAgent() *child {
	exe, err := os.Executable()
	if err != nil {
		w.say("ERROR: cannot find the edgerelay binary (%v); the agent is NOT started, the runner runs alone", err)
		return nil
	}
	// Its own process group: a Ctrl-C on the terminal does not reach it
	// beside the wrapper's own SIGTERM, which would count as a second signal.
	pid, err := syscall.ForkExec(exe, []string{exe, "run"}, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		w.say("ERROR: cannot start the agent (%v); the runner runs alone", err)
		return nil
	}
	w.say("agent started (pid %d)", pid)
	return &child{name: "agent", pid: pid, started: time.Now()}
}

// startRunner starts the runner in its own process group. When the wrapper's
// group is the foreground of a terminal on stdin (docker run -it), the
// runner's group takes its place, as a shell would do: Ctrl-C reaches the
// runner (and its children) straight from the terminal, once, and it can
// read the terminal. Signal handlers are reset to the default on exec, so a
// wrapper started with SIGINT ignored (a background job of a
// non-interactive shell) still gives the runner a working SIGINT.
func (w *wrapper) startRunner(path string, argv []string) error {
	attr := &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}, Sys: &syscall.SysProcAttr{Setpgid: true}}
	if pg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP); err == nil && pg == syscall.Getpgrp() {
		attr.Sys.Foreground, attr.Sys.Ctty = true, 0
	}
	pid, err := syscall.ForkExec(path, argv, attr)
	if err != nil && attr.Sys.Foreground {
		// The terminal is not the wrapper's controlling terminal.
		attr.Sys.Foreground = false
		pid, err = syscall.ForkExec(path, argv, attr)
	}
	if err != nil {
		return err
	}
	w.foreground = attr.Sys.Foreground
	w.runner = &child{name: "runner", pid: pid, started: time.Now()}
	return nil
}

// loop forwards signals and reaps children until the runner and the agent
// have both exited.
//
// The agent's stop: when the runner has exited, it gets one SIGTERM (its
// grace starts). When a stop signal arrives first, the runner gets it and the
// agent keeps taking the runner's last events; it is sent its SIGTERM no
// later than its grace before the deadline (the stop timeout less a margin
// to close the spool), or halfway to the deadline when the grace is longer
// than that. At the deadline an agent still delivering gets a second SIGTERM
// (stop now, close the spool), and SIGKILL one margin later.
func (w *wrapper) loop(sigs, chld <-chan os.Signal) {
	var deadline, agentStopAt time.Time
	stopAgentTimer := time.NewTimer(time.Hour)
	stopAgentTimer.Stop()
	abortTimer := time.NewTimer(time.Hour)
	abortTimer.Stop()
	killTimer := time.NewTimer(time.Hour)
	killTimer.Stop()
	defer func() { stopAgentTimer.Stop(); abortTimer.Stop(); killTimer.Stop() }()
	// setDeadline brings the deadline forward to d (never later).
	setDeadline := func(d time.Time) {
		if !deadline.IsZero() && !d.Before(deadline) {
			return
		}
		deadline = d
		abortTimer.Reset(time.Until(d))
		killTimer.Reset(time.Until(d.Add(closeMargin)))
	}
	runnerWasAlive := true // a runner that failed to start counts as exited
	w.reap()
	for w.runner.alive() || w.agent.alive() {
		if runnerWasAlive && !w.runner.alive() {
			runnerWasAlive = false
			if w.agent.alive() {
				w.stopAgent()
				setDeadline(time.Now().Add(w.grace + closeMargin))
			}
			continue
		}
		select {
		case <-chld:
			w.reap()
		case s := <-sigs:
			sig := s.(syscall.Signal)
			if sig == syscall.SIGHUP {
				w.signal(w.runner, sig)
				w.signal(w.agent, sig)
				continue
			}
			w.signal(w.runner, sig)
			if !w.agent.alive() {
				continue
			}
			now := time.Now()
			setDeadline(now.Add(w.stopTimeout - closeMargin))
			if w.runner.alive() && !w.agent.stopSent {
				// The runner's stop and the agent's grace share the time
				// left: the agent is told when only its grace is left, but
				// not before half of the time, so that a runner's last
				// events still find it taking them.
				left := deadline.Sub(now)
				at := now.Add(max(left-w.grace, left/2))
				if agentStopAt.IsZero() || at.Before(agentStopAt) {
					agentStopAt = at
					stopAgentTimer.Reset(at.Sub(now))
				}
			}
		case <-stopAgentTimer.C:
			if w.agent.alive() && !w.agent.stopSent {
				w.say("the runner is still stopping; the agent's grace must start now to end within the stop timeout")
				w.stopAgent()
			}
		case <-abortTimer.C:
			switch {
			case !w.agent.alive():
			case !w.agent.stopSent: // a zero grace: its deadline is its stop
				w.stopAgent()
			default:
				w.say("the agent is still delivering at its deadline: telling it to stop now (what is undelivered stays in its spool)")
				w.signal(w.agent, syscall.SIGTERM)
			}
		case <-killTimer.C:
			if w.agent.alive() {
				w.say("ERROR: the agent did not stop in time; killing it")
				w.signal(w.agent, syscall.SIGKILL)
			}
		}
	}
}
