package telemetry

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// A stormlog sink directory, as stormlog's own sink writes it and its loader
// reads it (spec/stormlog.md, "Files"):
//
//	DIR/
//	  manifest.json          {"schema_version":2,"format":"stormlog.append_only_telemetry_sink",
//	                          "sessions":[summary…],"segments":[{filename,event_count,
//	                          size_bytes,closed,session_id}…]}
//	  segment-000001.jsonl   one record a line, keys sorted; one session per segment
//	  segment-000002.jsonl   …
//
// SinkWriter writes such a directory in one go (edgerelay export); it does
// not append to one stormlog is writing.

// Stormlog's sink defaults (its TelemetrySinkConfig).
const (
	sinkMaxSegmentRecords = 10_000
	sinkMaxSegmentBytes   = 64 << 20
	sinkMaxOpenSegments   = 32
	sinkSchemaVersion     = 2
	sinkFormat            = "stormlog.append_only_telemetry_sink"
)

// SinkWriterOptions configures NewSinkWriter. Zero values take the
// documented defaults.
type SinkWriterOptions struct {
	// MaxSegmentRecords rolls a segment over after this many records;
	// 0 means 10,000, stormlog's default.
	MaxSegmentRecords int
	// MaxSegmentBytes rolls a segment over once it holds this many bytes;
	// 0 means 64 MiB, stormlog's default.
	MaxSegmentBytes int64
	// MaxOpenSegments bounds the segments open at once (one per session
	// being written); the least recently opened is closed, and a later
	// record of its session starts a new segment. 0 means 32.
	MaxOpenSegments int
	// Source is the source of the session summaries in the manifest; ""
	// means "edgerelay.export".
	Source string
}

// Validate reports every bad field at once.
func (o SinkWriterOptions) Validate() error {
	var errs []error
	if o.MaxSegmentRecords < 0 {
		errs = append(errs, fmt.Errorf("MaxSegmentRecords: %d is negative", o.MaxSegmentRecords))
	}
	if o.MaxSegmentBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxSegmentBytes: %d is negative", o.MaxSegmentBytes))
	}
	if o.MaxOpenSegments < 0 {
		errs = append(errs, fmt.Errorf("MaxOpenSegments: %d is negative", o.MaxOpenSegments))
	}
	return errors.Join(errs...)
}

func (o SinkWriterOptions) withDefaults() SinkWriterOptions {
	if o.MaxSegmentRecords == 0 {
		o.MaxSegmentRecords = sinkMaxSegmentRecords
	}
	if o.MaxSegmentBytes == 0 {
		o.MaxSegmentBytes = sinkMaxSegmentBytes
	}
	if o.MaxOpenSegments == 0 {
		o.MaxOpenSegments = sinkMaxOpenSegments
	}
	if o.Source == "" {
		o.Source = "edgerelay.export"
	}
	return o
}

// SinkWriter writes v3 records into a new stormlog sink directory: each
// session's records into its own segments, rolled over as stormlog's sink
// rolls them, and on Close the manifest, with one session summary per
// session as stormlog's loader would infer it from the records ("completed"
// when the session has a "stop" event, else "incomplete"). Not safe for
// concurrent use.
type SinkWriter struct {
	dir      string
	opts     SinkWriterOptions
	segments []*sinkSegment // in creation order
	open     []*sinkSegment // open ones, oldest first
	current  map[string]*sinkSegment
	sessions map[string]*sinkSession
	order    []string // session ids in first-seen order
	records  int
	closed   bool
}

type sinkSegment struct {
	name    string
	session string
	f       *os.File
	w       *bufio.Writer
	records int
	bytes   int64
}

type sinkSession struct {
	first   Record // earliest timestamp_ns; the first written on ties
	firstTS pyInt
	stopTS  *pyInt // the latest "stop" event
}

// SinkStats counts what a SinkWriter wrote.
type SinkStats struct {
	Records, Sessions, Segments int
}

// NewSinkWriter creates dir (its parents too), which must not exist or be
// empty: a sink directory holds one writer's segments.
func NewSinkWriter(dir string, opts SinkWriterOptions) (*SinkWriter, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	if len(entries) > 0 {
		return nil, fmt.Errorf("%s: not empty; a stormlog sink directory must hold one writer's files", dir)
	}
	return &SinkWriter{
		dir: dir, opts: opts.withDefaults(),
		current: map[string]*sinkSegment{}, sessions: map[string]*sinkSession{},
	}, nil
}

// Write appends one record, which must be a valid v3 record (as Normalize
// returns), to its session's segment.
func (w *SinkWriter) Write(rec Record) error {
	if w.closed {
		return errors.New("sink writer: closed")
	}
	if err := check(rec); err != nil {
		return err
	}
	if v, _ := pyIntValue(rec[fieldSchemaVersion]); v.cmp64(3) != 0 {
		return errors.New("schema_version: the sink holds v3 records; Normalize the record first")
	}
	line := appendStormlogJSON(nil, map[string]any(rec))
	line = append(line, '\n')
	session := rec.SessionID()

	seg := w.current[session]
	if seg != nil && (seg.records >= w.opts.MaxSegmentRecords || seg.bytes >= w.opts.MaxSegmentBytes) {
		if err := w.closeSegment(seg); err != nil {
			return err
		}
		seg = nil
	}
	if seg == nil {
		var err error
		if seg, err = w.newSegment(session); err != nil {
			return err
		}
	}
	if _, err := seg.w.Write(line); err != nil {
		return fmt.Errorf("%s: %w", seg.name, err)
	}
	seg.records++
	seg.bytes += int64(len(line))
	w.records++
	w.noteSession(session, rec)
	return nil
}

func (w *SinkWriter) newSegment(session string) (*sinkSegment, error) {
	if len(w.open) >= w.opts.MaxOpenSegments {
		if err := w.closeSegment(w.open[0]); err != nil {
			return nil, err
		}
	}
	name := fmt.Sprintf("segment-%06d.jsonl", len(w.segments)+1)
	f, err := os.OpenFile(filepath.Join(w.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	seg := &sinkSegment{name: name, session: session, f: f, w: bufio.NewWriterSize(f, 64<<10)}
	w.segments = append(w.segments, seg)
	w.open = append(w.open, seg)
	w.current[session] = seg
	return seg, nil
}

// closeSegment flushes, syncs and closes a segment; its session's next
// record starts a new one.
func (w *SinkWriter) closeSegment(seg *sinkSegment) error {
	w.open = slices.DeleteFunc(w.open, func(s *sinkSegment) bool { return s == seg })
	if w.current[seg.session] == seg {
		delete(w.current, seg.session)
	}
	err := seg.w.Flush()
	if err == nil {
		err = seg.f.Sync()
	}
	if cerr := seg.f.Close(); err == nil {
		err = cerr
	}
	seg.f = nil
	if err != nil {
		return fmt.Errorf("%s: %w", seg.name, err)
	}
	return nil
}

func (w *SinkWriter) noteSession(id string, rec Record) {
	ts, _ := pyIntValue(rec[fieldTimestampNS])
	s := w.sessions[id]
	if s == nil {
		s = &sinkSession{first: rec, firstTS: ts}
		w.sessions[id] = s
		w.order = append(w.order, id)
	} else if ts.cmp(s.firstTS) < 0 {
		s.first, s.firstTS = rec, ts
	}
	if rec[fieldEventType] == "stop" && (s.stopTS == nil || ts.cmp(*s.stopTS) >= 0) {
		s.stopTS = &ts
	}
}

// Stats counts what was written so far.
func (w *SinkWriter) Stats() SinkStats {
	return SinkStats{Records: w.records, Sessions: len(w.sessions), Segments: len(w.segments)}
}

// Close closes every segment and writes manifest.json (through a temporary
// file renamed into place, as stormlog's sink does). A directory without
// records gets one empty segment, so that stormlog loads it (as no
// sessions) instead of failing on a directory without segments. Close is
// idempotent.
func (w *SinkWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	var errs []error
	if len(w.segments) == 0 {
		if _, err := w.newSegment(""); err != nil {
			errs = append(errs, err)
		}
	}
	for len(w.open) > 0 {
		if err := w.closeSegment(w.open[0]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		errs = append(errs, w.writeManifest())
	}
	return errors.Join(errs...)
}

func (w *SinkWriter) writeManifest() error {
	ids := slices.Clone(w.order)
	slices.SortStableFunc(ids, func(a, b string) int {
		if c := w.sessions[a].firstTS.cmp(w.sessions[b].firstTS); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	sessions := make([]any, 0, len(ids))
	for _, id := range ids {
		s := w.sessions[id]
		status, ended := "incomplete", any(nil)
		if s.stopTS != nil {
			status, ended = "completed", s.stopTS.number()
		}
		sessions = append(sessions, map[string]any{
			"session_id":    id,
			"status":        status,
			"started_at_ns": s.firstTS.number(),
			"ended_at_ns":   ended,
			"host":          s.first[fieldHost],
			"pid":           s.first[fieldPID],
			"job_id":        s.first[fieldJobID],
			"rank":          s.first[fieldRank],
			"local_rank":    s.first[fieldLocalRank],
			"world_size":    s.first[fieldWorldSize],
			"source":        w.opts.Source,
		})
	}
	segments := make([]any, 0, len(w.segments))
	for _, seg := range w.segments {
		var session any
		if seg.session != "" {
			session = seg.session
		}
		segments = append(segments, map[string]any{
			"filename": seg.name, "event_count": json.Number(strconv.Itoa(seg.records)),
			"size_bytes": json.Number(strconv.FormatInt(seg.bytes, 10)), "closed": true, "session_id": session,
		})
	}
	body := appendStormlogJSON(nil, map[string]any{
		"schema_version": json.Number(strconv.Itoa(sinkSchemaVersion)),
		"format":         sinkFormat,
		"sessions":       sessions,
		"segments":       segments,
	})
	body = append(body, '\n')
	tmp := filepath.Join(w.dir, "manifest.tmp")
	if err := writeFileSync(tmp, body); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(w.dir, "manifest.json")); err != nil {
		return err
	}
	if d, err := os.Open(w.dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", w.dir, err)
		}
	}
	return nil
}

func writeFileSync(path string, body []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// appendStormlogJSON writes v as stormlog's sink writes a record
// (json.dumps(sort_keys=True)): keys sorted at every depth, numbers as
// decoded, NaN and Infinity as the bare words Python reads back.
func appendStormlogJSON(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, v)
	case json.Number:
		return append(b, v...)
	case NonFinite:
		return append(b, v.String()...)
	case string:
		return appendJSONString(b, v)
	case Record:
		return appendStormlogJSON(b, map[string]any(v))
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendStormlogJSON(b, v[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendStormlogJSON(b, x)
		}
		return append(b, ']')
	default:
		out, err := json.Marshal(v)
		if err != nil {
			return append(b, "null"...)
		}
		return append(b, out...)
	}
}

// appendJSONString writes s as a JSON string without HTML escaping.
func appendJSONString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...)
}
