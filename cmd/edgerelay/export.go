package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/livepeer/edgerelay/agent/naap"
	"github.com/livepeer/edgerelay/agent/telemetry"
)

const exportUsage = `usage: edgerelay export --stormlog DIR [FILE|-]

Reads the agent's envelopes as JSON lines (the stdout sink's output, or
edgerelay tail's; trickle frames {"type":"telemetry","event":…} too) from
FILE or standard input, and writes a stormlog sink directory that stormlog
loads as it is: manifest.json and segment-NNNNNN.jsonl files, one v3 record
a line, each session's records in its own segments.

Exported: gpu_memory_sample and allocator_sample envelopes, also in the
shape of NAAP mode (ai_stream_events with that data.type). Each becomes the
v3 record of its data; every other key of data (gpu_id, name, pipeline,
utilization_gpu_pct, …) moves into the record's metadata, with the
envelope's id as metadata.envelope_id. Session ids are the records' own.
Envelopes of other families are counted and skipped.

Left out: gpu_memory_sample records without allocator figures
(metadata.allocator_source "none"). Their allocator fields are placeholder
zeros, which stormlog cannot tell from a measurement: its hidden-memory gap
analysis reads device_used_bytes - allocator_reserved_bytes of every
"sample" event as hidden memory and never reads metadata, so the zeros
would turn the whole device's use into a false gap (and a false drift while
the device fills up). No v3 field can say "unknown" for the allocator
figures, so the export leaves such records out rather than mark them.

Exit status: 0 when every line was exported or skipped as above, 1 when
some lines were not valid envelopes or records (reported on stderr; the
others are still written), 2 for bad usage or a directory or file that
cannot be used.

flags:
`

// cmdExport writes a stormlog sink directory from the agent's envelopes.
func cmdExport(args []string, stdout, stderr io.Writer) int {
	return exportCommand(args, os.Stdin, stdout, stderr)
}

func exportCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edgerelay export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("stormlog", "", "the stormlog sink directory to write (created; must not exist or be empty)")
	fs.Usage = func() {
		fmt.Fprint(stderr, exportUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() > 1 {
		fs.Usage()
		return 2
	}
	in, name := stdin, "standard input"
	if p := fs.Arg(0); p != "" && p != "-" {
		f, err := os.Open(p)
		if err != nil {
			fmt.Fprintln(stderr, "edgerelay export:", err)
			return 2
		}
		defer f.Close()
		in, name = f, p
	}
	w, err := telemetry.NewSinkWriter(*dir, telemetry.SinkWriterOptions{})
	if err != nil {
		fmt.Fprintln(stderr, "edgerelay export:", err)
		return 2
	}
	x := exporter{w: w, stderr: stderr, skipped: map[string]int{}}
	readErr := x.read(in)
	if err := w.Close(); err != nil {
		fmt.Fprintln(stderr, "edgerelay export: writing", *dir+":", err)
		return 2
	}
	if readErr != nil {
		fmt.Fprintf(stderr, "edgerelay export: reading %s: %v\n", name, readErr)
		return 2
	}
	if x.writeErr != nil {
		fmt.Fprintf(stderr, "edgerelay export: writing %s: %v\n", *dir, x.writeErr)
		return 2
	}
	x.summary(stdout, *dir)
	if x.invalid > 0 {
		fmt.Fprintf(stderr, "edgerelay export: %d line(s) not exported\n", x.invalid)
		return 1
	}
	return 0
}

// exportFamilies are the envelope families whose data is a v3 record plus
// extras (spec/envelope.md).
var exportFamilies = map[string]bool{"gpu_memory_sample": true, "allocator_sample": true}

type exporter struct {
	w           *telemetry.SinkWriter
	stderr      io.Writer
	placeholder int            // gpu_memory_sample records left out: no allocator figures
	skipped     map[string]int // envelopes of other families, by type
	invalid     int
	writeErr    error
}

// read exports every line of in; it fails only when in cannot be read.
func (x *exporter) read(in io.Reader) error {
	r := bufio.NewReaderSize(in, 1<<20)
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 && x.writeErr == nil {
			if perr := x.line(line); perr != nil {
				x.invalid++
				fmt.Fprintf(x.stderr, "line %d: %v\n", n, perr)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// inEnvelope is what the export reads of an envelope, or of a trickle frame
// around one.
type inEnvelope struct {
	ID    string          `json:"id"`
	Type  string          `json:"type"`
	Data  json.RawMessage `json:"data"`
	Event json.RawMessage `json:"event"`
}

func (x *exporter) line(line []byte) error {
	var env inEnvelope
	if err := json.Unmarshal(line, &env); err != nil {
		return fmt.Errorf("not an envelope: %v", err)
	}
	if env.Type == "telemetry" && len(env.Event) > 0 { // a trickle frame
		var inner inEnvelope
		if err := json.Unmarshal(env.Event, &inner); err != nil {
			return fmt.Errorf("event: not an envelope: %v", err)
		}
		env = inner
	}
	if env.Type == "" {
		return errors.New("not an envelope: no type")
	}
	if env.Type == naap.Family { // NAAP mode: the native family is data.type
		var d struct{ Type string }
		if json.Unmarshal(env.Data, &d) == nil && exportFamilies[d.Type] {
			env.Type = d.Type
		}
	}
	if !exportFamilies[env.Type] {
		x.skipped[env.Type]++
		return nil
	}
	rec, placeholder, err := recordOf(env)
	if err != nil {
		return fmt.Errorf("%s %s: %w", env.Type, env.ID, err)
	}
	if placeholder {
		x.placeholder++
		return nil
	}
	if err := x.w.Write(rec); err != nil {
		x.writeErr = err
		return err
	}
	return nil
}

// recordOf turns an envelope's data into the v3 record stormlog loads: the
// v3 fields as they are, every other key of data into metadata (the
// record's own metadata keys win), the envelope id as metadata.envelope_id.
// placeholder reports a gpu_memory_sample without allocator figures.
func recordOf(env inEnvelope) (rec telemetry.Record, placeholder bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(env.Data))
	dec.UseNumber()
	var data map[string]any
	if err := dec.Decode(&data); err != nil || data == nil {
		return nil, false, errors.New("data: must be a JSON object")
	}
	meta := map[string]any{}
	switch m := data["metadata"].(type) {
	case map[string]any:
		meta = maps.Clone(m)
	case nil:
	default:
		return nil, false, errors.New("data.metadata: must be a JSON object")
	}
	if meta["allocator_source"] == telemetry.SourceNone {
		return nil, true, nil
	}
	out := map[string]any{}
	for _, k := range slices.Sorted(maps.Keys(data)) {
		switch {
		case k == "metadata":
		case telemetry.IsV3Field(k):
			out[k] = data[k]
		default:
			if _, taken := meta[k]; !taken {
				meta[k] = data[k]
			}
		}
	}
	if _, taken := meta["envelope_id"]; !taken && env.ID != "" {
		meta["envelope_id"] = env.ID
	}
	out["metadata"] = meta
	raw, err := json.Marshal(out)
	if err != nil {
		return nil, false, err
	}
	rec, err = telemetry.Normalize(raw, telemetry.NormalizeOptions{})
	return rec, false, err
}

func (x *exporter) summary(w io.Writer, dir string) {
	st := x.w.Stats()
	fmt.Fprintf(w, "exported %d record(s), %d session(s), %d segment(s) to %s\n", st.Records, st.Sessions, st.Segments, dir)
	if x.placeholder > 0 {
		fmt.Fprintf(w, "left out %d gpu_memory_sample record(s) without allocator figures (metadata.allocator_source \"none\")\n", x.placeholder)
	}
	if len(x.skipped) > 0 {
		var parts []string
		total := 0
		for _, t := range slices.Sorted(maps.Keys(x.skipped)) {
			parts = append(parts, fmt.Sprintf("%s %d", t, x.skipped[t]))
			total += x.skipped[t]
		}
		fmt.Fprintf(w, "skipped %d envelope(s) of other families: %s\n", total, strings.Join(parts, ", "))
	}
}
