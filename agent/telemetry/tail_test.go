package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

const testPoll = 50 * time.Millisecond

// tailHarness runs a Tailer inside a synctest bubble and records what it
// emits. poll lets virtual time pass until the tailer is idle again.
type tailHarness struct {
	t     *testing.T
	dir   string
	state string
	opts  TailerOptions

	mu    sync.Mutex
	lines []string
	pos   []Position
	fail  func(line string) error // nil: accept everything

	tailer *Tailer
	cancel context.CancelFunc
	done   chan error
	logs   *bytes.Buffer
}

func newTailHarness(t *testing.T) *tailHarness {
	h := &tailHarness{t: t, dir: t.TempDir(), logs: &bytes.Buffer{}}
	h.state = filepath.Join(t.TempDir(), "tail-state.json")
	return h
}

func (h *tailHarness) emit(_ context.Context, rec json.RawMessage, pos Position) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail != nil {
		if err := h.fail(string(rec)); err != nil {
			return err
		}
	}
	h.lines = append(h.lines, string(rec))
	h.pos = append(h.pos, pos)
	return nil
}

func (h *tailHarness) start() {
	h.t.Helper()
	opts := h.opts
	opts.Dir, opts.StatePath, opts.Emit = h.dir, h.state, h.emit
	if opts.Poll == 0 {
		opts.Poll = testPoll
	}
	opts.Logger = slog.New(slog.NewTextHandler(&lockedWriter{w: h.logs, mu: &h.mu}, nil))
	tl, err := NewTailer(opts)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.t.Context())
	h.tailer, h.cancel, h.done = tl, cancel, make(chan error, 1)
	go func() { h.done <- tl.Run(ctx) }()
	synctest.Wait()
}

func (h *tailHarness) stop() {
	h.t.Helper()
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Fatalf("Run: %v", err)
	}
}

// poll lets one poll interval pass and waits until the tailer is idle.
func (h *tailHarness) poll() {
	time.Sleep(testPoll)
	synctest.Wait()
}

func (h *tailHarness) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.lines)
}

func (h *tailHarness) log() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.logs.String()
}

func (h *tailHarness) expect(want ...string) {
	h.t.Helper()
	if got := h.got(); !slices.Equal(got, want) {
		h.t.Fatalf("emitted %q, want %q", got, want)
	}
}

func (h *tailHarness) path(n int) string {
	return filepath.Join(h.dir, fmt.Sprintf("segment-%06d.jsonl", n))
}

func (h *tailHarness) append(n int, s string) {
	h.t.Helper()
	f, err := os.OpenFile(h.path(n), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		h.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		h.t.Fatal(err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestTailGrowthAndPartialLines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTailHarness(t)
		h.start()
		h.poll()
		h.expect() // no segment yet

		h.append(1, "{\"n\":1}\n{\"n\":2")
		h.poll()
		h.expect(`{"n":1}`) // the partial line waits

		h.append(1, "}\n\n  \n{\"n\":3}\r\n")
		h.poll()
		h.expect(`{"n":1}`, `{"n":2}`, `{"n":3}`)
		h.mu.Lock()
		pos := slices.Clone(h.pos)
		h.mu.Unlock()
		want := []Position{{File: "segment-000001.jsonl", Offset: 8, Line: 1}, {File: "segment-000001.jsonl", Offset: 16, Line: 2}, {File: "segment-000001.jsonl", Offset: 29, Line: 5}}
		for i := range want {
			want[i].Inode = pos[i].Inode
			if pos[i] != want[i] {
				t.Fatalf("pos[%d] = %+v, want %+v", i, pos[i], want[i])
			}
		}
		if pos[0].Inode == 0 {
			t.Error("no inode recorded")
		}
		h.stop()
		if st := h.tailer.Stats(); st != (TailStats{Lines: 3}) {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestTailRolloverAndTornLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTailHarness(t)
		h.append(1, "{\"n\":1}\n{\"n\":")
		h.start()
		h.expect(`{"n":1}`)
		// The writer crashed mid-line and a new segment began: the torn line
		// is dropped and counted, the next segment read.
		h.append(2, "{\"n\":2}\n")
		h.poll()
		h.expect(`{"n":1}`, `{"n":2}`)
		h.append(1, "3}\n") // nobody appends to a finished segment; if they do, it is not read
		h.append(3, "{\"n\":4}\n")
		h.append(5, "{\"n\":5}\n")
		h.poll()
		h.expect(`{"n":1}`, `{"n":2}`, `{"n":4}`, `{"n":5}`)
		h.stop()
		st := h.tailer.Stats()
		if st.TruncatedLines != 1 || st.Lines != 4 || st.LostSegments != 1 { // segment 4 never existed: counted as a gap
			t.Fatalf("stats %+v", st)
		}
		if !strings.Contains(h.log(), "stormlog segment ends with a partial line") {
			t.Fatalf("log: %s", h.log())
		}
	})
}

// A segment deleted while open is read to its end through the open file.
func TestTailSegmentDeletedWhileOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTailHarness(t)
		h.append(1, "{\"n\":1}\n")
		h.start()
		h.expect(`{"n":1}`)
		h.append(1, "{\"n\":2}\n{\"n\":3}\n")
		if err := os.Remove(h.path(1)); err != nil {
			t.Fatal(err)
		}
		h.append(2, "{\"n\":4}\n")
		h.poll()
		h.expect(`{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":4}`)
		h.stop()
		if st := h.tailer.Stats(); st.LostSegments != 0 || st.Lines != 4 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// Segments deleted before the tailer reached them are counted as lost.
func TestTailSegmentsDeletedBeforeRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTailHarness(t)
		h.append(1, "{\"n\":1}\n")
		h.start()
		h.expect(`{"n":1}`)
		for n := 2; n <= 4; n++ {
			h.append(n, fmt.Sprintf("{\"n\":%d}\n", n))
		}
		os.Remove(h.path(2))
		os.Remove(h.path(3))
		h.poll()
		h.expect(`{"n":1}`, `{"n":4}`)
		h.stop()
		if st := h.tailer.Stats(); st.LostSegments != 2 {
			t.Fatalf("stats %+v", st)
		}
		if !strings.Contains(h.log(), "stormlog segments deleted before they were read") || !strings.Contains(h.log(), "segments=2") {
			t.Fatalf("log: %s", h.log())
		}

		// Restart from a saved position whose segment is gone.
		h.append(6, "{\"n\":6}\n")
		os.Remove(h.path(4))
		h.start()
		h.expect(`{"n":1}`, `{"n":4}`, `{"n":6}`)
		h.stop()
		if st := h.tailer.Stats(); st.LostSegments != 2 { // segment 4 (gone, counted though it was finished) and 5 (gap)
			t.Fatalf("stats after restart %+v", st)
		}
		if !strings.Contains(h.log(), "stormlog segment gone before it was finished") {
			t.Fatalf("log: %s", h.log())
		}
	})
}

// A writer that starts over at segment 1 is followed, not waited for.
func TestTailNumberingReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTailHarness(t)
		h.append(5, "{\"n\":5}\n")
		h.start()
		h.expect(`{"n":5}`)
		h.stop()
		os.Remove(h.path(5))
		h.append(1, "{\"n\":1}\n")
		h.append(2, "{\"n\":2}\n")
		h.start()
		h.expect(`{"n":5}`, `{"n":1}`, `{"n":2}`)
		h.stop()
		if st := h.tailer.Stats(); st.Replaced != 1 || st.LostSegments != 0 {
			t.Fatalf("stats %+v", st)
		}
		// With nothing left at all, it waits for the next segment.
		os.Remove(h.path(1))
		os.Remove(h.path(2))
		h.start()
		h.poll()
		h.append(3, "{\"n\":3}\n")
		h.poll()
		h.expect(`{"n":5}`, `{"n":1}`, `{"n":2}`, `{"n":3}`)
		h.stop()
	})
}

func TestTailSegmentReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTailHarness(t)
		h.append(1, "{\"n\":1}\n{\"n\":2}\n")
		h.start()
		h.expect(`{"n":1}`, `{"n":2}`)

		// Replaced by rename (new inode): read from the start.
		tmp := filepath.Join(h.dir, "tmp")
		os.WriteFile(tmp, []byte("{\"r\":1}\n{\"r\":2}\n{\"r\":3}\n"), 0o644)
		if err := os.Rename(tmp, h.path(1)); err != nil {
			t.Fatal(err)
		}
		h.poll()
		h.expect(`{"n":1}`, `{"n":2}`, `{"r":1}`, `{"r":2}`, `{"r":3}`)

		// Truncated and rewritten in place: read again from the start.
		os.WriteFile(h.path(1), []byte("{\"t\":1}\n"), 0o644)
		h.poll()
		h.expect(`{"n":1}`, `{"n":2}`, `{"r":1}`, `{"r":2}`, `{"r":3}`, `{"t":1}`)
		h.stop()

		// Replaced while stopped: the saved inode no longer matches.
		os.WriteFile(tmp, []byte("{\"s\":1}\n{\"s\":2}\n"), 0o644)
		os.Rename(tmp, h.path(1))
		h.start()
		h.expect(`{"n":1}`, `{"n":2}`, `{"r":1}`, `{"r":2}`, `{"r":3}`, `{"t":1}`, `{"s":1}`, `{"s":2}`)
		h.stop()
		if st := h.tailer.Stats(); st.Replaced != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// The manifest is not needed: missing, lagging or naming deleted segments.
func TestTailIgnoresManifest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTailHarness(t)
		h.append(1, "{\"n\":1}\n")
		h.start()
		h.expect(`{"n":1}`)
		// A lagging manifest that still names segment 1 only, and a junk one.
		os.WriteFile(filepath.Join(h.dir, "manifest.json"), []byte(`{"segments":["segment-000001.jsonl"]}`), 0o644)
		h.append(2, "{\"n\":2}\n")
		h.poll()
		os.WriteFile(filepath.Join(h.dir, "manifest.json"), []byte(`{not json`), 0o644)
		os.WriteFile(filepath.Join(h.dir, "segment-x.jsonl"), []byte("{\"junk\":1}\n"), 0o644)
		h.append(3, "{\"n\":3}\n")
		h.poll()
		h.expect(`{"n":1}`, `{"n":2}`, `{"n":3}`)
		h.stop()
	})
}

func TestTailOversizeLines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTailHarness(t)
		h.opts.MaxLine = 100
		big := `{"big":"` + strings.Repeat("x", 200) + `"}`
		huge := `{"huge":"` + strings.Repeat("y", 100<<10) + `"}` // beyond the 64 KiB read buffer
		h.append(1, "{\"n\":1}\n"+big+"\n{\"n\":2}\n"+huge+"\n{\"n\":3}\n")
		h.start()
		h.expect(`{"n":1}`, `{"n":2}`, `{"n":3}`)
		// An oversize line still being written: skipped as it grows, across a restart.
		h.append(1, huge[:80<<10])
		h.poll()
		h.stop()
		if st := h.tailer.Stats(); st.OversizeLines != 3 || st.Lines != 3 {
			t.Fatalf("stats %+v", st)
		}
		h.start()
		h.append(1, huge[80<<10:]+"\n{\"n\":4}\n")
		h.poll()
		h.expect(`{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":4}`)
		h.stop()
		if st := h.tailer.Stats(); st.OversizeLines != 0 || st.Lines != 1 { // the second run only finished the skip
			t.Fatalf("stats %+v", st)
		}
		h.mu.Lock()
		last := h.pos[len(h.pos)-1]
		h.mu.Unlock()
		if last.Line != 7 {
			t.Fatalf("line numbering: %+v", last)
		}
	})
}

// Emit failures leave the position before the line; it is offered again
// and emitted once.
func TestTailEmitRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTailHarness(t)
		failures := 3
		h.fail = func(line string) error {
			if line == `{"n":2}` && failures > 0 {
				failures--
				return errors.New("spool busy")
			}
			return nil
		}
		h.append(1, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n")
		h.start()
		h.expect(`{"n":1}`)
		h.stop() // saved before n:2
		h.start()
		h.expect(`{"n":1}`)
		h.poll()
		h.poll()
		h.expect(`{"n":1}`, `{"n":2}`, `{"n":3}`)
		h.stop()
		logs := h.log()
		if strings.Count(logs, "stormlog line not accepted") != 2 || !strings.Contains(logs, "stormlog lines accepted again") {
			t.Fatalf("log: %s", logs)
		}
	})
}

func TestTailRestartResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTailHarness(t)
		h.append(1, "{\"n\":1}\n")
		h.start()
		h.stop()
		h.append(1, "{\"n\":2}\n")
		h.append(2, "{\"n\":3}\n")
		h.start()
		h.stop()
		h.start()
		h.expect(`{"n":1}`, `{"n":2}`, `{"n":3}`)
		h.stop()
		b, err := os.ReadFile(h.state)
		if err != nil || !strings.Contains(string(b), `"file":"segment-000002.jsonl","offset":8,"line":1`) {
			t.Fatalf("state %s %v", b, err)
		}

		// A corrupt state file: start over from the oldest segment (repeats, never skips).
		os.WriteFile(h.state, []byte("garbage"), 0o644)
		h.start()
		h.expect(`{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":1}`, `{"n":2}`, `{"n":3}`)
		h.stop()
		if !strings.Contains(h.log(), "stormlog tail position unreadable") {
			t.Fatalf("log: %s", h.log())
		}
	})
}

func TestTailerOptions(t *testing.T) {
	err := TailerOptions{Poll: -1, MaxLine: -1}.Validate()
	want := "Dir: required\nStatePath: required\nPoll: must be >= 0, got -1ns\nMaxLine: must be >= 0, got -1\nEmit: required"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewTailer(TailerOptions{}); err == nil {
		t.Fatal("NewTailer accepted empty options")
	}
	synctest.Test(t, func(t *testing.T) {
		tl, err := NewTailer(TailerOptions{Dir: t.TempDir(), StatePath: filepath.Join(t.TempDir(), "s"),
			Emit: func(context.Context, json.RawMessage, Position) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- tl.Run(ctx) }()
		synctest.Wait()
		if err := tl.Run(ctx); err == nil {
			t.Fatal("second Run accepted")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// stormWriter imitates stormlog's sink: sorted-key lines, flushed in
// batches that may end mid-line, rollover at a small number of records,
// old closed segments deleted, a manifest rewritten by rename that lags.
type stormWriter struct {
	dir          string
	perSegment   int // rollover
	flushEvery   int // records per flush
	keep         int // closed segments kept
	manifestLags bool

	seg    int
	inSeg  int
	f      *os.File
	buf    []byte
	closed []int
}

func (w *stormWriter) record(i int) string {
	rec := fmt.Sprintf(`{"allocator_active_bytes":null,"allocator_allocated_bytes":%d,"allocator_change_bytes":0,`+
		`"allocator_inactive_bytes":null,"allocator_reserved_bytes":%d,"collector":"stormlog.cuda_tracker","context":null,`+
		`"device_free_bytes":null,"device_id":0,"device_total_bytes":null,"device_used_bytes":%d,"event_type":"sample",`+
		`"host":"h","job_id":null,"local_rank":0,"metadata":{},"pid":7,"rank":0,"sampling_interval_ms":10,`+
		`"schema_version":3,"session_id":"rec-%06d","timestamp_ns":%d,"world_size":1}`, i, i, i, i, 1_000_000+i)
	return rec
}

func (w *stormWriter) open() error {
	w.seg++
	w.inSeg = 0
	var err error
	w.f, err = os.Create(filepath.Join(w.dir, fmt.Sprintf("segment-%06d.jsonl", w.seg)))
	if err == nil && (!w.manifestLags || w.seg%2 == 1) {
		err = w.manifest()
	}
	return err
}

func (w *stormWriter) manifest() error {
	tmp := filepath.Join(w.dir, "manifest.json.tmp")
	b, _ := json.Marshal(map[string]any{"current": w.seg, "closed": w.closed})
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(w.dir, "manifest.json"))
}

// flush writes the buffer in two writes split mid-line, with a pause
// between, so a reader can see half a line.
func (w *stormWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	half := len(w.buf) / 2
	if _, err := w.f.Write(w.buf[:half]); err != nil {
		return err
	}
	time.Sleep(3 * time.Millisecond)
	if _, err := w.f.Write(w.buf[half:]); err != nil {
		return err
	}
	w.buf = w.buf[:0]
	return nil
}

func (w *stormWriter) rollover() error {
	if err := w.flush(); err != nil {
		return err
	}
	if err := w.f.Close(); err != nil {
		return err
	}
	w.closed = append(w.closed, w.seg)
	for len(w.closed) > w.keep {
		if err := os.Remove(filepath.Join(w.dir, fmt.Sprintf("segment-%06d.jsonl", w.closed[0]))); err != nil {
			return err
		}
		w.closed = w.closed[1:]
	}
	return w.open()
}

// The acceptance test: a writer appends, rolls over at a small size and
// deletes old segments while the tailer follows; the tailer is stopped and
// restarted midway, Emit fails now and then; every complete record is
// emitted exactly once, in order.
func TestTailConcurrentWriterRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTailHarness(t)
		const total = 1000
		calls := 0
		h.fail = func(string) error {
			calls++
			if calls%97 == 0 {
				return errors.New("transient")
			}
			return nil
		}
		w := &stormWriter{dir: h.dir, perSegment: 40, flushEvery: 7, keep: 3, manifestLags: true}
		if err := w.open(); err != nil {
			t.Fatal(err)
		}
		torn := -1
		writerDone := make(chan error, 1)
		go func() {
			writerDone <- func() error {
				for i := range total {
					w.buf = append(w.buf, w.record(i)...)
					w.buf = append(w.buf, '\n')
					w.inSeg++
					if i == 555 {
						// A torn write: half a record, then the segment ends.
						torn = total + 500 // an id no complete line carries
						rec := w.record(torn)
						w.buf = append(w.buf, rec[:len(rec)/2]...)
						if err := w.rollover(); err != nil {
							return err
						}
						continue
					}
					if w.inSeg%w.flushEvery == 0 {
						if err := w.flush(); err != nil {
							return err
						}
					}
					if w.inSeg >= w.perSegment {
						if err := w.rollover(); err != nil {
							return err
						}
					}
					time.Sleep(5 * time.Millisecond)
				}
				if err := w.flush(); err != nil {
					return err
				}
				return w.f.Close()
			}()
		}()

		h.start()
		time.Sleep(1800 * time.Millisecond)
		h.stop()
		first := len(h.got())
		firstStats := h.tailer.Stats()
		time.Sleep(300 * time.Millisecond) // stopped while the writer goes on
		h.start()
		if err := <-writerDone; err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		h.stop()

		got := h.got()
		if first == 0 || first >= len(got) {
			t.Fatalf("restart not midway: %d before, %d in all", first, len(got))
		}
		seen := map[string]int{}
		var order []string
		for _, line := range got {
			var r struct {
				SessionID string `json:"session_id"`
			}
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("emitted a partial line %q: %v", line, err)
			}
			seen[r.SessionID]++
			order = append(order, r.SessionID)
		}
		var missing, dup []string
		for i := range total {
			id := fmt.Sprintf("rec-%06d", i)
			switch {
			case seen[id] == 0:
				missing = append(missing, id)
			case seen[id] > 1:
				dup = append(dup, id)
			}
		}
		if torn < 0 || seen[fmt.Sprintf("rec-%06d", torn)] != 0 {
			t.Errorf("torn record %d emitted", torn)
		}
		if len(missing) > 0 || len(dup) > 0 {
			t.Fatalf("missing %v, duplicated %v", missing, dup)
		}
		if !slices.IsSorted(order) {
			t.Fatal("records out of order")
		}
		st := h.tailer.Stats()
		if firstStats.LostSegments+st.LostSegments != 0 || firstStats.TruncatedLines+st.TruncatedLines != 1 ||
			firstStats.Lines+st.Lines != total {
			t.Fatalf("stats %+v then %+v", firstStats, st)
		}
		if len(got) != total {
			t.Fatalf("%d records, want %d", len(got), total)
		}
		if w.seg < 20 {
			t.Fatalf("only %d segments written", w.seg)
		}
	})
}

// A position that cannot be saved is logged (throttled) and tailing goes on.
func TestTailStateNotSaved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTailHarness(t)
		h.state = filepath.Join(h.dir, "missing-dir", "state.json")
		h.append(1, "{\"n\":1}\n{\"n\":2}\n")
		h.start()
		h.append(1, "{\"n\":3}\n")
		h.poll()
		h.expect(`{"n":1}`, `{"n":2}`, `{"n":3}`)
		h.stop()
		logs := h.log()
		// Three lines failed to save; the warning is logged once.
		if strings.Count(logs, `msg="stormlog tail position not saved"`) != 1 ||
			!strings.Contains(logs, `msg="stormlog tail position not saved at stop"`) {
			t.Fatalf("log: %s", logs)
		}
	})
}
