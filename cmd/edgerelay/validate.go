package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/livepeer/edgerelay/agent/telemetry"
)

func init() { extraCommands["validate"] = cmdValidate }

// cmdValidate checks stormlog telemetry files (JSON, JSON lines) and sink
// directories as stormlog's own loader and validator judge them
// (docs/STORMLOG.md): exit 0 when every record is valid, 1 when one is not,
// 2 when a path cannot be read.
func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edgerelay validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, "one JSON object per invalid record: {file, line, index, error}")
	legacy := fs.Bool("legacy", false, "convert legacy (pre-v2) records instead of rejecting them")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: edgerelay validate [--json] [--legacy] FILE|DIR...")
		fmt.Fprint(stderr, `
Checks files as stormlog loads them: *.jsonl as JSON lines (a truncated last line is
ignored), any other file as one JSON document, a directory as a sink directory; and each
record as stormlog's validator does (or its legacy conversion, with --legacy).

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
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
