package telemetry

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/livepeer/edgerelay/internal/logthrottle"
)

// Tailer defaults.
const (
	DefaultTailPoll    = 500 * time.Millisecond
	DefaultTailMaxLine = 16 << 20
)

// Position is where a tailed line ends: resuming at Offset of File reads
// the next line. Emit receives the position of the line it is given.
type Position struct {
	File   string `json:"file"`   // segment file name, e.g. "segment-000003.jsonl"
	Offset int64  `json:"offset"` // byte offset just past the line's newline
	Line   int64  `json:"line"`   // 1-based line number of the line in File
	Inode  uint64 `json:"inode"`  // the file's inode (0 where the platform has none)
}

// TailerOptions configures NewTailer.
type TailerOptions struct {
	Dir       string // the stormlog sink directory (EDGERELAY_STORMLOG_DIR); required
	StatePath string // file that keeps the position across restarts; required, outside Dir is best
	// Poll is how often the directory is looked at; 0 means DefaultTailPoll.
	Poll time.Duration
	// MaxLine bounds one line; a longer one is skipped and counted. 0 means
	// DefaultTailMaxLine.
	MaxLine int
	// Emit receives each complete, non-blank line (without its newline; the
	// slice is the caller's to keep) in file order, from Run's goroutine. The
	// position is persisted only after Emit returns nil; an error makes the
	// tailer offer the same line again at the next poll. So Emit returns an
	// error only for a transient failure: a line it rejects for good (not a
	// valid record) it counts and accepts with nil. Required.
	Emit   func(ctx context.Context, rec json.RawMessage, pos Position) error
	Logger *slog.Logger // nil discards logs
}

// Validate reports every bad field at once.
func (o TailerOptions) Validate() error {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("Dir: required"))
	}
	if o.StatePath == "" {
		errs = append(errs, errors.New("StatePath: required"))
	}
	if o.Poll < 0 {
		errs = append(errs, fmt.Errorf("Poll: must be >= 0, got %v", o.Poll))
	}
	if o.MaxLine < 0 {
		errs = append(errs, fmt.Errorf("MaxLine: must be >= 0, got %d", o.MaxLine))
	}
	if o.Emit == nil {
		errs = append(errs, errors.New("Emit: required"))
	}
	return errors.Join(errs...)
}

func (o TailerOptions) withDefaults() TailerOptions {
	if o.Poll == 0 {
		o.Poll = DefaultTailPoll
	}
	if o.MaxLine == 0 {
		o.MaxLine = DefaultTailMaxLine
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// TailStats counts what the tailer did since it was made. Every line that
// is not emitted is counted under one reason.
type TailStats struct {
	Lines          uint64 // lines emitted (Emit returned nil)
	LostSegments   uint64 // segments deleted before the tailer finished them (see Tailer)
	TruncatedLines uint64 // a finished segment's final line without newline: a torn write
	OversizeLines  uint64 // lines longer than MaxLine, skipped
	Replaced       uint64 // segments replaced (new inode), shrunk, or renumbered from a lower number: read again from 0
}

// Tailer follows a stormlog sink directory (spec/stormlog.md, "Files"): it
// reads segment-NNNNNN.jsonl files in number order, only complete lines,
// follows growth, rollover to the next segment and deletion of old ones, and
// keeps its (file, offset) in StatePath so a restart neither repeats nor
// skips a line.
//
// The directory listing is the truth; manifest.json is not read, since it
// may lag behind the segments or be missing.
//
// Where data can be lost: a segment the tailer has not opened yet that the
// writer deletes is lost and counted (LostSegments, from the gap in segment
// numbers or the vanished file of the saved position). A segment deleted
// while open is read to its end through the open file. The saved position
// is written (temp file and rename) after every emitted line but synced to
// disk only when Run returns, so after a power loss the position may be
// older: lines repeat, never skip.
//
// Run must be called once; Stats is safe from any goroutine.
type Tailer struct {
	opts TailerOptions

	running atomic.Bool
	stats   struct {
		lines, lost, truncated, oversize, replaced atomic.Uint64
	}

	// Owned by Run's goroutine.
	f        *os.File // current segment; nil when none is open
	fnum     int64    // its number
	pos      Position // resume point in it
	skipping bool     // inside an oversize line: drop bytes up to the next newline
	emitLog  *logthrottle.Throttle
	listLog  *logthrottle.Throttle
	stateLog *logthrottle.Throttle
	failing  int // consecutive Emit failures
}

// NewTailer checks opts and returns a tailer that has not started.
func NewTailer(opts TailerOptions) (*Tailer, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Tailer{
		opts:     opts.withDefaults(),
		emitLog:  logthrottle.New(time.Minute, 1),
		listLog:  logthrottle.New(time.Minute, 1),
		stateLog: logthrottle.New(time.Minute, 1),
	}, nil
}

// Stats returns the counters so far.
func (t *Tailer) Stats() TailStats {
	return TailStats{
		Lines:          t.stats.lines.Load(),
		LostSegments:   t.stats.lost.Load(),
		TruncatedLines: t.stats.truncated.Load(),
		OversizeLines:  t.stats.oversize.Load(),
		Replaced:       t.stats.replaced.Load(),
	}
}

// Run follows the directory until ctx is done, then saves its position
// durably and returns nil. It returns an error only when called twice.
// Emit is called from this goroutine.
func (t *Tailer) Run(ctx context.Context) error {
	if !t.running.CompareAndSwap(false, true) {
		return errors.New("telemetry: Tailer.Run called twice")
	}
	t.loadState()
	defer func() {
		if t.f != nil {
			t.f.Close()
			t.f = nil
		}
		if t.pos.File != "" {
			if err := t.saveState(true); err != nil {
				t.opts.Logger.Warn("stormlog tail position not saved at stop", "path", t.opts.StatePath, "err", err,
					"next", "lines since the last saved position will repeat after restart")
			}
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		t.step(ctx)
		timer.Reset(t.opts.Poll)
	}
}

// segment is one segment file in the directory.
type segment struct {
	name string
	num  int64
}

var segmentName = regexp.MustCompile(`^segment-([0-9]{1,18})\.jsonl$`)

func segmentNumber(name string) (int64, bool) {
	m := segmentName.FindStringSubmatch(name)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	return n, err == nil
}

// listSegments returns the directory's segments by number.
func listSegments(dir string) ([]segment, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []segment
	for _, e := range entries {
		if n, ok := segmentNumber(e.Name()); ok && e.Type().IsRegular() {
			segs = append(segs, segment{name: e.Name(), num: n})
		}
	}
	slices.SortFunc(segs, func(a, b segment) int { return cmp.Compare(a.num, b.num) })
	return segs, nil
}

// step reads whatever is complete now, moving on through finished segments.
func (t *Tailer) step(ctx context.Context) {
	for range 1024 { // bounded: each pass finishes a segment or returns
		if ctx.Err() != nil {
			return
		}
		segs, err := listSegments(t.opts.Dir)
		if err != nil {
			if t.listLog.Allow() {
				t.opts.Logger.Warn("stormlog directory unreadable", "dir", t.opts.Dir, "err", err,
					"next", "retry every poll")
			}
			return
		}
		if t.f == nil && !t.open(segs) {
			return
		}
		// Look before reading: a segment is finished when a newer one
		// exists, or its name is gone or names another file. Writers do not
		// append to a segment after starting the next, so what is read after
		// this look is all there will be.
		newer := slices.ContainsFunc(segs, func(s segment) bool { return s.num > t.fnum })
		fdInfo, err := t.f.Stat()
		if err != nil {
			t.opts.Logger.Warn("stormlog segment unreadable", "file", t.pos.File, "err", err, "next", "reopen")
			t.closeFile()
			return
		}
		pathInfo, err := os.Stat(filepath.Join(t.opts.Dir, t.pos.File))
		gone := err != nil
		replaced := !gone && !os.SameFile(pathInfo, fdInfo)
		if fdInfo.Size() < t.pos.Offset {
			// Rewritten in place (truncated): read it again from the start.
			t.stats.replaced.Add(1)
			t.opts.Logger.Warn("stormlog segment shrank", "file", t.pos.File, "size", fdInfo.Size(),
				"offset", t.pos.Offset, "next", "read it again from the start")
			t.pos.Offset, t.pos.Line, t.skipping = 0, 0, false
		}
		if err := t.drain(ctx); err != nil {
			return
		}
		if !newer && !gone && !replaced {
			return // wait for the writer
		}
		t.finish()
		if replaced {
			t.stats.replaced.Add(1)
			t.opts.Logger.Warn("stormlog segment replaced", "file", t.pos.File,
				"next", "read the new file from the start")
			t.pos = Position{File: t.pos.File}
			t.save()
			continue
		}
		if !t.advance(segs) {
			return
		}
	}
}

// open opens the segment of the saved position, or the first one when there
// is none. It reports whether a file is open.
func (t *Tailer) open(segs []segment) bool {
	if t.pos.File == "" {
		if len(segs) == 0 {
			return false
		}
		t.pos = Position{File: segs[0].name}
	}
	num, _ := segmentNumber(t.pos.File)
	f, err := os.Open(filepath.Join(t.opts.Dir, t.pos.File))
	if errors.Is(err, os.ErrNotExist) {
		// Deleted before we finished it (or finished just before a stop:
		// we cannot tell, so it is counted).
		if !slices.ContainsFunc(segs, func(s segment) bool { return s.num > num }) {
			if len(segs) == 0 || segs[0].num >= num {
				return false // nothing newer yet (the listing may predate the deletion): wait
			}
			// Only older segments remain, and a writer never deletes its
			// current one: it started over with new numbers.
			t.stats.replaced.Add(1)
			t.opts.Logger.Warn("stormlog segment numbers went back", "file", t.pos.File, "oldest", segs[0].name,
				"next", "read from the oldest segment")
			t.pos, t.skipping = Position{File: segs[0].name}, false
			t.save()
			return t.open(segs)
		}
		t.stats.lost.Add(1)
		t.opts.Logger.Warn("stormlog segment gone before it was finished", "file", t.pos.File,
			"offset", t.pos.Offset, "next", "continue with the next segment; its remaining lines are lost")
		t.fnum = num
		if !t.advance(segs) {
			return false
		}
		return t.open(segs)
	}
	if err != nil {
		if t.listLog.Allow() {
			t.opts.Logger.Warn("stormlog segment unreadable", "file", t.pos.File, "err", err, "next", "retry every poll")
		}
		return false
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return false
	}
	ino := inodeOf(info)
	if t.pos.Inode != 0 && ino != 0 && ino != t.pos.Inode {
		t.stats.replaced.Add(1)
		t.opts.Logger.Warn("stormlog segment replaced while stopped", "file", t.pos.File,
			"next", "read the new file from the start")
		t.pos = Position{File: t.pos.File}
		t.skipping = false
	}
	t.pos.Inode = ino
	t.f, t.fnum = f, num
	return true
}

// advance moves the position to the first segment after the current one,
// counting numbers skipped in between as lost segments.
func (t *Tailer) advance(segs []segment) bool {
	i := slices.IndexFunc(segs, func(s segment) bool { return s.num > t.fnum })
	if i < 0 {
		return false
	}
	if gap := segs[i].num - t.fnum - 1; gap > 0 && t.fnum > 0 {
		t.stats.lost.Add(uint64(gap))
		t.opts.Logger.Warn("stormlog segments deleted before they were read", "after", t.pos.File,
			"segments", gap, "next", segs[i].name)
	}
	t.pos = Position{File: segs[i].name}
	t.skipping = false
	t.save()
	return true
}

// finish closes a finished segment, counting a torn final line.
func (t *Tailer) finish() {
	if info, err := t.f.Stat(); err == nil && info.Size() > t.pos.Offset && !t.skipping {
		t.stats.truncated.Add(1)
		t.opts.Logger.Warn("stormlog segment ends with a partial line", "file", t.pos.File,
			"bytes", info.Size()-t.pos.Offset, "next", "dropped as a torn write")
	}
	t.closeFile()
}

func (t *Tailer) closeFile() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}

// drain emits the complete lines after the position. It returns an error
// when Emit failed or ctx ended; the position then stays before that line.
func (t *Tailer) drain(ctx context.Context) error {
	r := bufio.NewReaderSize(io.NewSectionReader(t.f, t.pos.Offset, math.MaxInt64-t.pos.Offset), 64<<10)
	var long []byte // a line longer than the reader's buffer, being assembled
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk, err := r.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			if t.skipping {
				t.pos.Offset += int64(len(chunk))
				continue
			}
			long = append(long, chunk...)
			if len(long) > t.opts.MaxLine {
				t.startSkipping(len(long))
				long = nil
			}
			continue
		case errors.Is(err, io.EOF):
			if t.skipping && len(chunk) > 0 {
				t.pos.Offset += int64(len(chunk))
				t.save()
			}
			return nil // a partial line waits for its newline
		case err != nil:
			if t.emitLog.Allow() {
				t.opts.Logger.Warn("stormlog segment read failed", "file", t.pos.File, "offset", t.pos.Offset,
					"err", err, "next", "retry at the next poll")
			}
			return err
		}
		n := int64(len(long) + len(chunk))
		if t.skipping {
			t.pos.Offset += n
			t.pos.Line++
			t.skipping = false
			t.save()
			long = nil
			continue
		}
		line := chunk
		if long != nil {
			line = append(long, chunk...)
			long = nil
		}
		if len(line) > t.opts.MaxLine+1 { // +1: the newline
			t.stats.oversize.Add(1)
			t.opts.Logger.Warn("stormlog line over the size limit", "file", t.pos.File, "line", t.pos.Line+1,
				"bytes", n, "limit", t.opts.MaxLine, "next", "skip it")
			t.pos.Offset += n
			t.pos.Line++
			t.save()
			continue
		}
		body := bytes.TrimSpace(line)
		next := Position{File: t.pos.File, Offset: t.pos.Offset + n, Line: t.pos.Line + 1, Inode: t.pos.Inode}
		if len(body) == 0 {
			t.pos = next // a blank line: saved with the next emitted one
			continue
		}
		if err := t.opts.Emit(ctx, bytes.Clone(body), next); err != nil {
			t.failing++
			if t.emitLog.Allow() {
				t.opts.Logger.Warn("stormlog line not accepted", "file", next.File, "line", next.Line,
					"failures", t.failing, "err", err, "next", "offer it again at the next poll")
			}
			return err
		}
		if t.failing > 0 {
			t.opts.Logger.Info("stormlog lines accepted again", "file", next.File, "line", next.Line,
				"failures", t.failing)
			t.failing = 0
		}
		t.pos = next
		t.stats.lines.Add(1)
		t.save()
	}
}

// startSkipping begins dropping an oversize line whose first n bytes were read.
func (t *Tailer) startSkipping(n int) {
	t.stats.oversize.Add(1)
	t.opts.Logger.Warn("stormlog line over the size limit", "file", t.pos.File, "line", t.pos.Line+1,
		"limit", t.opts.MaxLine, "next", "skip it")
	t.skipping = true
	t.pos.Offset += int64(n)
	t.save()
}

// tailState is the saved position.
type tailState struct {
	Version  int      `json:"version"`
	Position Position `json:"position"`
	Skipping bool     `json:"skipping,omitempty"`
}

const tailStateVersion = 1

func (t *Tailer) loadState() {
	b, err := os.ReadFile(t.opts.StatePath)
	if errors.Is(err, os.ErrNotExist) {
		return // first start: from the oldest segment
	}
	var st tailState
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err == nil && (st.Version != tailStateVersion || st.Position.Offset < 0 || st.Position.Line < 0) {
		err = fmt.Errorf("unsupported state %s", b)
	}
	if err == nil && st.Position.File != "" {
		if _, ok := segmentNumber(st.Position.File); !ok {
			err = fmt.Errorf("not a segment name: %q", st.Position.File)
		}
	}
	if err != nil {
		t.opts.Logger.Warn("stormlog tail position unreadable", "path", t.opts.StatePath, "err", err,
			"next", "start from the oldest segment; lines may repeat")
		return
	}
	t.pos, t.skipping = st.Position, st.Skipping
}

// save writes the position, logging failures (throttled): the tailer goes
// on, and a restart would repeat lines since the last saved position.
func (t *Tailer) save() {
	if err := t.saveState(false); err != nil && t.stateLog.Allow() {
		t.opts.Logger.Warn("stormlog tail position not saved", "path", t.opts.StatePath, "err", err,
			"next", "keep tailing; a restart would repeat lines")
	}
}

// saveState replaces the state file atomically (temp file and rename);
// durable syncs the file and its directory.
func (t *Tailer) saveState(durable bool) error {
	b, err := json.Marshal(tailState{Version: tailStateVersion, Position: t.pos, Skipping: t.skipping})
	if err != nil {
		return err
	}
	tmp := t.opts.StatePath + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, t.opts.StatePath)
	}
	if err == nil && durable {
		if d, derr := os.Open(filepath.Dir(t.opts.StatePath)); derr == nil {
			err = d.Sync()
			d.Close()
		}
	}
	return err
}
