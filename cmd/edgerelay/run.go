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
	"syscall"

	"github.com/livepeer/edgerelay/agent"
)

const runUsage = `usage: edgerelay run [--demo] [--<setting> VALUE]...

Runs the agent. It does nothing unless EDGERELAY_ENABLED=true, or --demo
(stdout sink, simulated GPUs, agent_status every second). Every setting is an
environment variable and a flag of the same name (EDGERELAY_HTTP_RATE is
--http-rate; the flag wins); configs/edgerelay.env lists them with their
defaults. Exit codes: 0 clean stop or not enabled, 1 runtime failure, 2 bad
configuration.
`

// defaultUsageHeader is the flag package's usage line for run's flag set,
// which agent.Load builds.
const defaultUsageHeader = "Usage of edgerelay run:\n"

func cmdRun(args []string, stdout, stderr io.Writer) int {
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
	if !cfg.Enabled {
		fmt.Fprintln(stderr, "edgerelay: not enabled; set EDGERELAY_ENABLED=true to run the agent (or try: edgerelay run --demo)")
		return 0
	}
	level := new(slog.LevelVar)
	logger := newLogger(stderr, cfg.LogFormat, level)
	if err != nil {
		logger.Error("bad configuration; not starting", "err", err)
		fmt.Fprintf(stderr, "edgerelay: bad configuration:\n%v\n", err)
		return 2
	}
	level.Set(parseLevel(cfg.LogLevel))

	a, err := agent.New(cfg, agent.Options{Stdout: stdout, Logger: logger, LogLevel: level})
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
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
