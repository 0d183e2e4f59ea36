package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ValidateFiles checks telemetry files for `edgerelay validate` the way
// stormlog loads them (stormlogfiles.go): a *.jsonl file is JSON lines
// (empty is fine, a truncated final line is ignored); any other file is one
// JSON document (an array, an object with an "events" array, or a single
// record); a directory, or its manifest.json, is a stormlog sink directory
// (the segments its manifest lists plus every segment-*.jsonl). Each record
// must pass Validate and load in stormlog without legacy conversion, or with
// allowLegacy, load with legacy conversion (Normalize).
//
// Each invalid record is written to w as "path:line: reason", or with
// jsonOut as one JSON object per line: {"file","line","index","error"}
// (index is the 0-based item index in its file, -1 for a file that cannot be
// read as records at all; line is where the record starts, 0 when unknown).
// Such a file counts as one invalid record. invalid counts them; the CLI
// exits 1 when it is above 0. err joins the paths that could not be read
// (the others are still checked) and write errors on w.
func ValidateFiles(paths []string, w io.Writer, jsonOut bool, allowLegacy bool) (invalid int, err error) {
	v := fileValidator{w: w, jsonOut: jsonOut, allowLegacy: allowLegacy}
	if jsonOut {
		v.enc = json.NewEncoder(w)
		v.enc.SetEscapeHTML(false)
	}
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			v.errs = append(v.errs, err)
			continue
		}
		dir := ""
		switch {
		case info.IsDir():
			dir = p
		case filepath.Base(p) == "manifest.json":
			dir = filepath.Dir(p)
		}
		if dir != "" {
			segs, err := sinkSegments(dir, p)
			if err != nil {
				v.errs = append(v.errs, err)
				continue
			}
			if len(segs) > 0 {
				for _, s := range segs {
					v.file(s.path, true, s.defaultSession)
				}
				continue
			}
			if info.IsDir() {
				v.errs = append(v.errs, fmt.Errorf("%s: no segment-*.jsonl files: not a stormlog sink directory", p))
				continue
			}
		}
		if pySuffix(filepath.Base(p)) == ".jsonl" {
			v.file(p, true, segmentSession(p))
		} else {
			v.file(p, false, LegacySessionID(resolvedPath(p), "json"))
		}
	}
	return v.invalid, errors.Join(v.errs...)
}

type fileValidator struct {
	w           io.Writer
	enc         *json.Encoder
	jsonOut     bool
	allowLegacy bool
	invalid     int
	errs        []error
	writeFailed bool
}

// file checks one file, as JSON lines or as one JSON document. session is
// the id stormlog's loader gives the file's records that carry none.
func (v *fileValidator) file(path string, lines bool, session string) {
	body, err := os.ReadFile(path)
	if err != nil {
		v.errs = append(v.errs, err)
		return
	}
	var items []Item
	if lines {
		items, err = jsonLines(body)
	} else {
		items, err = jsonDocument(body)
	}
	if err != nil {
		v.report(path, 0, -1, err.Error())
		return
	}
	for _, it := range items {
		if it.Err != nil {
			reason := it.Err.Error()
			var le *lineError
			if errors.As(it.Err, &le) {
				reason = "invalid JSON: " + le.err.Error() // the line is in the prefix already
			}
			v.report(path, it.Line, it.Index, reason)
			continue
		}
		opts := NormalizeOptions{AllowLegacy: v.allowLegacy, DefaultSessionID: session}
		var err error
		if !v.allowLegacy {
			// Stormlog's validator, then its loader (which also forgives
			// nothing the validator rejects).
			_, err = Validate(it.Raw)
		}
		if err == nil {
			_, err = Normalize(it.Raw, opts)
		}
		if err != nil {
			line := it.Line
			if line == 0 {
				line = 1 + bytes.Count(body[:it.Offset], []byte{'\n'})
			}
			v.report(path, line, it.Index, err.Error())
		}
	}
}

func (v *fileValidator) report(path string, line, index int, reason string) {
	v.invalid++
	var err error
	if v.jsonOut {
		err = v.enc.Encode(struct {
			File  string `json:"file"`
			Line  int    `json:"line"`
			Index int    `json:"index"`
			Error string `json:"error"`
		}{path, line, index, reason})
	} else if line > 0 {
		_, err = fmt.Fprintf(v.w, "%s:%d: %s\n", path, line, reason)
	} else {
		_, err = fmt.Fprintf(v.w, "%s: %s\n", path, reason)
	}
	if err != nil && !v.writeFailed {
		v.writeFailed = true
		v.errs = append(v.errs, fmt.Errorf("writing the report: %w", err))
	}
}
