package main

import (
	"fmt"
	"io"

	"github.com/livepeer/edgerelay/agent/telemetry"
)

func init() { extraCommands["validate"] = cmdValidate }

const validateUsage = `usage: edgerelay validate [--json] [--legacy] FILE|DIR...

Checks files as stormlog loads them: *.jsonl as JSON lines (a truncated last
line is ignored), any other file as one JSON document, a directory as a sink
directory; and each record as stormlog's validator does (or its legacy
conversion, with --legacy). Exit codes: 0 every record is valid, 1 one is
not, 2 a path cannot be read or usage.
`

// cmdValidate checks stormlog telemetry files (JSON, JSON lines) and sink
// directories as stormlog's own loader and validator judge them
// (docs/STORMLOG.md): exit 0 when every record is valid, 1 when one is not,
// 2 when a path cannot be read.
func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("edgerelay validate", validateUsage)
	jsonOut := fs.Bool("json", false, "one JSON object per invalid record: {file, line, index, error}")
	legacy := fs.Bool("legacy", false, "convert legacy (pre-v2) records instead of rejecting them")
	if code, done := parseFlags(fs, args, stdout, stderr); done {
		return code
	}
	if fs.NArg() == 0 {
		return usageError(fs, stderr, "no file or directory to validate")
	}
	invalid, err := telemetry.ValidateFiles(fs.Args(), stdout, *jsonOut, *legacy)
	if err != nil {
		fmt.Fprintln(stderr, "edgerelay validate:", err)
		return 2
	}
	if invalid > 0 {
		if !*jsonOut {
			fmt.Fprintf(stderr, "%d invalid record(s)\n", invalid)
		}
		return 1
	}
	return 0
}
