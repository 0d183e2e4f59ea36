package spool

import (
	"math"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// diskCursor reads sink's cursor as the file holds it now (what a restart
// after a crash would resume from).
func diskCursor(t testing.TB, s *Spool, sink string) uint64 {
	t.Helper()
	var c uint64
	s.dbmu.RLock()
	defer s.dbmu.RUnlock()
	if err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCursors).Get([]byte(sink))
		c, _ = decodeU64(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// unsynced is how many records sink acknowledged that the file does not
// know of yet.
func unsynced(s *Spool, sink string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	sk := s.sinks[sink]
	return sk.acked - sk.syncedAcked
}

// deadlock is how long a test waits on an event before it calls the wait a
// hang. It never measures speed.
const deadlock = time.Minute

// ackReturns runs AckFrom(sink, seq) and reports whether it returned within
// deadlock, failing the test on its error. A call that hangs is left
// running: its test fails.
func ackReturns(t *testing.T, s *Spool, sink string, seq uint64) bool {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := s.AckFrom(sink, seq); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		return true
	case <-time.After(deadlock):
		return false
	}
}

// An acknowledgement does not take the writer's lock: it returns while a
// writer holds it (as the spool writer does through its group commit's
// fsync), the cursor moves at once, and the writer's next commit carries it
// to disk with the deletions.
func TestAckDoesNotWaitForTheWriter(t *testing.T) {
	o := testOptions(t)
	o.AckDelay = time.Hour // only a writer's commit carries the cursor
	s := openSpool(t, o)
	if err := s.AddSink("a"); err != nil {
		t.Fatal(err)
	}
	fill(t, s, 20, 20, 100)

	s.wmu.Lock() // a writer in its commit
	if !ackReturns(t, s, "a", 5) {
		s.wmu.Unlock()
		t.Fatal("AckFrom waited for the writer's lock")
	}
	s.wmu.Unlock()
	if ss, _ := s.SinkStat("a"); ss.Cursor != 5 || ss.Acked != 5 || ss.Pending != 15 {
		t.Fatalf("after the ack: %+v", ss)
	}
	if st := s.Stat(); st.Records != 15 || st.FirstSeq != 6 {
		t.Fatalf("Stat counts acknowledged records: %+v", st)
	}
	if c := diskCursor(t, s, "a"); c != 0 {
		t.Fatalf("cursor on disk %d before any commit; want 0", c)
	}

	fill(t, s, 10, 10, 100) // the spool writer's next group commit
	if c := diskCursor(t, s, "a"); c != 5 {
		t.Fatalf("cursor on disk %d after the writer's commit; want 5", c)
	}
	if n := unsynced(s, "a"); n != 0 {
		t.Fatalf("%d records unsynced after the commit", n)
	}
	checkSeqs(t, readAll(t, s, "a"), 6, 30, 100)
	s.wmu.Lock()
	df := s.diskFirst
	s.wmu.Unlock()
	if df != 6 {
		t.Fatalf("records 1..5 still on disk (diskFirst %d)", df)
	}
}

// With no writer, the ack flusher commits the cursor by itself.
func TestAckFlusherCommits(t *testing.T) {
	o := testOptions(t)
	o.AckDelay = time.Millisecond
	s := openSpool(t, o)
	if err := s.AddSink("a"); err != nil {
		t.Fatal(err)
	}
	fill(t, s, 10, 10, 100)
	s.mu.Lock()
	ch := s.synced
	s.mu.Unlock()
	if _, err := s.AckFrom("a", 7); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(deadlock)
	for diskCursor(t, s, "a") != 7 {
		select {
		case <-ch:
		case <-deadline:
			t.Fatal("the flusher never committed the acknowledgement")
		}
		s.mu.Lock()
		ch = s.synced
		s.mu.Unlock()
	}
}

// Past AckMaxUnsynced, AckFrom returns only once a commit holds the cursor:
// what a crash could send again stays bounded. At the bound exactly it does
// not wait. The flusher's own delay is an hour here, so the commit is the
// one the waiting ack asked for, whether the flusher was idle (the first
// ack) or already gathering acknowledgements (the last).
func TestAckBoundedUnsynced(t *testing.T) {
	o := testOptions(t)
	o.AckDelay = time.Hour
	o.AckMaxUnsynced = 10
	s := openSpool(t, o)
	if err := s.AddSink("a"); err != nil {
		t.Fatal(err)
	}
	fill(t, s, 100, 100, 100)
	check := func(what string, wantDisk, wantUnsynced uint64) {
		t.Helper()
		if c, n := diskCursor(t, s, "a"), unsynced(s, "a"); c != wantDisk || n != wantUnsynced {
			t.Fatalf("%s: cursor on disk %d, unsynced %d; want %d, %d", what, c, n, wantDisk, wantUnsynced)
		}
	}
	if !ackReturns(t, s, "a", 20) {
		t.Fatal("past the bound with the flusher idle: AckFrom waited for the flusher's delay")
	}
	check("past the bound, flusher idle", 20, 0)
	if _, err := s.AckFrom("a", 28); err != nil {
		t.Fatal(err)
	}
	check("within the bound", 20, 8)
	if _, err := s.AckFrom("a", 30); err != nil {
		t.Fatal(err)
	}
	check("at the bound", 20, 10)
	if !ackReturns(t, s, "a", 31) {
		t.Fatal("one past the bound: AckFrom never returned")
	}
	check("one past the bound", 31, 0)
}

// While writes fail, an acknowledgement past the bound does not wait for a
// commit that cannot come; the cursor reaches disk once writes work again.
func TestAckBoundWhileDegraded(t *testing.T) {
	o := testOptions(t)
	o.AckDelay = time.Hour
	o.AckMaxUnsynced = 1
	s := openSpool(t, o)
	if err := s.AddSink("a"); err != nil {
		t.Fatal(err)
	}
	fill(t, s, 20, 20, 100)
	s.failWrites.Store(true)
	if err := s.Append(group(21, 1, 100)); err == nil {
		t.Fatal("Append succeeded with failing writes")
	}
	if !ackReturns(t, s, "a", 15) {
		t.Fatal("AckFrom waits for a commit while the spool is degraded")
	}
	s.failWrites.Store(false)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openSpool(t, Options{Path: o.Path, Logger: o.Logger})
	if ss, _ := s.SinkStat("a"); ss.Cursor != 15 || ss.Pending != 6 {
		t.Fatalf("after recovery and restart: %+v", ss)
	}
}

// ReadBatch reads after a position (the forwarder's last batch in flight),
// never behind the cursor, and once its buffer has grown costs a fixed few
// allocations per batch, none per record.
func TestReadBatch(t *testing.T) {
	const size = 200
	for _, im := range []string{"spool", "memory"} {
		t.Run(im, func(t *testing.T) {
			var st interface {
				Append([][]byte) error
				AddSink(string) error
				Ack(string, uint64) error
				ReadBatch(string, uint64, int, int, *Batch) error
			}
			if im == "spool" {
				st = openSpool(t, testOptions(t))
			} else {
				st = NewMemory(0)
			}
			if err := st.AddSink("a"); err != nil {
				t.Fatal(err)
			}
			if err := st.Append(group(1, 1000, size)); err != nil {
				t.Fatal(err)
			}
			var b Batch
			if err := st.ReadBatch("a", 0, 500, 0, &b); err != nil {
				t.Fatal(err)
			}
			checkSeqs(t, b.Recs, 1, 500, size)
			if err := st.ReadBatch("a", 500, 500, 0, &b); err != nil {
				t.Fatal(err)
			}
			checkSeqs(t, b.Recs, 501, 1000, size)
			if err := st.Ack("a", 700); err != nil {
				t.Fatal(err)
			}
			if err := st.ReadBatch("a", 500, 100, 0, &b); err != nil {
				t.Fatal(err)
			}
			checkSeqs(t, b.Recs, 701, 800, size) // after the cursor, not the position
			if err := st.ReadBatch("a", 800, 100, 3*size+size/2, &b); err != nil {
				t.Fatal(err)
			}
			if len(b.Recs) != 3 || !b.Cut {
				t.Fatalf("byte limit: %d records, cut %v; want 3, cut", len(b.Recs), b.Cut)
			}
			if err := st.ReadBatch("a", 1000, 100, 0, &b); err != nil || len(b.Recs) != 0 || b.Cut {
				t.Fatalf("at the end: %d records, cut %v, %v", len(b.Recs), b.Cut, err)
			}
			// AllocsPerRun counts every allocation of the process, and the
			// spool's own goroutines (the ack flusher) or the race detector's
			// slower pace can add some to a round (124 a run was seen under
			// -race in CI); a per-record allocation would show in every round,
			// so the least of five rounds is the batch's own figure.
			allocs := math.Inf(1)
			for range 5 {
				allocs = min(allocs, testing.AllocsPerRun(20, func() {
					if err := st.ReadBatch("a", 700, 300, 0, &b); err != nil || len(b.Recs) != 300 {
						t.Fatalf("%d records, %v", len(b.Recs), err)
					}
				}))
			}
			if allocs > 16 {
				t.Fatalf("%.0f allocations for a 300-record batch; want a few per batch, none per record", allocs)
			}
		})
	}
}
