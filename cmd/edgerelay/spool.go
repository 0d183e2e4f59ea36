package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/livepeer/edgerelay/agent"
	"github.com/livepeer/edgerelay/spool"
)

func init() { extraCommands["spool"] = cmdSpool }

const spoolUsage = `usage: edgerelay spool stat [--state-dir DIR] [--json]
       edgerelay spool dump [--state-dir DIR] [--sink S] [--limit N]

Inspect the spool of a stopped agent (read-only). While an agent runs it holds
the spool's lock; use 'edgerelay stats' to ask the running agent instead.
'edgerelay spool stat --help' and 'edgerelay spool dump --help' list the flags.
`

const spoolStatUsage = `usage: edgerelay spool stat [--state-dir DIR] [--json]

Prints what a stopped agent's spool holds: records, bytes, and per sink its
cursor and pending records. Exit codes: 0 ok, 1 the spool cannot be read
(locked by a running agent, missing, corrupt), 2 usage.
`

const spoolDumpUsage = `usage: edgerelay spool dump [--state-dir DIR] [--sink S] [--limit N]

Prints a stopped agent's spooled records, one JSON object a line, oldest
first. Exit codes: 0 ok, 1 the spool cannot be read, 2 usage.
`

// spoolStatJSON is spool.Stat as 'spool stat --json' prints it.
type spoolStatJSON struct {
	Path        string                  `json:"path"`
	Durable     bool                    `json:"durable"`
	Degraded    bool                    `json:"degraded"`
	Records     uint64                  `json:"records"`
	Bytes       int64                   `json:"bytes"`
	FirstSeq    uint64                  `json:"first_seq"`
	LastSeq     uint64                  `json:"last_seq"`
	Quarantined int                     `json:"quarantined"`
	Sinks       map[string]sinkStatJSON `json:"sinks"`
}

type sinkStatJSON struct {
	Received uint64 `json:"received"`
	Acked    uint64 `json:"acked"`
	Evicted  uint64 `json:"evicted"`
	Pending  uint64 `json:"pending"`
	Cursor   uint64 `json:"cursor"`
}

func statJSON(path string, st spool.Stat) spoolStatJSON {
	v := spoolStatJSON{
		Path: path, Durable: st.Durable, Degraded: st.Degraded, Records: st.Records, Bytes: st.Bytes,
		FirstSeq: st.FirstSeq, LastSeq: st.LastSeq, Quarantined: st.Quarantined,
		Sinks: make(map[string]sinkStatJSON, len(st.Sinks)),
	}
	for name, s := range st.Sinks {
		v.Sinks[name] = sinkStatJSON{Received: s.Received, Acked: s.Acked, Evicted: s.Evicted, Pending: s.Pending, Cursor: s.Cursor}
	}
	return v
}

// cmdSpool inspects a stopped agent's spool. Exit codes: 0 ok, 1 the spool
// cannot be read (locked, missing, corrupt), 2 usage.
func cmdSpool(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(stdout, spoolUsage)
		return 0
	}
	if len(args) == 0 || (args[0] != "stat" && args[0] != "dump") {
		if len(args) > 0 {
			fmt.Fprintf(stderr, "edgerelay spool: unknown subcommand %q\n", args[0])
		}
		fmt.Fprint(stderr, spoolUsage)
		return 2
	}
	sub := args[0]
	cfg, _ := agent.Load(nil, os.Getenv, io.Discard) // for the default state dir
	var fs *flag.FlagSet
	if sub == "stat" {
		fs = newFlagSet("edgerelay spool stat", spoolStatUsage)
	} else {
		fs = newFlagSet("edgerelay spool dump", spoolDumpUsage)
	}
	dir := fs.String("state-dir", cfg.StateDir, "the agent's state directory `DIR`")
	var asJSON *bool
	var sink *string
	var limit *int
	if sub == "stat" {
		asJSON = fs.Bool("json", false, "print JSON")
	} else {
		sink = fs.String("sink", "", "only records this `SINK` has not delivered")
		limit = fs.Int("limit", 0, "at most `N` records (0: all)")
	}
	if code, done := parseFlags(fs, args[1:], stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(fs, stderr, "unexpected arguments %q", fs.Args())
	}
	path := filepath.Join(*dir, agent.SpoolFile)
	if _, err := os.Stat(path); err != nil {
		fmt.Fprintf(stderr, "edgerelay spool: no spool at %s\n", path)
		return 1
	}
	report := func(err error) int {
		if errors.Is(err, spool.ErrLocked) {
			fmt.Fprintf(stderr, "edgerelay spool: %s is locked by a running agent; stop it first, or use 'edgerelay stats'\n", path)
		} else {
			fmt.Fprintf(stderr, "edgerelay spool: %v\n", err)
		}
		return 1
	}
	if sub == "dump" {
		if err := spool.Dump(path, *sink, *limit, stdout); err != nil {
			return report(err)
		}
		return 0
	}
	st, err := spool.Inspect(path, time.Second)
	if err != nil {
		return report(err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(statJSON(path, st))
		return 0
	}
	fmt.Fprintf(stdout, "spool     %s\nrecords   %d (seq %d..%d)\nbytes     %d\n", path, st.Records, st.FirstSeq, st.LastSeq, st.Bytes)
	names := make([]string, 0, len(st.Sinks))
	for n := range st.Sinks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := st.Sinks[n]
		fmt.Fprintf(stdout, "sink      %-12s cursor %d  pending %d\n", n, s.Cursor, s.Pending)
	}
	return 0
}
