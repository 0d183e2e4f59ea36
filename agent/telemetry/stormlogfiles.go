package telemetry

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

// Reading files as stormlog's loader (load_telemetry_sessions) reads them,
// so that `edgerelay validate` accepts exactly the files stormlog loads:
//
//   - a directory is a sink directory: the segments manifest.json lists
//     that exist plus every segment-*.jsonl, in name order; a directory
//     without any is not loadable. A path to a manifest.json means its
//     directory.
//   - a *.jsonl file is JSON lines, read as Python reads text: UTF-8, with
//     "\r\n" and "\r" read as "\n", and split into lines by
//     str.splitlines(), which also breaks at \v, \f, U+001C–U+001E, U+0085,
//     U+2028 and U+2029. A line of whitespace is skipped; a malformed final
//     line that does not end with "\n" is a truncated write and is ignored;
//     an empty file holds no records, which is fine.
//   - any other file is one JSON document: an array of records, an object
//     with an "events" array, or a single record (an object with one of
//     schema_version, event_type, type, memory_allocated, memory_mb,
//     timestamp, timestamp_ns). JSON lines there are not JSON.

// sinkManifestSegment is a segment as a sink directory's manifest.json
// lists it.
type sinkManifestSegment struct {
	Filename  string
	SessionID string // "" when the manifest names none
}

// sinkSegmentFile is one segment file of a sink directory, with the session
// id stormlog's loader gives its records that carry none.
type sinkSegmentFile struct {
	path           string
	defaultSession string
}

// sinkSegments lists the segments of a sink directory as stormlog's loader
// finds them. namedPath, the directory or the manifest.json the user named,
// gives the session id of records that carry none and whose segment the
// manifest does not place in a session.
func sinkSegments(dir, namedPath string) ([]sinkSegmentFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	byName := map[string]string{} // base name → path
	for _, e := range entries {
		if ok, _ := filepath.Match("segment-*.jsonl", e.Name()); ok {
			byName[e.Name()] = filepath.Join(dir, e.Name())
		}
	}
	hints := map[string]string{}
	for _, s := range readSinkManifest(filepath.Join(dir, "manifest.json")) {
		p := s.Filename
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if _, err := os.Stat(p); err != nil {
			continue
		}
		byName[filepath.Base(p)] = p
		if s.SessionID != "" {
			hints[s.Filename] = s.SessionID
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	slices.Sort(names)
	fallback := LegacySessionID(resolvedPath(namedPath), "sink")
	segs := make([]sinkSegmentFile, 0, len(names))
	for _, n := range names {
		def := hints[n]
		if def == "" {
			def = fallback
		}
		segs = append(segs, sinkSegmentFile{path: byName[n], defaultSession: def})
	}
	return segs, nil
}

// segmentSession is the session id stormlog's loader gives the records
// without one of a lone segment file: its manifest's, else one derived
// from the file's path.
func segmentSession(path string) string {
	id, _ := SegmentSessionID(path)
	return id
}

// SegmentSessionID is the session id stormlog's loader gives the records
// without one of the segment file at path: the one manifest.json beside it
// lists for the file (listed true), else one derived from the file's path.
func SegmentSessionID(path string) (id string, listed bool) {
	for _, s := range readSinkManifest(filepath.Join(filepath.Dir(path), "manifest.json")) {
		if s.Filename == filepath.Base(path) && s.SessionID != "" {
			return s.SessionID, true
		}
	}
	return LegacySessionID(resolvedPath(path), "sink"), false
}

// readSinkManifest returns the segments a manifest lists; a missing or
// unreadable manifest lists none (stormlog ignores it then).
func readSinkManifest(path string) []sinkManifestSegment {
	body, err := os.ReadFile(path)
	if err != nil || !utf8.Valid(body) {
		return nil
	}
	v, err := decodePy(body)
	if err != nil {
		return nil
	}
	m, _ := v.(map[string]any)
	list, _ := m["segments"].([]any)
	var segs []sinkManifestSegment
	for _, e := range list {
		seg, _ := e.(map[string]any)
		name, ok := seg["filename"].(string)
		if !ok {
			continue
		}
		sess, _ := seg["session_id"].(string)
		segs = append(segs, sinkManifestSegment{Filename: name, SessionID: sess})
	}
	return segs
}

// resolvedPath is Python's str(Path(p).resolve()): absolute, links followed
// as far as they exist.
func resolvedPath(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r
	}
	return abs
}

// pySuffix is Python's PurePath.suffix: the last dot's extension, none for a
// name that is only a leading-dot name.
func pySuffix(name string) string {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || i == len(name)-1 {
		return ""
	}
	return name[i:]
}

// jsonLines splits a JSON-lines file into items as stormlog's loader reads
// it (see above). Malformed lines become items with Err; a truncated final
// line is dropped. err is for a file that is not UTF-8 text.
func jsonLines(body []byte) ([]Item, error) {
	if i := invalidUTF8(body); i >= 0 {
		return nil, fmt.Errorf("not UTF-8 text: invalid byte 0x%02x at byte %d", body[i], i)
	}
	var items []Item
	lines := pySplitLines(body)
	for n, ln := range lines {
		line := n + 1
		text := body[ln.start:ln.end]
		if pyBlank(string(text)) { // line breaks are whitespace too
			continue
		}
		var perr error
		if _, err := decodePy(text); err != nil {
			perr = err
		} else if !ln.newline && ln.next > ln.end {
			perr = fmt.Errorf("data after the value: line break %q is not JSON whitespace", body[ln.end:ln.next])
		}
		if perr == nil {
			start := ln.start + (len(text) - len(bytes.TrimLeft(text, " \t\r\n")))
			items = append(items, Item{Index: len(items), Line: line, Offset: start, Raw: bytes.TrimRight(body[start:ln.end], " \t\r\n")})
			continue
		}
		var je *pyJSONError
		limit := errors.As(perr, &je) && je.limit
		if n == len(lines)-1 && !ln.newline && !limit {
			break // a truncated write
		}
		items = append(items, Item{Index: len(items), Line: line, Offset: ln.start, Err: &lineError{line: line, err: perr}})
	}
	return items, nil
}

// pyLine is one line of pySplitLines: body[start:end] is its text,
// body[end:next] its line break. newline is true when Python's universal
// newlines read that break as "\n" ("\n", "\r\n", "\r").
type pyLine struct {
	start, end, next int
	newline          bool
}

// pySplitLines is str.splitlines(keepends=True) of text read with universal
// newlines: no empty line after a final break.
func pySplitLines(b []byte) []pyLine {
	var lines []pyLine
	start := 0
	for i := 0; i < len(b); {
		size, nl := lineBreak(b[i:])
		if size == 0 {
			i++
			continue
		}
		lines = append(lines, pyLine{start: start, end: i, next: i + size, newline: nl})
		i += size
		start = i
	}
	if start < len(b) {
		lines = append(lines, pyLine{start: start, end: len(b), next: len(b)})
	}
	return lines
}

// lineBreak returns the size of the line break at the start of b (0 for
// none) and whether universal newlines read it as "\n".
func lineBreak(b []byte) (int, bool) {
	switch b[0] {
	case '\n':
		return 1, true
	case '\r':
		if len(b) > 1 && b[1] == '\n' {
			return 2, true
		}
		return 1, true
	case '\v', '\f', 0x1C, 0x1D, 0x1E:
		return 1, false
	case 0xC2:
		if len(b) > 1 && b[1] == 0x85 {
			return 2, false
		}
	case 0xE2:
		if len(b) > 2 && b[1] == 0x80 && (b[2] == 0xA8 || b[2] == 0xA9) {
			return 3, false
		}
	}
	return 0, false
}

// invalidUTF8 returns the offset of the first byte that is not UTF-8, or -1.
func invalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return -1
}

// eventRecordKeys are the keys that make a lone JSON object a record to
// stormlog's loader.
var eventRecordKeys = []string{"schema_version", "event_type", "type", "memory_allocated", "memory_mb", "timestamp", "timestamp_ns"}

// jsonDocument splits a JSON file into its records as stormlog's loader
// does (see above). err is for a file that holds no records at all.
func jsonDocument(body []byte) ([]Item, error) {
	if i := invalidUTF8(body); i >= 0 {
		return nil, fmt.Errorf("not UTF-8 text: invalid byte 0x%02x at byte %d", body[i], i)
	}
	v, err := decodePy(body)
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	start := len(body) - len(bytes.TrimLeft(body, " \t\r\n"))
	switch v := v.(type) {
	case []any:
		p := pyParser{b: body, i: start}
		return p.elements()
	case map[string]any:
		if _, ok := v["events"].([]any); ok {
			return eventsItems(body, start)
		}
		for _, k := range eventRecordKeys {
			if _, ok := v[k]; ok {
				return []Item{{Offset: start, Raw: bytes.TrimRight(body[start:], " \t\r\n")}}, nil
			}
		}
		return nil, errors.New("no telemetry events: an object without an events array or any record field")
	default:
		return nil, fmt.Errorf("a telemetry file must hold a JSON object or array, got %s", kind(v))
	}
}
