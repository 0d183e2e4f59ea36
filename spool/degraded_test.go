package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepeer/edgerelay/internal/testenv"
)

// TestMemoryBudget: while writes fail, what is held in memory stays within
// MemoryMaxBytes; the oldest held go (memory_full), those on disk stay, and
// a sink with a disk backlog reads it, then skips the gap. The spool goes
// back to disk by itself (no Append needed), and the gap survives a
// restart as a gap, not as damage.
func TestMemoryBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 500
		o := testOptions(t)
		o.MemoryMaxBytes = 128 << 10
		s := openSpool(t, o)
		for _, name := range []string{"behind", "caughtup"} {
			if err := s.AddSink(name); err != nil {
				t.Fatal(err)
			}
		}
		fill(t, s, 100, 50, size) // 1..100 on disk
		if err := s.Ack("behind", 40); err != nil {
			t.Fatal(err)
		}
		if err := s.Ack("caughtup", 100); err != nil {
			t.Fatal(err)
		}

		s.failWrites.Store(true)
		next := 101
		for range 40 { // ~2 MB offered, 16 times the budget
			if err := s.Append(group(next, 100, size)); !errors.Is(err, ErrNotDurable) {
				t.Fatalf("Append with the disk full = %v", err)
			}
			next += 100
			if m := s.heldMemLocked(); m > o.MemoryMaxBytes {
				t.Fatalf("held %d bytes of memory, budget %d", m, o.MemoryMaxBytes)
			}
			checkIdentity(t, s.Stat())
		}
		last := uint64(next - 1)
		st := s.Stat()
		behind, caught := st.Sinks["behind"], st.Sinks["caughtup"]
		heldFirst := s.held[0].Seq
		if behind.MemoryEvicted != heldFirst-101 || caught.MemoryEvicted != heldFirst-101 || behind.Evicted != 0 {
			t.Fatalf("held from %d: behind %+v, caught up %+v", heldFirst, behind, caught)
		}
		// The disk records stay for the sink that had not read them.
		if behind.Cursor != 40 || behind.Pending != 60+last-heldFirst+1 || st.FirstSeq != 41 {
			t.Fatalf("behind %+v, stat %+v", behind, st)
		}
		if caught.Cursor != heldFirst-1 {
			t.Fatalf("caught up sink's cursor %d, want %d (moved past the drop)", caught.Cursor, heldFirst-1)
		}
		if len(s.gaps) != 1 || s.gaps[0] != (gap{101, heldFirst - 1}) {
			t.Fatalf("gaps %v, want 101..%d", s.gaps, heldFirst-1)
		}
		// A batch stops at the gap; acking it counts only real records.
		recs, err := s.Read("behind", 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		checkSeqs(t, recs, 41, 100, size)
		if err := s.Ack("behind", 100); err != nil {
			t.Fatal(err)
		}
		recs, _ = s.Read("behind", 1000, 0)
		checkSeqs(t, recs, heldFirst, last, size)
		if ss, _ := s.SinkStat("behind"); ss.Acked != 100 || ss.Pending != last-heldFirst+1 {
			t.Fatalf("behind after acking the disk part: %+v", ss)
		}
		checkIdentity(t, s.Stat())

		// Recovery without any Append: the spool's own retry.
		s.failWrites.Store(false)
		time.Sleep(2 * retryInterval)
		synctest.Wait()
		if st := s.Stat(); st.Degraded {
			t.Fatalf("still degraded after the disk came back: %+v", st)
		}
		if len(s.held) != 0 || s.diskLast != last {
			t.Fatalf("held %d, on disk up to %d, want %d", len(s.held), s.diskLast, last)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openSpool(t, o)
		st = s.Stat()
		if st.Quarantined != 0 || st.LastSeq != last {
			t.Fatalf("reopened: %+v", st)
		}
		checkIdentity(t, st)
		checkSeqs(t, readAll(t, s, "caughtup"), heldFirst, last, size)
		if ss, _ := s.SinkStat("behind"); ss.Pending != last-heldFirst+1 || ss.Cursor != heldFirst-1 { // past the gap
			t.Fatalf("behind after reopen: %+v", ss)
		}
		recs, _ = s.Read("behind", 1000, 0)
		checkSeqs(t, recs, heldFirst, last, size)
	})
}

// TestRecoveryIsIncremental: records held in memory go to disk in
// transactions of at most persistChunkBytes, each durable: a retry that
// fails writes one chunk, not everything held, and what a chunk wrote
// stays written.
func TestRecoveryIsIncremental(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 1000
		o := testOptions(t)
		o.MemoryMaxBytes = 64 << 20
		s := openSpool(t, o)
		if err := s.AddSink("a"); err != nil {
			t.Fatal(err)
		}
		s.failWrites.Store(true)
		const n = 14000 // ~14 MB held: four chunks
		fill2 := func() {
			for i := 1; i <= n; i += 500 {
				if err := s.Append(group(i, 500, size)); !errors.Is(err, ErrNotDurable) {
					t.Fatal(err)
				}
			}
		}
		fill2()
		var attempts []int // record bytes each transaction tried to write
		fail := true
		hook := func(p commitPlan) error {
			b := 0
			for _, r := range p.recs {
				b += len(r.Data)
			}
			attempts = append(attempts, b)
			if fail && len(attempts) >= 2 {
				return &fs.PathError{Op: "write", Path: o.Path, Err: syscall.ENOSPC}
			}
			return nil
		}
		// The hook runs on the spool's retry goroutine: the test touches
		// what they share under the writer lock.
		locked := func(f func()) { s.wmu.Lock(); defer s.wmu.Unlock(); f() }
		var tried int
		var onDisk uint64
		snap := func() { tried, onDisk = len(attempts), s.diskLast }
		locked(func() { s.txHook = hook })
		s.failWrites.Store(false)
		time.Sleep(retryInterval)
		synctest.Wait()
		locked(snap)
		if tried != 2 || !s.Stat().Degraded || onDisk == 0 || onDisk == n {
			t.Fatalf("first retry: %d transactions %v, on disk up to %d; want one chunk written, the next failed", tried, attempts, onDisk)
		}
		first := onDisk
		time.Sleep(retryInterval) // still failing: one more chunk tried
		synctest.Wait()
		locked(snap)
		if tried != 3 || onDisk != first {
			t.Fatalf("second retry: attempts %v, on disk %d", attempts, onDisk)
		}
		locked(func() { fail = false })
		time.Sleep(retryInterval)
		synctest.Wait()
		locked(snap)
		if st := s.Stat(); st.Degraded || onDisk != n {
			t.Fatalf("after recovery: %+v, on disk up to %d", st, onDisk)
		}
		locked(func() {
			for _, b := range attempts {
				if b > persistChunkBytes {
					t.Errorf("a transaction wrote %d bytes of records: %v", b, attempts)
				}
			}
			s.txHook = nil
		})
		checkSeqs(t, readAll(t, s, "a"), 1, n, size)
	})
}

// TestStartWithoutDisk: a state directory that cannot be created at start
// (here its parent is a file) does not fail Open: the spool holds records
// in memory and goes to disk once the directory can be made, by itself,
// leaving no half-made file.
func TestStartWithoutDisk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 200
		base := t.TempDir()
		blocker := filepath.Join(base, "mnt")
		if err := os.WriteFile(blocker, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		o := testOptions(t)
		o.Path = filepath.Join(blocker, "state", "spool.db")
		s := openSpool(t, o)
		if st := s.Stat(); !st.Degraded || !st.Durable {
			t.Fatalf("start without a disk: %+v", st)
		}
		if err := s.AddSink("a"); err != nil {
			t.Fatal(err)
		}
		if err := s.Append(group(1, 10, size)); !errors.Is(err, ErrNotDurable) {
			t.Fatalf("Append = %v", err)
		}
		checkSeqs(t, readAll(t, s, "a"), 1, 10, size)
		if err := s.Ack("a", 3); err != nil {
			t.Fatal(err)
		}

		if err := os.Remove(blocker); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * retryInterval)
		synctest.Wait()
		if st := s.Stat(); st.Degraded || st.Records != 7 {
			t.Fatalf("after the disk came: %+v", st)
		}
		if err := s.Append(group(11, 5, size)); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(o.Path + ".new"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("creation left %s.new: %v", o.Path, err)
		}
		s = openSpool(t, o)
		if st := s.Stat(); st.Quarantined != 0 {
			t.Fatalf("%+v", st)
		}
		checkSeqs(t, readAll(t, s, "a"), 4, 15, size)
	})
}

// TestFullDiskAtCreation: a disk too full to create the file leaves no
// file behind (the next start would quarantine a 0-byte one).
func TestFullDiskAtCreation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tiny")
	testenv.MountTmpfs(t, dir, "16k") // less than bbolt's four initial pages and the buckets
	path := filepath.Join(dir, "spool.db")
	err := createFile(path, time.Second, false)
	if err == nil {
		t.Skip("the tmpfs took a whole bbolt file; cannot provoke ENOSPC at creation")
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("createFile on a full disk = %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("a failed creation left %v", entries)
	}
}

// TestLateFileWithRecords: a file that turns up after a start without one
// (a volume mounted late) is adopted: its backlog goes first, the records
// held in memory follow it renumbered, and a batch read before the
// renumbering and acked after it acks nothing of the file.
func TestLateFileWithRecords(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 200
		// A file from an earlier run: 100 records, sink a at 50.
		old := testOptions(t)
		s := openSpool(t, old)
		if err := s.AddSink("a"); err != nil {
			t.Fatal(err)
		}
		fill(t, s, 100, 50, size)
		if err := s.Ack("a", 50); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		// The spool's path is a link into a directory that is not there yet.
		base := t.TempDir()
		target := filepath.Join(base, "volume", "spool.db")
		o := testOptions(t)
		if err := os.MkdirAll(filepath.Dir(o.Path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, o.Path); err != nil {
			t.Fatal(err)
		}
		s = openSpool(t, o)
		if !s.Stat().Degraded {
			t.Fatal("not degraded without a file")
		}
		for _, name := range []string{"a", "b"} {
			if err := s.AddSink(name); err != nil {
				t.Fatal(err)
			}
		}
		mem := make([][]byte, 20)
		for i := range mem {
			mem[i] = []byte(fmt.Sprintf(`{"id":"mem-%d"}`, i))
		}
		if err := s.Append(mem); !errors.Is(err, ErrNotDurable) {
			t.Fatal(err)
		}
		stale, err := s.Read("a", 5, 0) // in flight while the file turns up
		if err != nil || len(stale) != 5 {
			t.Fatalf("%v %v", stale, err)
		}

		if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(old.Path, target); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * retryInterval)
		synctest.Wait()
		if st := s.Stat(); st.Degraded || st.LastSeq != 120 {
			t.Fatalf("after the file turned up: %+v", st)
		}
		prev, err := s.AckFrom("a", stale[4].Seq)
		if err != nil || prev < stale[4].Seq {
			t.Fatalf("stale ack: prev %d, err %v; want it ignored", prev, err)
		}
		st := s.Stat()
		checkIdentity(t, st)
		if a := st.Sinks["a"]; a.Cursor != 50 || a.Pending != 70 || a.Acked != 0 {
			t.Fatalf("a: %+v", a)
		}
		if b := st.Sinks["b"]; b.Cursor != 100 || b.Pending != 20 {
			t.Fatalf("b: %+v", b)
		}
		recs := readAll(t, s, "a")
		checkSeqs(t, recs[:50], 51, 100, size)
		for i, r := range recs[50:] {
			if r.Seq != uint64(101+i) || string(r.Data) != string(mem[i]) {
				t.Fatalf("record %d after the file's: seq %d %s", i, r.Seq, r.Data)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openSpool(t, o)
		if got := readAll(t, s, "b"); len(got) != 20 || got[0].Seq != 101 {
			t.Fatalf("b after reopen: %d records", len(got))
		}
	})
}

// TestSavedCounters: what Options.Counters returns is stored with each
// commit and handed back once after a reopen; Sync commits it alone.
func TestSavedCounters(t *testing.T) {
	o := testOptions(t)
	val := []byte(`{"n":1}`)
	o.Counters = func() []byte { return val }
	s := openSpool(t, o)
	if b := s.TakeSavedCounters(); b != nil {
		t.Fatalf("fresh spool: %s", b)
	}
	if err := s.AddSink("a"); err != nil {
		t.Fatal(err)
	}
	val = []byte(`{"n":2}`)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	val = nil
	s = openSpool(t, o)
	if b := s.TakeSavedCounters(); string(b) != `{"n":2}` {
		t.Fatalf("saved counters = %s", b)
	}
	if b := s.TakeSavedCounters(); b != nil {
		t.Fatalf("second take = %s", b)
	}
}
