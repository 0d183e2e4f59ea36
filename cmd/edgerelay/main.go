// Command edgerelay is the GPU node telemetry sidecar. See the README.
//
// Exit codes: 0 success (also: not enabled), 1 runtime failure, 2 bad
// configuration or usage.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/livepeer/edgerelay/agent"
)

// version and revision are set at build time with -ldflags "-X
// main.version=… -X main.revision=…" (the Makefile: git describe and the
// commit); a revision Go stamped into the binary wins (agent.BuildOf).
var version, revision = "dev", ""

const usage = `edgerelay: GPU telemetry sidecar for Livepeer AI nodes

usage: edgerelay <command> [flags]

commands:
  run        run the agent (off unless EDGERELAY_ENABLED=true; --demo for a local demo)
  wrap       a runner container's init: run the runner, and the agent beside it
  tail       print envelopes live as the agent accepts them
  stats      print the agent's counters (/v1/stats)
  spool      inspect a stopped agent's spool: spool stat | spool dump
  validate   validate stormlog telemetry files or sink directories
  export     write envelopes' memory telemetry as a stormlog sink directory
  bench      run the in-process benchmarks
  version    print the version

'edgerelay <command> --help' or 'edgerelay help <command>' describes a command.
`

const versionUsage = `usage: edgerelay version

Prints the version of this binary (set at build time: make build uses git
describe), the VCS revision it was built from and the Go version.
`

// printVersion writes "edgerelay VERSION (revision REV, GOVERSION)": the
// labels of edgerelay_build_info.
func printVersion(w io.Writer) {
	b := agent.BuildOf(version, revision)
	fmt.Fprintf(w, "edgerelay %s (revision %s, %s)\n", b.Version, b.Revision, b.GoVersion)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest, stdout, stderr)
	case "tail":
		return cmdTail(rest, stdout, stderr)
	case "stats":
		return cmdStats(rest, stdout, stderr)
	case "version":
		fs := newFlagSet("edgerelay version", versionUsage)
		if code, done := parseFlags(fs, rest, stdout, stderr); done {
			return code
		}
		if fs.NArg() > 0 {
			return usageError(fs, stderr, "unexpected arguments %q", fs.Args())
		}
		printVersion(stdout)
		return 0
	case "--version", "-v":
		printVersion(stdout)
		return 0
	case "help", "--help", "-h", "-help":
		if len(rest) > 0 && cmd == "help" && !isHelp(rest[0]) {
			// edgerelay help <command> [sub]: the command's --help
			return run(append(append([]string{}, rest...), "--help"), stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	}
	if f, ok := extraCommands[cmd]; ok {
		return f(rest, stdout, stderr)
	}
	fmt.Fprintf(stderr, "edgerelay: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// extraCommands are registered by the files that implement them.
var extraCommands = map[string]func(args []string, stdout, stderr io.Writer) int{"export": cmdExport}
