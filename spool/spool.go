package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/livepeer/edgerelay/internal/logthrottle"
)

// Spool is the durable spool: records in one bbolt file, appended in fsynced
// transactions, with one persisted cursor per sink (layout in the package
// doc). It has the same methods and semantics as Memory.
//
// Spool is safe for concurrent use. Writers (Append, Ack, AddSink,
// RemoveSink, Close) are serialized, each running its bbolt write
// transaction alone, as bbolt requires. Readers (Read, Ready, SinkStat,
// Stat, Sinks) never wait for a writer's fsync; Read waits only for the
// instant a compaction swaps files.
type Spool struct {
	opts Options // defaults applied; read-only after Open
	log  *slog.Logger

	// Lock order: wmu, then dbmu, then mu.
	wmu  sync.Mutex   // serializes writers and compaction
	dbmu sync.RWMutex // held shared by Read around its bbolt transaction, exclusively by the compaction swap
	db   *bolt.DB     // replaced only with wmu and dbmu held

	// mu guards the fields below. They change only in writers holding wmu,
	// so a writer may read them without mu; everyone else takes mu.
	mu          sync.Mutex
	closed      bool
	sinks       map[string]*diskSink
	removed     map[string]bool // cursors to delete from disk at the next commit
	lastSeq     uint64          // newest record ever appended
	first       uint64          // oldest live record; lastSeq+1 when there is none
	cost        int64           // cap measure of the live records, disk and held (see Append)
	diskFirst   uint64          // keys in [diskFirst, first) are still on disk, to be deleted
	diskLast    uint64          // live records up to diskLast are on disk, those after it in held
	metaLast    uint64          // last_seq as written on disk
	held        []Record        // live records after diskLast, in order; replaced or appended to, never written in place, so Read may keep a copy of the header
	heldCost    int64
	heldDead    int    // records sliced off held's front since its array was allocated (dropHeldLocked)
	gaps        []gap  // seqs in [first, lastSeq] that hold no record (degraded.go); replaced, never written in place
	gapsDirty   bool   // gaps differ from the list on disk
	epoch       uint64 // bumped when a file opened late renumbers the records held (adoptLocked)
	hwm         int64  // bytes of the file in use (bbolt's high-water mark) after the last commit
	budget      int64  // target for cost, see updateBudgetLocked
	used        int64  // bytes of pages in use after the last commit: hwm less free and pending pages
	usedCost    int64  // cost of the live records at that commit
	maxGroup    int64  // cost of the largest Append since Open, at most MaxBytes/8
	degraded    bool
	degradedAt  time.Time
	lastTry     time.Time // last failed write, for retryInterval
	quarantined int
	compactFail time.Time             // last failed compaction, for compactRetry
	evictLog    *logthrottle.Throttle // the "spool full" line, once per evictLogEvery
	memLog      *logthrottle.Throttle // the "memory budget full" line, once per evictLogEvery
	retryStop   chan struct{}         // ends the retry goroutine; nil when none runs
	retryWG     sync.WaitGroup        // the retry goroutine
	syncWanted  bool                  // Sync asked for a commit (the counters changed)
	saved       []byte                // counters found in the file at open, until TakeSavedCounters
	synced      chan struct{}         // closed and replaced after each commit (ack.go)

	flush ackFlusher // commits acknowledgements when no writer does (ack.go)

	failWrites atomic.Bool              // test seam: every write transaction fails with ENOSPC
	txHook     func(p commitPlan) error // test seam: runs in every write transaction; an error fails it
}

type diskSink struct {
	cursor     uint64
	received   uint64
	acked      uint64
	evicted    uint64
	memEvicted uint64
	dirty      bool // cursor differs from the one on disk
	ready      chan struct{}
	// After a file opened late renumbered the records (adoptLocked), an
	// ack past readMax is one of a batch read before: it is ignored.
	guarded bool
	readMax uint64 // highest seq Read returned in the current epoch
	// syncedAcked is acked as of the cursor last written to disk:
	// acked-syncedAcked records would be sent again after a crash.
	syncedAcked uint64
}

// Open opens or creates the spool file at opts.Path.
//
// A file that another process holds is waited for up to opts.LockTimeout,
// then Open fails with an error wrapping ErrLocked. A damaged file (bbolt
// refuses it, panics on it, fails its consistency check, or a record's
// checksum fails) is renamed to <name>.corrupt-<YYYYMMDDThhmmss> and a fresh
// spool is started: Stat().Quarantined says so. Every persisted cursor is
// registered again as a sink that resumes where it stopped, its Received
// starting at its backlog.
//
// A file that cannot be created or opened for a reason of its environment
// (a missing or read-only state directory, a full disk, permissions) does
// not fail Open: the spool starts degraded, holding records in memory, and
// retries the file every second like a disk that fails later (see
// adoptLocked for a file that turns up with records of its own). A new
// file is created under a temporary name and renamed into place once
// bbolt has written it, so a failed creation leaves nothing that a later
// start would take for a damaged file. Open fails only when another
// process holds the file, or a fresh file is damaged at once.
func Open(opts Options) (*Spool, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	s := &Spool{
		opts:      o,
		log:       o.Logger.With("path", o.Path),
		sinks:     make(map[string]*diskSink),
		removed:   make(map[string]bool),
		evictLog:  logthrottle.New(evictLogEvery, 1),
		memLog:    logthrottle.New(evictLogEvery, 1),
		first:     1, // no file yet: initState sets these from the file
		diskFirst: 1,
	}
	start := time.Now()
	db, ld, err := s.openFile(o.LockTimeout)
	switch {
	case err == nil:
		s.db = db
		s.initState(ld)
		// A compaction cut short by a crash leaves its output behind; the
		// original file is whole, so the partial copy just goes. (Only now,
		// with the lock held: it may be a running agent's.)
		if err := os.Remove(s.compactPath()); err == nil {
			s.log.Info("removed an unfinished compaction file", "file", s.compactPath())
		}
	case errors.Is(err, ErrLocked), errors.Is(err, ErrCorrupt):
		return nil, err
	default:
		s.wmu.Lock()
		s.failedLocked(o.Now(), err)
		s.wmu.Unlock()
		s.startAckFlusher()
		return s, nil
	}

	// Settle what the file held: records behind every cursor, cursors behind
	// the first record, a cap lowered since the last run.
	s.wmu.Lock()
	s.enforceCapLocked()
	_ = s.commitLocked(true) // a failure is logged and leaves the spool degraded
	s.wmu.Unlock()
	s.startAckFlusher()

	st := s.Stat()
	s.log.Info("spool opened", "records", st.Records, "file_bytes", s.hwm, "first_seq", st.FirstSeq,
		"last_seq", st.LastSeq, "sinks", len(st.Sinks), "took", time.Since(start))
	return s, nil
}

// initState loads what openChecked found into s. It runs before s is shared.
func (s *Spool) initState(ld loaded) {
	s.lastSeq = ld.lastSeq
	s.first = ld.liveFirst
	s.cost = ld.liveCost
	s.diskFirst = ld.diskFirst
	s.diskLast = ld.lastSeq
	s.hwm = ld.hwm
	s.gaps = ld.gaps
	s.saved = ld.counters
	for name, c := range ld.cursors {
		// Clamp a cursor into [first-1, last]: records behind first are gone.
		cur := min(max(c, s.first-1), s.lastSeq)
		s.sinks[name] = &diskSink{
			cursor:   cur,
			received: s.pendingLocked(cur), // the backlog is what it has to deliver
			dirty:    cur != c,
			ready:    make(chan struct{}, 1),
		}
	}
	s.metaLast = ld.metaLast // if behind lastSeq, the next commit writes it
}

// AddSink registers a sink. A new sink starts at the end of the log and its
// cursor is persisted at once (or with the next successful write while the
// spool is degraded). A sink whose cursor was found at Open, or already
// added, is left as it is: it resumes from its cursor.
//
// Names must be 1 to 1024 bytes (they are bbolt keys).
func (s *Spool) AddSink(name string) error {
	if name == "" || len(name) > 1024 {
		return fmt.Errorf("spool: sink name must be 1 to 1024 bytes, got %d", len(name))
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.sinks[name]; ok {
		return nil
	}
	s.mu.Lock()
	s.sinks[name] = &diskSink{cursor: s.lastSeq, dirty: true, ready: make(chan struct{}, 1)}
	delete(s.removed, name)
	s.mu.Unlock()
	_ = s.commitLocked(false) // a failure is logged and leaves the spool degraded
	return nil
}

// RemoveSink forgets a sink, deletes its persisted cursor, and returns its
// final accounting; its pending records are no longer kept for it.
func (s *Spool) RemoveSink(name string) (SinkStat, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return SinkStat{}, ErrClosed
	}
	sk, ok := s.sinks[name]
	if !ok {
		return SinkStat{}, ErrUnknownSink
	}
	s.mu.Lock()
	st := s.sinkStatLocked(sk)
	delete(s.sinks, name)
	s.removed[name] = true
	s.mu.Unlock()
	s.collectLocked()
	if s.commitLocked(false) == nil {
		s.maybeCompactLocked()
	}
	return st, nil
}

// Append adds records in order, in one bbolt transaction with fsync: when it
// returns nil they are durable. The caller groups records (one call per
// commit group); the Data slices are kept until written and must not be
// modified.
//
// Append never fails for lack of room. The file is kept within MaxBytes,
// give or take the group being written: the records' bytes plus a fixed
// per-record overhead (key, checksum, bbolt's element header) are held
// under a target scaled by how much of the file they are found to occupy
// (see updateBudgetLocked). Over it, the oldest
// records are evicted and counted for every sink that had not acked them.
//
// When the disk write fails, the records are held in memory instead and
// Append returns an error wrapping ErrNotDurable; Stat().Degraded is set.
// What is held in memory is bounded by Options.MemoryMaxBytes: over it the
// oldest records held go (memory_full). Writes are retried at most once a
// second (by later calls, or by a goroutine of the spool while nothing
// else writes); once one succeeds, what is held moves to disk in order, in
// transactions of at most persistChunkBytes each.
func (s *Spool) Append(data [][]byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if len(data) == 0 {
		return nil
	}
	recs := make([]Record, len(data))
	var c int64
	for i, d := range data {
		recs[i] = Record{Seq: s.lastSeq + 1 + uint64(i), Data: d}
		c += recordCost(len(d))
	}
	s.maxGroup = min(max(s.maxGroup, c), s.opts.MaxBytes/8) // only writers read it
	s.mu.Lock()
	s.held = append(s.held, recs...)
	s.heldCost += c
	s.cost += c
	s.lastSeq += uint64(len(data))
	for _, sk := range s.sinks {
		sk.received += uint64(len(data))
	}
	s.mu.Unlock()

	s.collectLocked() // with no sinks, nothing is kept
	s.enforceCapLocked()
	err := s.commitLocked(false)
	if err != nil {
		s.enforceMemoryLocked()
	}
	for _, sk := range s.sinks {
		select {
		case sk.ready <- struct{}{}:
		default:
		}
	}
	if err != nil {
		return fmt.Errorf("spool: %d records held in memory: %w: %w", len(s.held), ErrNotDurable, err)
	}
	s.maybeCompactLocked()
	return nil
}

// Read returns up to limit records after the sink's cursor, stopping before
// maxBytes of data would be exceeded; the first record is returned even when
// it alone is larger (maxBytes <= 0: no byte limit). It does not move the
// cursor. Records read from disk are copies; records still held in memory
// (degraded mode) share the slices given to Append and must not be modified.
//
// The records returned have consecutive seqs: a batch stops before a gap
// left by records dropped from memory (memory_full), and before the
// records held in memory when it began on disk. A forwarder that counts a
// batch by its first and last seq counts it right.
func (s *Spool) Read(sink string, limit, maxBytes int) ([]Record, error) {
	return s.read(sink, 0, limit, maxBytes)
}

// read is Read from seq after instead of the sink's cursor when after > 0
// (tests read past a batch's end without acking).
func (s *Spool) read(sink string, after uint64, limit, maxBytes int) ([]Record, error) {
	var b Batch
	err := s.ReadBatch(sink, after, limit, maxBytes, &b)
	if len(b.Recs) == 0 {
		return nil, err
	}
	return b.Recs, err
}

// Ack is AckFrom without the position it moved from: the cursor moves at
// once, reaches disk with the next commit, and the records every sink has
// passed are deleted by that commit.
func (s *Spool) Ack(sink string, seq uint64) error {
	_, err := s.AckFrom(sink, seq)
	return err
}

// Ready returns a channel that receives a value after records are appended.
// It returns nil for an unknown sink.
func (s *Spool) Ready(sink string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sk, ok := s.sinks[sink]; ok {
		return sk.ready
	}
	return nil
}

// SinkStat returns one sink's accounting since Open.
func (s *Spool) SinkStat(sink string) (SinkStat, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sk, ok := s.sinks[sink]
	if !ok {
		return SinkStat{}, ErrUnknownSink
	}
	return s.sinkStatLocked(sk), nil
}

// Sinks returns the names of the known cursors, sorted: those added since
// Open and those found in the file. The agent removes the ones no longer
// configured, whose cursors would otherwise keep records forever.
func (s *Spool) Sinks() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.sinks))
}

// Stat describes the spool. Durable is always true for a Spool; Degraded
// says whether records are being held in memory because writes fail. Bytes
// is the file's size in use (bbolt's high-water mark: pages holding records
// plus free pages awaiting reuse; the tail bbolt preallocates beyond it is
// sparse) plus the cap measure of records held in memory.
func (s *Spool) Stat() Stat {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stat{
		Durable:     true,
		Degraded:    s.degraded,
		Bytes:       s.hwm + s.heldCost,
		LastSeq:     s.lastSeq,
		Quarantined: s.quarantined,
		Sinks:       make(map[string]SinkStat, len(s.sinks)),
	}
	// Records every sink has passed are deleted by the next commit; they
	// are not counted while they wait for it.
	first := s.first
	if len(s.sinks) > 0 {
		live := s.lastSeq + 1
		for _, sk := range s.sinks {
			live = min(live, sk.cursor+1)
		}
		first = max(first, live)
	}
	if first <= s.lastSeq {
		st.Records = s.lastSeq - first + 1 - s.missingLocked(first-1, s.lastSeq)
		st.FirstSeq = first
	}
	for name, sk := range s.sinks {
		st.Sinks[name] = s.sinkStatLocked(sk)
	}
	return st
}

// Close writes what is pending (one last try if degraded), then closes the
// file. Records still held in memory are lost, and Close says so with an
// error wrapping ErrNotDurable. Later calls to other methods return
// ErrClosed; Close itself may be called again.
func (s *Spool) Close() error {
	s.stopAckFlusher()
	s.wmu.Lock()
	err := s.closeLocked()
	s.wmu.Unlock()
	s.retryWG.Wait()
	return err
}

func (s *Spool) closeLocked() error {
	if s.closed {
		return nil
	}
	var errs []error
	s.collectLocked() // what acknowledgements since the last commit passed
	if err := s.commitLocked(true); err != nil && len(s.held) > 0 {
		s.log.Error("spool closed with records not on disk; they are lost", "records", len(s.held), "err", err)
		errs = append(errs, fmt.Errorf("spool: %d records lost at close: %w: %w", len(s.held), ErrNotDurable, err))
	}
	s.mu.Lock()
	s.closed = true
	s.held, s.heldCost = nil, 0
	s.notifySyncedLocked()
	s.mu.Unlock()
	if s.retryStop != nil {
		close(s.retryStop)
		s.retryStop = nil
	}
	s.dbmu.Lock()
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("spool: close %s: %w", s.opts.Path, err))
		}
	}
	s.dbmu.Unlock()
	return errors.Join(errs...)
}

func (s *Spool) sinkStatLocked(sk *diskSink) SinkStat {
	return SinkStat{
		Received:      sk.received,
		Acked:         sk.acked,
		Evicted:       sk.evicted,
		MemoryEvicted: sk.memEvicted,
		Pending:       s.pendingLocked(sk.cursor),
		Cursor:        sk.cursor,
	}
}

func (s *Spool) compactPath() string { return s.opts.Path + ".compact" }
