package spool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fill appends n records of size bytes in groups of per, numbered from the
// spool's next seq, and returns the last seq.
func fill(t testing.TB, s *Spool, n, per, size int) uint64 {
	t.Helper()
	next := int(s.Stat().LastSeq) + 1
	for end := next + n; next < end; next += per {
		if err := s.Append(group(next, min(per, end-next), size)); err != nil {
			t.Fatal(err)
		}
	}
	return s.Stat().LastSeq
}

// TestRestart: after close and reopen each sink resumes from its persisted
// cursor, Received starts at the backlog, and seqs continue.
func TestRestart(t *testing.T) {
	const size = 250
	o := testOptions(t)
	s := openSpool(t, o)
	for _, name := range []string{"a", "b", "gone"} {
		if err := s.AddSink(name); err != nil {
			t.Fatal(err)
		}
	}
	fill(t, s, 100, 16, size)
	for name, seq := range map[string]uint64{"a": 60, "b": 30, "gone": 10} {
		if err := s.Ack(name, seq); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RemoveSink("gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openSpool(t, o)
	if got := s.Sinks(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Sinks() after reopen = %v", got)
	}
	if err := s.AddSink("a"); err != nil { // configured again: resumes
		t.Fatal(err)
	}
	st := s.Stat()
	checkIdentity(t, st)
	if st.Sinks["a"] != (SinkStat{Received: 40, Pending: 40, Cursor: 60}) || st.Sinks["b"] != (SinkStat{Received: 70, Pending: 70, Cursor: 30}) {
		t.Fatalf("resumed sinks: %+v", st.Sinks)
	}
	if st.Records != 70 || st.FirstSeq != 31 || st.LastSeq != 100 || st.Quarantined != 0 {
		t.Fatalf("stat after reopen: %+v", st)
	}
	checkSeqs(t, readAll(t, s, "a"), 61, 100, size)
	checkSeqs(t, readAll(t, s, "b"), 31, 100, size)

	// Everything delivered: the records go, the seqs still continue.
	for _, name := range []string{"a", "b"} {
		if err := s.Ack(name, 100); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openSpool(t, o)
	if st := s.Stat(); st.Records != 0 || st.LastSeq != 100 {
		t.Fatalf("drained spool after reopen: %+v", st)
	}
	if err := s.Append(group(101, 3, size)); err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, readAll(t, s, "b"), 101, 103, size)
	if ss, _ := s.SinkStat("b"); ss != (SinkStat{Received: 3, Pending: 3, Cursor: 100}) {
		t.Fatalf("b: %+v", ss)
	}
}

// TestChunkedDeletes: dropping a backlog larger than one transaction
// deletes is done in several transactions and leaves a sound file.
func TestChunkedDeletes(t *testing.T) {
	defer func(n uint64) { maxDeletesPerTx = n }(maxDeletesPerTx)
	maxDeletesPerTx = 100
	o := testOptions(t)
	s := openSpool(t, o)
	for _, name := range []string{"a", "b"} {
		if err := s.AddSink(name); err != nil {
			t.Fatal(err)
		}
	}
	last := fill(t, s, 1050, 350, 100)
	if err := s.Ack("b", last); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveSink("a"); err != nil { // 1050 records go in 11 transactions
		t.Fatal(err)
	}
	if st := s.Stat(); st.Records != 0 || s.diskFirst != last+1 {
		t.Fatalf("%+v, disk from %d", st, s.diskFirst)
	}
	fill(t, s, 5, 5, 100)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openSpool(t, o)
	checkSeqs(t, readAll(t, s, "b"), last+1, last+5, 100)
	if got := s.Sinks(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("Sinks() = %v", got)
	}
}

// TestCorruption damages a spool file three ways: Open moves it aside under
// the documented name, counts it, and starts an empty spool that works.
func TestCorruption(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, path string, hwm int64)
	}{
		{"truncated", func(t *testing.T, path string, hwm int64) {
			if err := os.Truncate(path, hwm/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"random bytes in the middle", func(t *testing.T, path string, hwm int64) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			junk := make([]byte, 512)
			r := rand.NewChaCha8([32]byte{7})
			_, _ = r.Read(junk)
			if _, err := f.WriteAt(junk, hwm/2+100); err != nil {
				t.Fatal(err)
			}
		}},
		{"zero length", func(t *testing.T, path string, _ int64) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(t)
			o.Now = func() time.Time { return fixedNow }
			s := openSpool(t, o)
			if err := s.AddSink("a"); err != nil {
				t.Fatal(err)
			}
			fill(t, s, 3000, 256, 300)
			hwm := s.Stat().Bytes
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, o.Path, hwm)
			damaged, err := os.ReadFile(o.Path)
			if err != nil {
				t.Fatal(err)
			}

			s = openSpool(t, o)
			st := s.Stat()
			if st.Quarantined != 1 || st.Records != 0 || st.LastSeq != 0 || len(st.Sinks) != 0 {
				t.Fatalf("after quarantine: %+v", st)
			}
			moved, err := os.ReadFile(o.Path + ".corrupt-20260102T030405")
			if err != nil {
				t.Fatalf("quarantined file: %v", err)
			}
			if !bytes.Equal(moved, damaged) {
				t.Fatal("the quarantined file is not the damaged one")
			}
			if err := s.AddSink("a"); err != nil {
				t.Fatal(err)
			}
			fill(t, s, 10, 5, 300)
			checkSeqs(t, readAll(t, s, "a"), 1, 10, 300)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openSpool(t, o) // the fresh file is sound
			if st := s.Stat(); st.Quarantined != 0 || st.Records != 10 {
				t.Fatalf("reopened fresh spool: %+v", st)
			}
			if _, err := Inspect(o.Path+".corrupt-20260102T030405", time.Second); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Inspect(damaged) = %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestQuarantineNameTaken: a second quarantine in the same second keeps
// both files.
func TestQuarantineNameTaken(t *testing.T) {
	o := testOptions(t)
	o.Now = func() time.Time { return fixedNow }
	if err := os.MkdirAll(filepath.Dir(o.Path), 0o700); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := os.WriteFile(o.Path, []byte("not a bbolt file, number "+string(rune('1'+i))), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(o.Path); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{".corrupt-20260102T030405", ".corrupt-20260102T030405-2"} {
		if _, err := os.Stat(o.Path + name); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLocked: a second Open of a held file fails within its timeout, naming
// the path; Inspect does too; once the first closes, it opens.
func TestLocked(t *testing.T) {
	o := testOptions(t)
	s := openSpool(t, o)
	o2 := o
	o2.LockTimeout = 300 * time.Millisecond
	start := time.Now()
	s2, err := Open(o2)
	took := time.Since(start)
	if err == nil {
		_ = s2.Close()
		t.Fatal("second Open of a held file succeeded")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), o.Path) || !strings.Contains(err.Error(), "another edgerelay") {
		t.Fatalf("err = %v", err)
	}
	if took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("gave up after %v, timeout 300ms", took)
	}
	if _, err := Inspect(o.Path, 100*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("Inspect(held) = %v", err)
	}
	if _, err := os.Stat(o.Path + ".corrupt-" + time.Now().UTC().Format("20060102T150405")); err == nil {
		t.Fatal("a held file was quarantined")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 = openSpool(t, o2)
	if st := s2.Stat(); st.Quarantined != 0 {
		t.Fatalf("%+v", st)
	}
}

// TestDiskFull: while writes fail, Append keeps accepting records in memory
// (ErrNotDurable, Degraded), Read and Ack work across disk and memory, and
// retries come at most once a second; once writes succeed the held records
// move to disk, in order, and survive a restart. Virtual time (synctest)
// drives the retry interval.
func TestDiskFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 200
		o := testOptions(t)
		s := openSpool(t, o)
		for _, name := range []string{"a", "b"} {
			if err := s.AddSink(name); err != nil {
				t.Fatal(err)
			}
		}
		fill(t, s, 20, 10, size) // 1..20 on disk

		s.failWrites.Store(true)
		err := s.Append(group(21, 10, size))
		if !errors.Is(err, ErrNotDurable) || !strings.Contains(err.Error(), "no space left") {
			t.Fatalf("Append with the disk full = %v", err)
		}
		if st := s.Stat(); !st.Degraded || st.LastSeq != 30 {
			t.Fatalf("%+v", st)
		}
		checkSeqs(t, readAll(t, s, "a"), 1, 30, size)
		if err := s.Ack("a", 25); err != nil { // across disk and memory
			t.Fatal(err)
		}
		checkSeqs(t, readAll(t, s, "a"), 26, 30, size)
		if err := s.Ack("b", 5); err != nil {
			t.Fatal(err)
		}
		if ss, _ := s.SinkStat("a"); ss.Cursor != 25 || ss.Acked != 25 {
			t.Fatalf("a: %+v", ss)
		}

		// The disk recovers, but within the second no write is tried.
		s.failWrites.Store(false)
		if err := s.Append(group(31, 5, size)); !errors.Is(err, ErrNotDurable) {
			t.Fatalf("Append within the retry interval = %v", err)
		}
		if !s.Stat().Degraded {
			t.Fatal("recovered without a retry")
		}
		time.Sleep(retryInterval)
		if err := s.Append(group(36, 5, size)); err != nil {
			t.Fatalf("Append after the retry interval = %v", err)
		}
		st := s.Stat()
		if st.Degraded || st.Bytes < 4096 {
			t.Fatalf("after recovery: %+v", st)
		}
		checkIdentity(t, st)
		checkSeqs(t, readAll(t, s, "a"), 26, 40, size)
		checkSeqs(t, readAll(t, s, "b"), 6, 40, size)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		s = openSpool(t, o) // all of it, and the cursors, reached the disk
		checkSeqs(t, readAll(t, s, "a"), 26, 40, size)
		checkSeqs(t, readAll(t, s, "b"), 6, 40, size)
	})
}

// TestDiskFullCap: held records are bounded by the same cap; the oldest go,
// on disk (logically, deleted once writes work) and in memory alike.
func TestDiskFullCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 500
		o := testOptions(t)
		o.MaxBytes = 256 << 10
		s := openSpool(t, o)
		if err := s.AddSink("a"); err != nil {
			t.Fatal(err)
		}
		fill(t, s, 100, 50, size)
		s.failWrites.Store(true)
		next := 101
		for range 100 { // ~5 MB offered, 20 times the cap
			if err := s.Append(group(next, 100, size)); !errors.Is(err, ErrNotDurable) {
				t.Fatal(err)
			}
			next += 100
			if s.heldCost > s.budget {
				t.Fatalf("held %d bytes, over the target %d", s.heldCost, s.budget)
			}
			checkIdentity(t, s.Stat())
		}
		st := s.Stat()
		a := st.Sinks["a"]
		if a.Evicted == 0 || a.Cursor != a.Evicted || st.FirstSeq != a.Evicted+1 || st.LastSeq != uint64(next-1) {
			t.Fatalf("%+v %+v", st, a)
		}
		recs := readAll(t, s, "a")
		checkSeqs(t, recs, st.FirstSeq, st.LastSeq, size)

		s.failWrites.Store(false)
		time.Sleep(retryInterval)
		if err := s.Append(group(next, 1, size)); err != nil {
			t.Fatal(err)
		}
		st = s.Stat()
		checkIdentity(t, st)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openSpool(t, o)
		st2 := s.Stat()
		if st2.FirstSeq != st.FirstSeq || st2.LastSeq != st.LastSeq {
			t.Fatalf("on disk after recovery: %+v, in memory before: %+v", st2, st)
		}
		checkSeqs(t, readAll(t, s, "a"), st.FirstSeq, st.LastSeq, size)
	})
}

// TestReclaim: a file that grew during a backlog shrinks once it drains,
// and the records left survive the compaction and a restart.
func TestReclaim(t *testing.T) {
	const size = 300
	o := testOptions(t)
	o.CompactMinBytes = 1 << 20
	s := openSpool(t, o)
	if err := s.AddSink("a"); err != nil {
		t.Fatal(err)
	}
	last := fill(t, s, 20<<20/size, 2048, size) // ~20 MB backlog
	peak := s.Stat().Bytes
	if peak < 20<<20 {
		t.Fatalf("file is %d bytes after a 20 MB backlog", peak)
	}
	// Drain all but the last 10, as a forwarder would.
	for {
		recs, err := s.Read("a", 5000, 0)
		if err != nil {
			t.Fatal(err)
		}
		end := recs[len(recs)-1].Seq
		if end > last-10 {
			end = last - 10
		}
		if err := s.Ack("a", end); err != nil {
			t.Fatal(err)
		}
		if end == last-10 {
			break
		}
	}
	if err := s.Sync(); err != nil { // the flusher would within AckDelay
		t.Fatal(err)
	}
	st := s.Stat()
	fi, err := os.Stat(o.Path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes > peak/16 || fi.Size() > 2<<20 {
		t.Fatalf("after draining: in use %d bytes, file %d bytes, peak %d", st.Bytes, fi.Size(), peak)
	}
	t.Logf("peak %d bytes, after drain %d in use, file %d", peak, st.Bytes, fi.Size())
	checkSeqs(t, readAll(t, s, "a"), last-9, last, size)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(o.Path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("compaction left its temporary file: %v", err)
	}
	s = openSpool(t, o)
	checkSeqs(t, readAll(t, s, "a"), last-9, last, size)
}

// TestInspectDump reads a stopped spool's file without changing it.
func TestInspectDump(t *testing.T) {
	const size = 100
	o := testOptions(t)
	s := openSpool(t, o)
	for _, name := range []string{"a", "b"} {
		if err := s.AddSink(name); err != nil {
			t.Fatal(err)
		}
	}
	fill(t, s, 10, 10, size)
	if err := s.Append([][]byte{[]byte("not json <&>")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack("a", 4); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack("b", 8); err != nil {
		t.Fatal(err)
	}
	want := s.Stat()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(o.Path)

	st, err := Inspect(o.Path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != want.Records || st.FirstSeq != 5 || st.LastSeq != 11 || st.Bytes != want.Bytes ||
		st.Sinks["a"] != (SinkStat{Received: 7, Pending: 7, Cursor: 4}) || st.Sinks["b"].Cursor != 8 {
		t.Fatalf("Inspect = %+v, spool said %+v", st, want)
	}

	var out bytes.Buffer
	if err := Dump(o.Path, "b", 0, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("dump for b: %q", out.String())
	}
	for i, line := range lines[:2] {
		var l struct {
			Seq  uint64
			Data json.RawMessage
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		if l.Seq != uint64(9+i) || !bytes.Equal(l.Data, envelope(9+i, size)) {
			t.Fatalf("line %d: %s", i, line)
		}
	}
	if lines[2] != `{"seq":11,"raw":"not json <&>"}` {
		t.Fatalf("non-JSON record: %s", lines[2])
	}
	out.Reset()
	if err := Dump(o.Path, "", 2, &out); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 2 || !strings.HasPrefix(out.String(), `{"seq":5,`) {
		t.Fatalf("dump --limit 2: %q", out.String())
	}
	if err := Dump(o.Path, "nope", 0, &out); !errors.Is(err, ErrUnknownSink) {
		t.Fatalf("Dump(unknown sink) = %v", err)
	}
	if _, err := Inspect(filepath.Join(t.TempDir(), "missing.db"), 0); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Inspect(missing) = %v", err)
	}
	if after, _ := os.ReadFile(o.Path); !bytes.Equal(before, after) {
		t.Fatal("Inspect or Dump changed the file")
	}
}

func TestOptionsValidate(t *testing.T) {
	err := Options{MaxBytes: 10, LockTimeout: -1, CompactMinBytes: -1, MemoryMaxBytes: 10, AckDelay: -1, AckMaxUnsynced: -1}.Validate()
	for _, field := range []string{"Path", "MaxBytes", "LockTimeout", "CompactMinBytes", "MemoryMaxBytes", "AckDelay", "AckMaxUnsynced"} {
		if err == nil || !strings.Contains(err.Error(), "Options."+field) {
			t.Errorf("Validate does not name %s: %v", field, err)
		}
	}
	if err := (Options{Path: "x"}).Validate(); err != nil {
		t.Errorf("zero options with a path: %v", err)
	}
	if _, err := Open(Options{}); err == nil {
		t.Error("Open without a path succeeded")
	}
	if err := (openSpool(t, testOptions(t))).AddSink(""); err == nil {
		t.Error("AddSink(\"\") succeeded")
	}
}

// countHandler counts log records by message.
type countHandler struct {
	slog.Handler
	mu *sync.Mutex
	n  map[string]int
}

func (h countHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.n[r.Message]++
	h.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h countHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h.Handler = h.Handler.WithAttrs(as)
	return h
}

func (h countHandler) WithGroup(name string) slog.Handler {
	h.Handler = h.Handler.WithGroup(name)
	return h
}

func (h countHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[msg]
}

// TestCompactionUnderLoad compacts while a writer appends and two
// forwarders read and ack (for -race, and for the file swap under readers):
// every record arrives once, in order.
func TestCompactionUnderLoad(t *testing.T) {
	const (
		groups = 80
		per    = 100
		size   = 200
	)
	o := testOptions(t)
	h := countHandler{Handler: o.Logger.Handler(), mu: &sync.Mutex{}, n: map[string]int{}}
	o.Logger = slog.New(h)
	o.CompactMinBytes = 64 << 10
	s := openSpool(t, o)
	sinks := []string{"a", "b"}
	for _, name := range sinks {
		if err := s.AddSink(name); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	backlog := make(chan struct{}) // the forwarders start behind, so the file grows and then drains
	wg.Go(func() {
		defer close(done)
		for i := range groups {
			if i == groups/2 {
				close(backlog)
			}
			if err := s.Append(group(1+i*per, per, size)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	got := make([][]Record, len(sinks))
	for i, name := range sinks {
		wg.Go(func() {
			<-backlog
			for len(got[i]) < groups*per {
				recs, err := s.Read(name, 300, 0)
				if err != nil {
					t.Error(err)
					return
				}
				if len(recs) == 0 {
					select {
					case <-s.Ready(name):
					case <-done:
					}
					continue
				}
				got[i] = append(got[i], recs...)
				if err := s.Ack(name, recs[len(recs)-1].Seq); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range sinks {
		checkSeqs(t, got[i], 1, groups*per, size)
	}
	if n := h.count("spool compacted"); n == 0 {
		t.Fatal("no compaction happened; the test proves nothing")
	} else {
		t.Logf("%d compactions", n)
	}
}
