package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/livepeer/edgerelay/agent"
)

const runUsage = `usage: edgerelay run [--demo] [--check] [--<setting> VALUE]...

Runs the agent. It does nothing unless EDGERELAY_ENABLED=true, or --demo
(stdout sink, simulated GPUs, agent_status every second). Every setting is an
environment variable and a flag of the same name (EDGERELAY_HTTP_RATE is
--http-rate; the flag wins); configs/edgerelay.env lists them with their
defaults. A boolean flag alone means true (--enabled); give other values
after = (--enabled=false). --check validates the configuration and prints
the effective settings, secrets redacted, without starting anything. Exit
codes: 0 clean stop, not enabled, or a valid --check; 1 runtime failure; 2
bad configuration.
`

// defaultUsageHeader is the flag package's usage line for run's flag set,
// which agent.Load builds.
const defaultUsageHeader = "Usage of edgerelay run:\n"

func cmdRun(args []string, stdout, stderr io.Writer) int {
	// Catch the stop signals first: a SIGTERM while the agent starts (a
	// runner that exits at once under `edgerelay wrap`) is then a clean stop
	// after start-up, not a death by signal.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	// agent.Load prints --help and flag errors under the flag package's
	// header: collect them, to print run's usage text instead, help on
	// stdout and errors on stderr.
	var loadOut bytes.Buffer
	cfg, err := agent.Load(args, os.Getenv, &loadOut)
	text := loadOut.Bytes()
	if i := bytes.Index(text, []byte(defaultUsageHeader)); i >= 0 {
		text = slices.Concat(text[:i], []byte(runUsage+"\nflags:\n"), text[i+len(defaultUsageHeader):])
	}
	if errors.Is(err, flag.ErrHelp) {
		stdout.Write(text)
		return 0
	}
	stderr.Write(text)
	var fe *agent.FlagError
	if errors.As(err, &fe) {
		return 2
	}
	if cfg.Check {
		return checkConfig(cfg, err, stdout, stderr)
	}
	if !cfg.Enabled {
		// A switch that is not a boolean is a mistake, not "off".
		if serr := switchError(err); serr != nil {
			fmt.Fprintf(stderr, "edgerelay: bad configuration:\n%v\n", serr)
			return 2
		}
		fmt.Fprintln(stderr, "edgerelay: not enabled; set EDGERELAY_ENABLED=true to run the agent (or try: edgerelay run --demo)")
		if err := notifyDisabled(); err != nil {
			fmt.Fprintf(stderr, "edgerelay: telling systemd that the agent is off: %v\n", err)
		}
		return 0
	}
	level := new(slog.LevelVar)
	logger := newLogger(stderr, cfg.LogFormat, level)
	b := agent.BuildOf(version, revision)
	logger.Info("edgerelay starting", "version", b.Version, "revision", b.Revision, "go_version", b.GoVersion, "pid", os.Getpid())
	if err != nil {
		logger.Error("bad configuration; not starting", "err", err)
		fmt.Fprintf(stderr, "edgerelay: bad configuration:\n%v\n", err)
		return 2
	}
	level.Set(parseLevel(cfg.LogLevel))

	a, err := agent.New(cfg, agent.Options{Stdout: stdout, Logger: logger, LogLevel: level, Version: version, Revision: revision})
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		stopping := false
		for {
			select {
			case <-done:
				return
			case s := <-sigs:
				switch {
				case s == syscall.SIGHUP:
					a.Reload()
				case !stopping:
					stopping = true
					logger.Info("signal received; shutting down", "signal", s.String())
					cancel()
				default:
					logger.Warn("second signal; exiting without waiting for sinks", "signal", s.String())
					a.Abort()
				}
			}
		}
	}()
	if err := a.Run(ctx); err != nil {
		logger.Error("edgerelay failed", "err", err)
		fmt.Fprintf(stderr, "edgerelay: %v\n", err)
		return 1
	}
	return 0
}

// checkConfig is run --check: it prints the effective settings (secrets
// redacted, URLs without credentials or query) on stdout, then the problems
// on stderr; 0 when the configuration is valid, 2 when not. It starts
// nothing and writes nothing to disk.
func checkConfig(cfg agent.Config, err error, stdout, stderr io.Writer) int {
	b := agent.BuildOf(version, revision)
	fmt.Fprintf(stdout, "# edgerelay %s (revision %s, %s): effective settings\n", b.Version, b.Revision, b.GoVersion)
	for _, kv := range cfg.Effective() {
		fmt.Fprintf(stdout, "%s=%s\n", kv[0], kv[1])
	}
	if err != nil {
		fmt.Fprintf(stderr, "edgerelay: bad configuration:\n%v\n", err)
		return 2
	}
	if !cfg.Enabled {
		fmt.Fprintln(stderr, "edgerelay: configuration valid; the agent is not enabled (EDGERELAY_ENABLED is not true)")
		return 0
	}
	fmt.Fprintln(stderr, "edgerelay: configuration valid")
	return 0
}

// switchError returns the error Load reported for the on/off switch itself
// (EDGERELAY_ENABLED, or --enabled), if any. Load names the variable or flag
// at the start of each of its errors.
func switchError(err error) error {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		if e == nil {
			continue
		}
		if msg := e.Error(); strings.HasPrefix(msg, "EDGERELAY_ENABLED:") || strings.HasPrefix(msg, "--enabled:") {
			return e
		}
	}
	return nil
}

// notifyDisabled ends a disabled start cleanly under systemd (Type=notify):
// a main process that exits before READY=1 fails the unit with result
// "protocol", which Restart=on-failure restarts every RestartSec. READY=1
// then a clean exit leaves the unit inactive, not failed, and not
// restarted. The barrier waits until systemd has read the message, so that
// the exit cannot overtake it. Outside systemd (NOTIFY_SOCKET unset) it does
// nothing.
func notifyDisabled() error {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return nil
	}
	if _, err := daemon.SdNotify(false, "READY=1\nSTATUS=disabled: EDGERELAY_ENABLED is not true; the agent does nothing"); err != nil {
		return err
	}
	return notifyBarrier(5 * time.Second)
}

// notifyBarrier is sd_notify_barrier(3): it sends BARRIER=1 with the write
// end of a pipe and waits until the service manager, having processed every
// earlier message, closes it.
func notifyBarrier(timeout time.Duration) error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(p[0])
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		unix.Close(p[1])
		return err
	}
	// SockaddrUnix maps a leading '@' to the abstract namespace, as systemd means it.
	err = unix.Sendmsg(sock, []byte("BARRIER=1"), unix.UnixRights(p[1]), &unix.SockaddrUnix{Name: os.Getenv("NOTIFY_SOCKET")}, 0)
	unix.Close(p[1])
	unix.Close(sock)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("no answer to BARRIER=1 from the service manager")
		}
		fds := []unix.PollFd{{Fd: int32(p[0])}} // POLLHUP is always reported
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}

func newLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationsAsText}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// durationsAsText writes every duration of a log line in one form, Go's
// duration text ("1.5s"): the JSON handler would write a time.Duration as
// integer nanoseconds, beside durations the code logs as text already.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}
