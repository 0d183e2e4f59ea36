package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Degraded mode: the disk cannot be written (full, read-only, missing), and
// records are held in memory.
//
// Memory is bounded on its own (Options.MemoryMaxBytes): the disk cap
// bounds the file, not the memory. Over the memory budget the oldest
// records held in memory are dropped (memory_full). Records already on
// disk stay, so a drop can leave a gap: seqs with no record between the
// last record on disk and the first one held. A gap is kept in s.gaps, and
// on disk in the meta key "gaps" in the same transaction as the first
// record after it, so that Open knows the hole is not damage:
//
//	first              diskLast   gap (dropped)   held[0]          lastSeq
//	  │ on disk, durable  │        memory_full      │ held in memory  │
//	──┼───────────────────┼───── · · · · · · · ─────┼─────────────────┤
//
// Seqs are never reused, so a gap stays a gap until every cursor has
// passed it. Pending, Records and acknowledged counts leave gaps out; Read
// never returns a batch that spans one.
//
// When the disk comes back, what is held is written in order in
// transactions of at most persistChunkBytes, each making its part durable:
// a retry while the disk is still full costs one such transaction, not a
// rewrite of everything held.

const (
	// heldOverhead is what one record held in memory costs besides its
	// envelope bytes: its Record (32 bytes) and the allocator's rounding of
	// the envelope's slice, on average.
	heldOverhead = 64
	// persistChunkBytes bounds the envelope bytes one transaction writes
	// when records held in memory move to disk.
	persistChunkBytes = 4 << 20
	// probeChunkBytes bounds the first transaction of a retry while
	// degraded.
	probeChunkBytes = 64 << 10
	// lateOpenLockTimeout is how long a retry waits for the file's lock
	// (a retry holds the writer lock meanwhile).
	lateOpenLockTimeout = 50 * time.Millisecond
)

// gap is a range of seqs, lo to hi inclusive, that hold no record.
type gap struct{ lo, hi uint64 }

// missingLocked counts the seqs in (a, b] that are in a gap. Callers hold
// wmu or mu.
func (s *Spool) missingLocked(a, b uint64) uint64 {
	var n uint64
	for _, g := range s.gaps {
		lo, hi := max(g.lo, a+1), min(g.hi, b)
		if lo <= hi {
			n += hi - lo + 1
		}
	}
	return n
}

// pendingLocked is the number of records after cursor.
func (s *Spool) pendingLocked(cursor uint64) uint64 {
	if cursor >= s.lastSeq {
		return 0
	}
	return s.lastSeq - cursor - s.missingLocked(cursor, s.lastSeq)
}

// heldMemLocked is the memory measure of the records held.
func (s *Spool) heldMemLocked() int64 {
	return s.heldCost + int64(len(s.held))*(heldOverhead-recordOverhead)
}

// dropHeldLocked removes the first n records held. The slice is cut, not
// written in place (Read may hold a copy of its header); once the cut-off
// part is as large as what is left, what is left is copied into a new
// array, so the records dropped do not stay reachable. Callers hold wmu
// and mu.
func (s *Spool) dropHeldLocked(n int) {
	for _, r := range s.held[:n] {
		s.heldCost -= recordCost(len(r.Data))
	}
	s.held = s.held[n:]
	s.heldDead += n
	switch {
	case len(s.held) == 0:
		s.held, s.heldDead = nil, 0
	case s.heldDead > len(s.held) && s.heldDead > 1024:
		s.held, s.heldDead = slices.Clone(s.held), 0
	}
}

// enforceMemoryLocked drops the oldest records held in memory until they
// fit Options.MemoryMaxBytes, counting them per sink (memory_full). It
// runs after a failed write: while the disk works, nothing stays held.
func (s *Spool) enforceMemoryLocked() {
	over := s.heldMemLocked() - s.opts.MemoryMaxBytes
	if over <= 0 || len(s.held) == 0 {
		return
	}
	n := 0
	for freed := int64(0); n < len(s.held) && freed < over; n++ {
		freed += recordCost(len(s.held[n].Data)) + heldOverhead - recordOverhead
	}
	lo, hi := s.held[0].Seq, s.held[n-1].Seq
	var freedCost int64
	for _, r := range s.held[:n] {
		freedCost += recordCost(len(r.Data))
	}
	// liveBefore says whether records are left between x and the drop.
	liveBefore := func(x uint64) bool { return x+1 < lo && s.pendingLocked(x) > s.pendingLocked(lo-1) }
	s.mu.Lock()
	for _, sk := range s.sinks {
		if sk.cursor >= hi {
			continue
		}
		sk.memEvicted += hi - max(sk.cursor, lo-1) // lo..hi are held: no gap among them
		if !liveBefore(sk.cursor) {
			// The cursor moves past the drop, as for an eviction over the
			// cap: an ack of records read before sees it in AckFrom's prev.
			sk.cursor = hi
			sk.dirty = true
		}
	}
	keepFirst := liveBefore(s.first - 1)
	s.dropHeldLocked(n)
	s.cost -= freedCost
	if keepFirst {
		s.addGapLocked(lo, hi) // records on disk come before: a gap
	} else {
		s.first = hi + 1
		s.trimGapsLocked()
	}
	s.mu.Unlock()
	if s.memLog.AllowAt(s.opts.Now()) {
		s.log.Warn("spool memory budget full while the disk cannot be written; dropping the oldest records held in memory (memory_full)",
			"records", n, "memory_max_bytes", s.opts.MemoryMaxBytes, "next", "dropping on every append until the disk can be written")
	}
}

// addGapLocked records that lo..hi hold no record. Callers hold wmu and mu.
func (s *Spool) addGapLocked(lo, hi uint64) {
	gaps := slices.Clone(s.gaps)
	if k := len(gaps) - 1; k >= 0 && gaps[k].hi+1 == lo {
		gaps[k].hi = hi
	} else {
		gaps = append(gaps, gap{lo, hi})
	}
	s.gaps, s.gapsDirty = gaps, true
}

// trimGapsLocked forgets the gaps before first. Callers hold wmu and mu.
func (s *Spool) trimGapsLocked() {
	if len(s.gaps) == 0 || s.gaps[0].lo >= s.first {
		return
	}
	var gaps []gap
	for _, g := range s.gaps {
		if g.hi < s.first {
			continue
		}
		gaps = append(gaps, gap{max(g.lo, s.first), g.hi})
	}
	s.gaps, s.gapsDirty = gaps, true
}

func encodeGaps(gaps []gap) []byte {
	b := make([]byte, 0, 16*len(gaps))
	for _, g := range gaps {
		b = append(b, u64(g.lo)...)
		b = append(b, u64(g.hi)...)
	}
	return b
}

func decodeGaps(b []byte) ([]gap, bool) {
	if len(b)%16 != 0 {
		return nil, false
	}
	var gaps []gap
	for i := 0; i < len(b); i += 16 {
		lo, _ := decodeU64(b[i : i+8])
		hi, _ := decodeU64(b[i+8 : i+16])
		if lo == 0 || hi < lo || (len(gaps) > 0 && lo <= gaps[len(gaps)-1].hi) {
			return nil, false
		}
		gaps = append(gaps, gap{lo, hi})
	}
	return gaps, true
}

// startRetryLocked runs the goroutine that retries writes once a second
// while the spool is degraded, so that an idle spool goes back to disk as
// well as a busy one. It ends when the spool recovers or closes.
func (s *Spool) startRetryLocked() {
	if s.retryStop != nil || s.closed {
		return
	}
	stop := make(chan struct{})
	s.retryStop = stop
	s.retryWG.Go(func() {
		t := time.NewTicker(retryInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			s.wmu.Lock()
			if s.closed || !s.degraded {
				if s.retryStop == stop {
					s.retryStop = nil
				}
				s.wmu.Unlock()
				return
			}
			_ = s.commitLocked(false) // a failure is logged once, at the start of the episode
			s.wmu.Unlock()
		}
	})
}

// Sync writes what is pending now, with the counters, in one transaction
// (a no-op while degraded: the retries write it): the acknowledgements not
// yet on disk too, deleting what every sink has passed, which otherwise
// reach disk with the next commit (ack.go). The agent calls it when its
// counters changed and nothing else committed them.
func (s *Spool) Sync() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.degraded {
		return nil
	}
	s.syncWanted = s.opts.Counters != nil
	s.collectLocked() // what acknowledgements since the last commit passed (ack.go)
	err := s.commitLocked(false)
	if err == nil {
		s.maybeCompactLocked()
	}
	return err
}

// TakeSavedCounters returns the bytes Options.Counters returned for the
// last commit of the file, as found when the file was opened, once: later
// calls return nil until another file is opened late (adoptLocked).
func (s *Spool) TakeSavedCounters() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.saved
	s.saved = nil
	return b
}

// openFile opens the spool file, creating it when missing and moving a
// damaged one aside.
func (s *Spool) openFile(lockTimeout time.Duration) (*bolt.DB, loaded, error) {
	path := s.opts.Path
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, loaded{}, fmt.Errorf("spool: create state directory: %w", err)
	}
	if err := createFile(path, lockTimeout, s.opts.noSync); err != nil {
		return nil, loaded{}, err
	}
	db, ld, release, err := openChecked(path, false, lockTimeout, true, s.opts.noSync)
	if release != nil {
		if qerr := s.quarantine(err, release); qerr != nil {
			return nil, ld, qerr
		}
		if err := createFile(path, lockTimeout, s.opts.noSync); err != nil {
			return nil, loaded{}, err
		}
		db, ld, release, err = openChecked(path, false, lockTimeout, true, s.opts.noSync)
		if release != nil {
			release() // a fresh file damaged at once: give up rather than loop
		}
	}
	return db, ld, err
}

// createFile creates an empty spool file at path unless one exists: bbolt
// initializes it as path.new, which is renamed into place once whole, so a
// creation that fails (a full disk) or is cut short leaves no file behind
// that Open would take for a damaged one.
func createFile(path string, lockTimeout time.Duration, noSync bool) error {
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		return nil // there is a file (or openChecked will say why not)
	}
	tmp := path + ".new"
	_ = os.Remove(tmp)
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: lockTimeout, FreelistType: bolt.FreelistMapType, NoSync: noSync})
	if err == nil {
		err = createBuckets(db)
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("spool: create %s: %w", path, err)
	}
	syncDir(filepath.Dir(path))
	return nil
}

// openLateLocked opens the file of a spool that started without one, and
// adopts what it holds.
func (s *Spool) openLateLocked() error {
	db, ld, err := s.openFile(min(lateOpenLockTimeout, s.opts.LockTimeout))
	if err != nil {
		return err
	}
	s.adoptLocked(db, ld)
	return nil
}

// adoptLocked makes db, a file opened after the spool started without one,
// the spool's file.
//
// The records held in memory were numbered from 1; the file's, if any,
// come first and keep their seqs, and those held are renumbered after them
// (a gap stands for the ones dropped from memory meanwhile). A sink the file
// has a cursor for resumes from it: it delivers the file's backlog first,
// then again what it had delivered from memory (duplicates, which envelope
// ids make harmless; counted as received again). A batch read before the
// renumbering and acknowledged after it is ignored (see diskSink.guarded),
// so no record of the file is acknowledged by mistake. Cursors of sinks
// that the file has and the spool does not are kept, as Open keeps them.
func (s *Spool) adoptLocked(db *bolt.DB, ld loaded) {
	off := ld.lastSeq
	s.dbmu.Lock()
	s.db = db
	s.dbmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if off > 0 {
		held := make([]Record, len(s.held))
		for i, r := range s.held {
			held[i] = Record{Seq: r.Seq + off, Data: r.Data}
		}
		s.held, s.heldDead = held, 0
		s.first += off
		s.lastSeq += off
		for _, sk := range s.sinks {
			sk.cursor += off
		}
	}
	s.diskFirst, s.diskLast, s.metaLast, s.hwm = ld.diskFirst, ld.lastSeq, ld.metaLast, ld.hwm
	s.gaps = ld.gaps
	if ld.liveFirst <= ld.lastSeq { // the file has live records
		if s.first > ld.lastSeq+1 {
			s.addGapLocked(ld.lastSeq+1, s.first-1)
		}
		s.first = ld.liveFirst
		s.cost += ld.liveCost
	}
	s.gapsDirty = true
	for name, c := range ld.cursors {
		cur := min(max(c, ld.liveFirst-1), ld.lastSeq)
		sk := s.sinks[name]
		switch {
		case sk == nil:
			s.sinks[name] = &diskSink{cursor: cur, received: s.pendingLocked(cur), ready: make(chan struct{}, 1)}
		case cur < sk.cursor:
			sk.received += s.pendingLocked(cur) - s.pendingLocked(sk.cursor)
			sk.cursor = cur
		}
	}
	for _, sk := range s.sinks {
		sk.dirty, sk.guarded, sk.readMax = true, true, sk.cursor
	}
	s.epoch++
	s.saved = ld.counters
	s.log.Info("spool file opened late; records held in memory follow the file's", "file_records", ld.liveCount,
		"file_last_seq", ld.lastSeq, "held_records", len(s.held))
}
