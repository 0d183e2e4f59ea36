package spool

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"slices"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The write path. Every writer changes the in-memory state first (under mu,
// so readers always see exact accounting), then commitLocked writes what
// changed in one bbolt transaction: new records, deletions, cursors,
// last_seq, gaps, the counters (a deletion of more than maxDeletesPerTx
// keys, or records held of more than persistChunkBytes, take several).
// If it fails, the state stands and the records stay in held: that is
// degraded mode, and a later commit retries. Methods named ...Locked run
// with wmu held.

const (
	// retryInterval spaces write attempts while degraded: a full disk is not
	// hammered with a transaction per Append.
	retryInterval = time.Second
	// evictLogEvery throttles the "spool full" line during a long outage.
	evictLogEvery = time.Minute
)

// maxDeletesPerTx bounds the keys one transaction deletes, so that
// dropping a large backlog (a removed sink) does not build one huge
// transaction in memory. A variable for tests only.
var maxDeletesPerTx uint64 = 1 << 16

// errRetryLater is what a write skipped by retryInterval returns.
var errRetryLater = errors.New("spool: disk writes are failing; next retry within a second")

// commitPlan is what one transaction of a commit writes: deletions of the
// keys in [delFrom, delTo), records held (with last_seq and the gaps), and
// in the final one the cursors and the counters.
type commitPlan struct {
	delFrom, delTo uint64
	recs           []Record // a prefix of held, in order
	lastSeq        uint64   // written with recs, and by the final transaction
	gaps           []byte   // written when writeGaps is set (empty: deleted)
	writeGaps      bool
	final          bool
	cursors        map[string]uint64
	acked          map[string]uint64 // each written cursor's sink's acked count (ack.go)
	removed        []string
	counters       []byte // nil: not written
}

func (s *Spool) needsCommitLocked() bool {
	if s.db == nil || s.syncWanted || s.gapsDirty || len(s.held) > 0 || s.metaLast < s.lastSeq || len(s.removed) > 0 ||
		s.diskFirst < min(s.first, s.diskLast+1) {
		return true
	}
	s.mu.Lock() // AckFrom sets dirty without wmu
	defer s.mu.Unlock()
	for _, sk := range s.sinks {
		if sk.dirty {
			return true
		}
	}
	return false
}

// commitLocked writes the pending changes. While degraded it tries at most
// once per retryInterval unless force is set. It returns nil when the state
// is on disk.
func (s *Spool) commitLocked(force bool) error {
	if !s.needsCommitLocked() {
		return nil
	}
	now := s.opts.Now()
	if s.degraded && !force && now.Sub(s.lastTry) < retryInterval {
		return errRetryLater
	}
	moved := len(s.held)
	if err := s.writeLocked(); err != nil {
		s.failedLocked(now, err)
		return err
	}
	if s.degraded {
		s.mu.Lock()
		s.degraded = false
		s.mu.Unlock()
		s.log.Info("spool writes recovered; records held in memory are on disk", "records", moved,
			"degraded_for", now.Sub(s.degradedAt))
	}
	return nil
}

func (s *Spool) failedLocked(now time.Time, err error) {
	s.mu.Lock()
	first := !s.degraded
	s.degraded = true
	s.lastTry = now
	if first {
		s.degradedAt = now
	}
	s.mu.Unlock()
	s.startRetryLocked()
	if first {
		s.log.Error("spool write failed; holding records in memory until writes succeed", "err", err,
			"held_records", len(s.held), "held_bytes", s.heldCost, "file_bytes", s.hwm, "retry_every", retryInterval,
			"memory_max_bytes", s.opts.MemoryMaxBytes)
	}
}

// writeLocked runs the transactions of one commit, each durable on its
// own: deletions in chunks of maxDeletesPerTx; records held in chunks of
// persistChunkBytes, oldest first; the last one carrying the rest of both,
// the cursors, last_seq, the gaps and the counters. A spool that started
// without its file opens it first. On a failure, what the transactions
// before wrote stays written.
func (s *Spool) writeLocked() error {
	if s.db == nil {
		if err := s.openLateLocked(); err != nil {
			return err
		}
		s.collectLocked()
	}
	probe := s.degraded
	for {
		from := s.diskFirst
		to := max(from, min(s.first, s.diskLast+1))
		p := commitPlan{delFrom: from, delTo: to}
		if to-from > maxDeletesPerTx {
			p.delTo = from + maxDeletesPerTx
			if err := s.applyLocked(p); err != nil {
				return err
			}
			continue
		}
		// While degraded, a first small chunk probes the disk: a retry on a
		// disk still full wastes little.
		chunk := persistChunkBytes
		if probe {
			chunk = probeChunkBytes
		}
		n, size := 0, 0
		for n < len(s.held) && (n == 0 || size+len(s.held[n].Data) <= chunk) {
			size += len(s.held[n].Data)
			n++
		}
		p.writeGaps = s.gapsDirty
		if p.writeGaps {
			p.gaps = encodeGaps(s.gaps)
		}
		if n < len(s.held) {
			p.recs = s.held[:n]
			p.lastSeq = p.recs[n-1].Seq
			if err := s.applyLocked(p); err != nil {
				return err
			}
			probe = false // writes work again: the rest in full chunks
			continue
		}
		p.final = true
		p.recs = s.held
		p.lastSeq = s.lastSeq
		p.cursors = make(map[string]uint64)
		p.acked = make(map[string]uint64)
		s.mu.Lock() // AckFrom moves cursors without wmu
		for name, sk := range s.sinks {
			if sk.dirty {
				p.cursors[name] = sk.cursor
				p.acked[name] = sk.acked
			}
		}
		s.mu.Unlock()
		for name := range s.removed {
			p.removed = append(p.removed, name)
		}
		if s.opts.Counters != nil {
			p.counters = s.opts.Counters()
		}
		return s.applyLocked(p)
	}
}

// applyLocked runs one transaction of a commit and, once it is durable,
// records what it wrote.
func (s *Spool) applyLocked(p commitPlan) error {
	hwm, err := s.txLocked(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hwm = hwm
	s.used = hwm - int64(s.db.Stats().FreeAlloc)
	s.diskFirst = p.delTo
	if p.writeGaps {
		s.gapsDirty = false
	}
	if len(p.recs) > 0 {
		s.diskLast = p.recs[len(p.recs)-1].Seq
		s.metaLast = max(s.metaLast, s.diskLast)
		s.dropHeldLocked(len(p.recs))
	}
	if p.final {
		for name, c := range p.cursors {
			if sk := s.sinks[name]; sk != nil {
				sk.syncedAcked = max(sk.syncedAcked, p.acked[name])
				sk.dirty = sk.cursor != c
			}
		}
		for _, name := range p.removed {
			delete(s.removed, name)
		}
		s.diskLast, s.metaLast = p.lastSeq, p.lastSeq
		s.diskFirst = s.first
		s.held, s.heldCost, s.heldDead = nil, 0, 0
		s.usedCost = s.cost // everything live is on disk now
		s.syncWanted = false
		s.notifySyncedLocked()
	}
	return nil
}

// txLocked runs one write transaction (fsynced by bbolt's commit) and
// returns the file's high-water mark after it.
func (s *Spool) txLocked(p commitPlan) (int64, error) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if s.failWrites.Load() {
			return &fs.PathError{Op: "write", Path: s.opts.Path, Err: syscall.ENOSPC}
		}
		if s.txHook != nil {
			if err := s.txHook(p); err != nil {
				return err
			}
		}
		rb := tx.Bucket(bucketRecords)
		rb.FillPercent = 1.0 // keys only grow: fill pages, halve the file
		if p.delTo > p.delFrom {
			// The keys that are there: a gap has none to delete.
			var keys [][]byte
			c := rb.Cursor()
			for k, _ := c.Seek(seqKey(p.delFrom)); k != nil && binary.BigEndian.Uint64(k) < p.delTo; k, _ = c.Next() {
				keys = append(keys, slices.Clone(k))
			}
			for _, k := range keys {
				if err := rb.Delete(k); err != nil {
					return err
				}
			}
		}
		mb := tx.Bucket(bucketMeta)
		if p.final {
			cb := tx.Bucket(bucketCursors)
			for _, name := range p.removed {
				if err := cb.Delete([]byte(name)); err != nil {
					return err
				}
			}
			for name, c := range p.cursors {
				if err := cb.Put([]byte(name), u64(c)); err != nil {
					return err
				}
			}
			if p.counters != nil {
				if err := mb.Put(keyCounters, p.counters); err != nil {
					return err
				}
			}
		}
		if p.writeGaps {
			var err error
			if len(p.gaps) == 0 {
				err = mb.Delete(keyGaps)
			} else {
				err = mb.Put(keyGaps, p.gaps)
			}
			if err != nil {
				return err
			}
		}
		if !p.final && len(p.recs) == 0 {
			return nil
		}
		// bbolt keeps the key and value slices until commit: one buffer
		// each for the whole group.
		total := 0
		for _, r := range p.recs {
			total += crcSize + len(r.Data)
		}
		keys := make([]byte, 8*len(p.recs))
		vals := make([]byte, total)
		off := 0
		for i, r := range p.recs {
			key := keys[8*i : 8*i+8]
			binary.BigEndian.PutUint64(key, r.Seq)
			v := vals[off : off+crcSize+len(r.Data)]
			encodeValue(v, r.Data)
			off += len(v)
			if err := rb.Put(key, v); err != nil {
				return err
			}
		}
		return mb.Put(keyLastSeq, u64(p.lastSeq))
	})
	if err != nil {
		return 0, err
	}
	var hwm int64
	_ = s.db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil })
	return hwm, nil
}

// collectLocked drops the records every sink has passed (all of them when
// there is no sink).
func (s *Spool) collectLocked() {
	newFirst := s.lastSeq + 1
	s.mu.Lock() // AckFrom moves cursors without wmu
	for _, sk := range s.sinks {
		newFirst = min(newFirst, sk.cursor+1)
	}
	s.mu.Unlock()
	if newFirst <= s.first {
		return
	}
	freed := s.cost
	if newFirst <= s.lastSeq {
		freed = 0
		s.walkCostsLocked(s.first, func(seq uint64, c int64) bool {
			if seq >= newFirst {
				return false
			}
			freed += c
			return true
		})
	}
	s.mu.Lock()
	s.advanceFirstLocked(newFirst, freed)
	s.mu.Unlock()
}

// enforceCapLocked evicts the oldest records until the cap measure is back
// under the budget, counting them for every sink that had not acked them.
func (s *Spool) enforceCapLocked() {
	s.updateBudgetLocked()
	over := s.cost - s.budget
	if over <= 0 {
		return
	}
	oldFirst, newFirst := s.first, s.first
	var freed int64
	s.walkCostsLocked(s.first, func(seq uint64, c int64) bool {
		freed += c
		newFirst = seq + 1
		return freed < over
	})
	s.mu.Lock()
	for _, sk := range s.sinks {
		if sk.cursor+1 < newFirst {
			sk.evicted += newFirst - 1 - sk.cursor - s.missingLocked(sk.cursor, newFirst-1)
			sk.cursor = newFirst - 1
			sk.dirty = true
		}
	}
	s.advanceFirstLocked(newFirst, freed)
	s.mu.Unlock()
	if s.evictLog.AllowAt(s.opts.Now()) {
		s.log.Warn("spool full; evicting the oldest records (spool_full)", "records", newFirst-oldFirst,
			"max_bytes", s.opts.MaxBytes, "next", "evicting on every append until the sinks catch up")
	}
}

// advanceFirstLocked makes newFirst the oldest live record; freed is the
// cap measure of the records it drops. Callers hold wmu and mu.
func (s *Spool) advanceFirstLocked(newFirst uint64, freed int64) {
	s.first = newFirst
	s.cost -= freed
	i := 0
	for i < len(s.held) && s.held[i].Seq < newFirst {
		i++
	}
	s.dropHeldLocked(i)
	s.trimGapsLocked()
}

// walkCostsLocked calls fn with the cap measure of each live record from
// seq from on, in order, until fn returns false: those on disk first (read
// in one short transaction), then those held.
func (s *Spool) walkCostsLocked(from uint64, fn func(seq uint64, cost int64) bool) {
	if from <= s.diskLast {
		next, stopped := from, false
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketRecords).Cursor()
			for k, v := c.Seek(seqKey(from)); k != nil; k, v = c.Next() {
				seq := binary.BigEndian.Uint64(k)
				if seq > s.diskLast {
					break
				}
				next = seq + 1
				if !fn(seq, recordCost(max(len(v)-crcSize, 0))) {
					stopped = true
					break
				}
			}
			return nil
		})
		if stopped {
			return
		}
		if err != nil {
			// Not expected while the file is open. Estimate with the average
			// record so that the cap still holds.
			avg := s.cost / int64(max(1, s.lastSeq+1-s.first))
			for seq := next; seq <= s.diskLast; seq++ {
				if !fn(seq, avg) {
					return
				}
			}
		}
	}
	for _, r := range s.held {
		if r.Seq >= from && !fn(r.Seq, recordCost(len(r.Data))) {
			return
		}
	}
}

// updateBudgetLocked sets the cap target from the file as last committed.
//
// The cap is on the file, but a record's share of it depends on how its
// size fits bbolt's pages (a 1.1 KiB record leaves a quarter of each page
// empty, a 300-byte one a twentieth) and on bbolt's own pages. So the ratio
// of pages in use (the file less its free and pending pages) to the cap
// measure of the live records is measured after each commit, and the live
// records are kept under MaxBytes divided by it. Until the spool is a
// sixteenth full, bbolt's fixed pages would distort the ratio, and a guess
// of 1/16 overhead stands.
//
// Besides the pages in use, bbolt needs free pages to write into: pages
// freed by a transaction are reusable only from the next one on, so at the
// cap a commit writes its group into pages freed one or two transactions
// earlier. Room for two of the largest groups seen, and the few pages each
// commit rewrites (tree path, freelist, meta), is set aside for them; the
// file then stays within MaxBytes, a group larger than any before it
// excepted: the bound the spool promises.
func (s *Spool) updateBudgetLocked() {
	ratio := 16.0 / 15
	if s.usedCost >= s.opts.MaxBytes/16 && s.used > 0 {
		ratio = min(max(float64(s.used)/float64(s.usedCost), 1), 4)
	}
	spare := float64(2*s.maxGroup) + 8*float64(os.Getpagesize())
	budget := max(int64((float64(s.opts.MaxBytes)-spare)/ratio), s.opts.MaxBytes/4)
	if budget != s.budget {
		s.mu.Lock()
		s.budget = budget
		s.mu.Unlock()
	}
}
