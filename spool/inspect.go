package spool

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Inspect describes the spool file at path without changing it, for
// `edgerelay spool stat` on a stopped agent. It opens the file read-only
// with a shared lock, so it fails after lockTimeout (0: DefaultLockTimeout)
// with an error wrapping ErrLocked while an agent runs on it. A damaged file
// gives an error wrapping ErrCorrupt; Inspect never quarantines.
//
// Each sink's Received is its backlog (Pending), as after Open; Bytes is the
// file's size in use.
func Inspect(path string, lockTimeout time.Duration) (Stat, error) {
	if lockTimeout <= 0 {
		lockTimeout = DefaultLockTimeout
	}
	db, ld, release, err := openChecked(path, true, lockTimeout, true, false)
	if release != nil {
		release()
	}
	if err != nil {
		return Stat{}, err
	}
	defer closeQuietly(db, nil)
	st := Stat{
		Durable: true,
		Bytes:   ld.hwm,
		LastSeq: ld.lastSeq,
		Records: ld.liveCount,
		Sinks:   make(map[string]SinkStat, len(ld.cursors)),
	}
	if ld.liveCount > 0 {
		st.FirstSeq = ld.liveFirst
	}
	gs := &Spool{gaps: ld.gaps, lastSeq: ld.lastSeq}
	for name, c := range ld.cursors {
		cur := min(max(c, ld.liveFirst-1), ld.lastSeq)
		n := gs.pendingLocked(cur)
		st.Sinks[name] = SinkStat{Received: n, Pending: n, Cursor: cur}
	}
	return st, nil
}

// dumpLine is one line of Dump's output.
type dumpLine struct {
	Seq   uint64          `json:"seq"`
	Data  json.RawMessage `json:"data,omitempty"`  // the envelope, as stored
	Raw   *string         `json:"raw,omitempty"`   // the stored bytes, when they are not JSON
	Error string          `json:"error,omitempty"` // why the record is damaged
}

// Dump writes the records of the spool file at path as JSON lines, for
// `edgerelay spool dump` on a stopped agent:
//
//	{"seq":42,"data":{...envelope...}}
//
// With sink set, only the records after that sink's cursor (its backlog);
// otherwise every record in the file. limit > 0 stops after that many. A
// record whose bytes are not JSON is written as {"seq":N,"raw":"..."}; one
// whose checksum fails also carries "error". Dump works on quarantined files
// too: it reads what it can, and returns an error wrapping ErrCorrupt where
// bbolt can go no further. The lock is waited for DefaultLockTimeout.
func Dump(path string, sink string, limit int, w io.Writer) (err error) {
	// No validation: a damaged file is dumped as far as it can be read.
	db, _, release, err := openChecked(path, true, DefaultLockTimeout, false, false)
	if release != nil {
		release()
	}
	if err != nil {
		return err
	}
	defer closeQuietly(db, nil)
	bw := bufio.NewWriter(w)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: reading stopped: %v", ErrCorrupt, path, r)
		}
		if ferr := bw.Flush(); err == nil {
			err = ferr
		}
	}()
	return db.View(func(tx *bolt.Tx) error {
		from := uint64(0)
		if sink != "" {
			cb := tx.Bucket(bucketCursors)
			var v []byte
			if cb != nil {
				v = cb.Get([]byte(sink))
			}
			c, ok := decodeU64(v)
			if !ok {
				return fmt.Errorf("spool: %s: sink %q: %w", path, sink, ErrUnknownSink)
			}
			from = c + 1
		}
		rb := tx.Bucket(bucketRecords)
		if rb == nil {
			return nil
		}
		enc := json.NewEncoder(bw)
		enc.SetEscapeHTML(false) // envelopes come out as stored
		n := 0
		c := rb.Cursor()
		for k, v := c.Seek(seqKey(from)); k != nil && (limit <= 0 || n < limit); k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("%w: %s: bad key %x", ErrCorrupt, path, k)
			}
			line := dumpLine{Seq: binary.BigEndian.Uint64(k)}
			data, ok := decodeValue(v)
			if !ok {
				line.Error = "checksum mismatch"
			}
			if json.Valid(data) {
				line.Data = data
			} else {
				raw := string(data)
				line.Raw = &raw
			}
			if err := enc.Encode(line); err != nil {
				return err
			}
			n++
		}
		return nil
	})
}
