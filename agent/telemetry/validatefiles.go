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

// ValidateFiles checks telemetry files for `edgerelay validate`: each path is
// a JSON or JSON-lines file (any shape DecodeRecords accepts) or a stormlog
// sink directory (its segment-*.jsonl files in number order; manifest.json
// is not needed). Each record is checked with Validate, or with Normalize
// and legacy conversion when allowLegacy.
//
// Each invalid record is written to w as "path:line: reason", or with
// jsonOut as one JSON object per line: {"file","line","index","error"}
// (index is the 0-based item index in its file, -1 for a file that is not
// JSON at all; line is where the record starts, 0 when unknown). A file that
// is not JSON counts as one invalid record. invalid counts them; the CLI
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
		if !info.IsDir() {
			v.file(p, false)
			continue
		}
		segs, err := listSegments(p)
		if err != nil {
			v.errs = append(v.errs, err)
			continue
		}
		if len(segs) == 0 {
			v.errs = append(v.errs, fmt.Errorf("%s: no segment-*.jsonl files: not a stormlog sink directory", p))
			continue
		}
		for _, s := range segs {
			v.file(filepath.Join(p, s.name), true)
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

func (v *fileValidator) file(path string, segment bool) {
	body, err := os.ReadFile(path)
	if err != nil {
		v.errs = append(v.errs, err)
		return
	}
	items, err := DecodeRecords(body)
	if errors.Is(err, ErrEmpty) && segment {
		return // a segment just opened by the writer
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
		if v.allowLegacy {
			_, err = Normalize(it.Raw, NormalizeOptions{AllowLegacy: true})
		} else {
			_, err = Validate(it.Raw)
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
