package spool

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Acknowledgements and the reads of pipelined delivery.
//
// An acknowledgement moves the sink's cursor in memory only, under mu and
// never under wmu, so a forwarder never queues behind the spool writer's
// fsync. The cursor reaches disk with the next commit, whoever makes it:
// the spool writer's group commit while events come in (commitLocked writes
// every dirty cursor and deletes what every sink has passed), otherwise the
// ack flusher's, at most AckDelay after the acknowledgement. A sink with
// more than AckMaxUnsynced records acknowledged but not yet on disk waits in
// AckFrom, holding no lock, until a commit covers them: after a crash a sink
// sends again at most what it had in flight plus AckMaxUnsynced records.
//
//	forwarder ── AckFrom ──► cursor (memory, mu) ──┐ dirty
//	                                               ├──► next commit: writer's group commit
//	ack flusher ◄── kick ──────────────────────────┘     or the flusher's, ≤ AckDelay later

// ackFlusher is the goroutine that commits acknowledgements when no writer
// does. It is started by Open and stopped by Close.
type ackFlusher struct {
	kick   chan struct{} // capacity 1: an acknowledgement is waiting for a commit
	urgent chan struct{} // capacity 1: an AckFrom waits on the bound; commit now
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when the goroutine returns
	once   sync.Once     // closes stop
}

// startAckFlusher runs the ack flusher. Called once, from Open.
func (s *Spool) startAckFlusher() {
	s.flush = ackFlusher{
		kick:   make(chan struct{}, 1),
		urgent: make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	s.mu.Lock()
	s.synced = make(chan struct{})
	s.mu.Unlock()
	go s.runAckFlusher()
}

// stopAckFlusher ends the flusher and waits for it; Close commits what is
// left. Safe to call more than once.
func (s *Spool) stopAckFlusher() {
	s.flush.once.Do(func() { close(s.flush.stop) })
	<-s.flush.done
}

func (s *Spool) runAckFlusher() {
	defer close(s.flush.done)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		urgent := false
		select {
		case <-s.flush.stop:
			return
		case <-s.flush.kick:
		case <-s.flush.urgent:
			urgent = true
		}
		if !urgent {
			// Give the writer's next group commit the chance to carry the
			// acknowledgement, and let more acknowledgements gather. An
			// AckFrom waiting on the bound commits at once: it sends urgent
			// once and then waits for the commit.
			t.Reset(s.opts.AckDelay)
			select {
			case <-s.flush.stop:
				t.Stop()
				return
			case <-s.flush.urgent:
				t.Stop()
			case <-t.C:
			}
		}
		s.wmu.Lock()
		if !s.closed {
			s.collectLocked()
			if s.commitLocked(false) == nil {
				s.maybeCompactLocked()
			}
		}
		s.wmu.Unlock()
		s.mu.Lock()
		s.notifySyncedLocked() // a failed commit wakes waiters too: they stop waiting while degraded
		s.mu.Unlock()
	}
}

// notifySyncedLocked wakes the AckFrom calls waiting for a commit. Callers
// hold mu.
func (s *Spool) notifySyncedLocked() {
	if s.synced != nil {
		close(s.synced)
	}
	s.synced = make(chan struct{})
}

// AckFrom moves the sink's cursor to seq (records up to seq are done for
// it) and returns the cursor it moved from. Records at or before that
// position that the caller had read were evicted over the cap while in
// flight: they are counted as Evicted, not acked. Acking behind the cursor
// is a no-op; acking past the last record acks up to it.
//
// The new cursor is in memory at once and on disk with the next commit (see
// the top of this file); AckFrom waits for that commit only when the sink
// has more than Options.AckMaxUnsynced records acknowledged and not on
// disk, and never while the spool is degraded: a crash before the commit
// sends those records again, which envelope ids make harmless.
func (s *Spool) AckFrom(sink string, seq uint64) (prev uint64, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	sk, ok := s.sinks[sink]
	if !ok {
		s.mu.Unlock()
		return 0, ErrUnknownSink
	}
	prev = sk.cursor
	seq = min(seq, s.lastSeq)
	if sk.guarded && seq > sk.readMax {
		// Read before adoptLocked renumbered the records: those records
		// are still pending under their new seqs and go again. Telling
		// the caller they were evicted keeps it from counting them.
		s.mu.Unlock()
		return max(seq, prev), nil
	}
	if seq <= sk.cursor {
		s.mu.Unlock()
		return prev, nil
	}
	sk.acked += seq - sk.cursor - s.missingLocked(sk.cursor, seq)
	sk.cursor = seq
	sk.dirty = true
	for !s.closed && !s.degraded && sk.acked-sk.syncedAcked > uint64(s.opts.AckMaxUnsynced) && s.sinks[sink] == sk {
		ch := s.synced
		s.mu.Unlock()
		select {
		case s.flush.urgent <- struct{}{}:
		default:
		}
		<-ch
		s.mu.Lock()
	}
	s.mu.Unlock()
	select {
	case s.flush.kick <- struct{}{}:
	default:
	}
	return prev, nil
}

// Batch is a reusable buffer for ReadBatch. Records read from disk share one
// backing array that the next ReadBatch into the same Batch overwrites, so a
// read costs no allocation per record once the Batch has grown.
type Batch struct {
	Recs []Record
	// Cut says the read stopped short of its limit because the next record
	// would have passed maxBytes: waiting will not make this batch larger.
	Cut   bool
	buf   []byte
	spans []span
}

// span is where a record read from disk lies in Batch.buf.
type span struct {
	seq      uint64
	off, end int
}

// Bytes is the record data the batch holds.
func (b *Batch) Bytes() int {
	n := 0
	for _, r := range b.Recs {
		n += len(r.Data)
	}
	return n
}

// ReadBatch reads into b up to limit records after position after (or after
// the sink's cursor when that is further), stopping before maxBytes of data
// would be exceeded; the first record is read even when it alone is larger
// (maxBytes <= 0: no byte limit). It does not move the cursor. A forwarder
// with several batches in flight reads each one after the last it sent.
//
// The records read from disk are copied out of bbolt's map in one short
// read transaction into b's buffer: a transaction held while the batch is
// sent would block a writer that must grow the file, and a reference into
// the map would be invalid after it. Records still held in memory
// (degraded mode) share the slices given to Append and must not be
// modified.
func (s *Spool) ReadBatch(sink string, after uint64, limit, maxBytes int, b *Batch) error {
	b.Recs, b.Cut = b.Recs[:0], false
	s.dbmu.RLock()
	defer s.dbmu.RUnlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	sk, ok := s.sinks[sink]
	if !ok {
		s.mu.Unlock()
		return ErrUnknownSink
	}
	from := max(after+1, sk.cursor+1, s.first)
	last, diskLast, held, db, epoch := s.lastSeq, s.diskLast, s.held, s.db, s.epoch
	s.mu.Unlock()
	if from > last || limit <= 0 {
		return nil
	}

	size := 0
	full := false
	var prevSeq uint64
	// fits says whether record seq of n bytes joins the batch. A batch
	// holds consecutive seqs: it stops before a gap left by records dropped
	// from memory (memory_full), so a forwarder that counts a batch by its
	// first and last seq counts it right.
	fits := func(seq uint64, n int) bool {
		if len(b.Recs) >= limit || (len(b.Recs) > 0 && seq != prevSeq+1) {
			full = true
			return false
		}
		if len(b.Recs) > 0 && maxBytes > 0 && size+n > maxBytes {
			full, b.Cut = true, true
			return false
		}
		prevSeq = seq
		return true
	}
	if from <= diskLast && db != nil {
		// Offsets first, slices after: the buffer may grow while copying.
		spans := b.spans[:0]
		buf := b.buf[:0]
		err := db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketRecords).Cursor()
			for k, v := c.Seek(seqKey(from)); k != nil; k, v = c.Next() {
				seq := binary.BigEndian.Uint64(k)
				if seq > diskLast || len(v) < crcSize || !fits(seq, len(v)-crcSize) {
					break
				}
				off := len(buf)
				buf = append(buf, v[crcSize:]...)
				spans = append(spans, span{seq, off, len(buf)})
				size += len(v) - crcSize
				b.Recs = append(b.Recs, Record{}) // counted by fits; filled below
			}
			return nil
		})
		if err != nil {
			b.Recs = b.Recs[:0]
			return fmt.Errorf("spool: read for sink %q: %w", sink, err)
		}
		b.buf, b.spans = buf, spans
		for i, sp := range spans {
			b.Recs[i] = Record{Seq: sp.seq, Data: buf[sp.off:sp.end:sp.end]}
		}
	}
	// Records held in memory start a batch of their own: one that began on
	// disk stops before them.
	if !full && len(b.Recs) == 0 && len(held) > 0 {
		i := 0
		if from > held[0].Seq {
			i = int(from - held[0].Seq)
		}
		for ; i < len(held) && fits(held[i].Seq, len(held[i].Data)); i++ {
			b.Recs = append(b.Recs, held[i])
			size += len(held[i].Data)
		}
	}
	if n := len(b.Recs); n > 0 {
		s.mu.Lock()
		if sk := s.sinks[sink]; sk != nil && s.epoch == epoch {
			sk.readMax = max(sk.readMax, b.Recs[n-1].Seq)
		}
		s.mu.Unlock()
	}
	return nil
}
