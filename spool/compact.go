package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Space reclaim.
//
// bbolt never shrinks its file: pages freed by deletions are reused, but a
// file that grew to 1 GiB during an outage stays 1 GiB after the backlog
// drains. We compact: copy the live records into a fresh file, fsync it,
// rename it over the old one, and swap the handle.
//
// Why compaction rather than rotating files: one file keeps every commit a
// single transaction (new records, evictions, cursors, last_seq together)
// behind one lock; rotation needs several bbolt files, cursors spanning
// them, and atomicity across files. Compaction costs a copy of the live
// records only, and we run it only when they are at most 1/compactRatio of
// the file, that is, once a backlog has drained: the copy is small, and
// afterwards the file is about the size of its live data, so the condition
// cannot hold again until the file has grown compactRatio-fold and drained.
// Appends and Acks wait during the copy; Reads go on, except for the instant
// of the swap.
const (
	compactRatio   = 8
	compactRetry   = time.Minute // after a failed compaction
	compactTxBytes = 64 << 20    // bytes per transaction of the copy
)

// maybeCompactLocked compacts if the file is large and mostly free.
func (s *Spool) maybeCompactLocked() {
	if s.degraded || s.hwm < s.opts.CompactMinBytes || s.cost*compactRatio > s.hwm {
		return
	}
	now := s.opts.Now()
	if !s.compactFail.IsZero() && now.Sub(s.compactFail) < compactRetry {
		return
	}
	if err := s.compactLocked(); err != nil {
		s.compactFail = now
		s.log.Warn("spool compaction failed; keeping the large file", "err", err, "file_bytes", s.hwm,
			"retry_in", compactRetry)
	}
}

// compactLocked rewrites the file. On any failure before the rename the old
// file is untouched and still in use; the rename is the commit point.
func (s *Spool) compactLocked() (err error) {
	start := time.Now()
	tmp := s.compactPath()
	_ = os.Remove(tmp)
	ndb, err := bolt.Open(tmp, 0o600, &bolt.Options{
		Timeout:      s.opts.LockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	defer func() {
		if err != nil {
			_ = ndb.Close()
			_ = os.Remove(tmp)
		}
	}()
	// One fsync at the end instead of two per copy transaction: until the
	// rename, a crash just leaves a stray file that Open removes.
	ndb.NoSync = true
	if err := bolt.Compact(ndb, s.db, compactTxBytes); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	ndb.NoSync = s.opts.noSync
	if err := ndb.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	// The new handle already holds the lock of the new file, so no other
	// process can slip in between the rename and the swap.
	if err := os.Rename(tmp, s.opts.Path); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	syncDir(filepath.Dir(s.opts.Path))

	s.dbmu.Lock()
	old := s.db
	s.db = ndb
	s.dbmu.Unlock()
	_ = old.Close() // its file is unlinked; closing releases the pages

	var hwm int64
	_ = ndb.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil })
	s.mu.Lock()
	before := s.hwm
	s.hwm = hwm
	s.used = hwm - int64(ndb.Stats().FreeAlloc)
	s.mu.Unlock()
	s.log.Info("spool compacted", "file_bytes_before", before, "file_bytes_after", hwm,
		"records", s.lastSeq+1-s.first, "took", time.Since(start))
	return nil
}
