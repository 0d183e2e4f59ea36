package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// loaded is what a full read of the file found.
type loaded struct {
	hwm       int64  // bbolt's high-water mark
	metaLast  uint64 // last_seq as stored
	lastSeq   uint64 // max(last_seq, newest key)
	diskFirst uint64 // oldest key; lastSeq+1 when there are no records
	liveFirst uint64 // oldest record some cursor has not passed; lastSeq+1 when none
	liveCount uint64
	liveCost  int64
	cursors   map[string]uint64
	gaps      []gap  // those at or after liveFirst
	counters  []byte // Options.Counters' bytes of the last commit; nil if none
}

// openChecked locks and opens path with bbolt and, if validate is set,
// checks the whole file: precheck's structural walk, then a read of every
// record, cursor and meta key (checksums, order), then bbolt's own
// consistency check (page reachability, the freelist, key order).
//
// Lock timeouts give an error wrapping ErrLocked, I/O errors come back as
// they are, and anything wrong with the content gives an error wrapping
// ErrCorrupt; then release is not nil, the file is still locked so that it
// can be moved aside safely, and the caller must call release. A panic
// inside bbolt, or a fault on a page outside the file, counts as
// corruption (the fault through debug.SetPanicOnFault, for this goroutine).
func openChecked(path string, readOnly bool, timeout time.Duration, validate, noSync bool) (db *bolt.DB, ld loaded, release func(), err error) {
	_, statErr := os.Stat(path)
	existed := statErr == nil
	flag := os.O_RDWR | os.O_CREATE
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, ld, nil, fmt.Errorf("spool: open %s: %w", path, err)
	}
	if err := lockFile(f, !readOnly, timeout); err != nil {
		_ = f.Close()
		return nil, ld, nil, classifyOpenError(path, timeout, err)
	}
	corrupt := func(err error) (*bolt.DB, loaded, func(), error) {
		held := db
		db = nil
		return nil, ld, func() { closeQuietly(held, f) }, err
	}

	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, ld, release, err = corrupt(fmt.Errorf("%w: %s: bbolt failed reading it: %v", ErrCorrupt, path, r))
		}
	}()
	if validate && existed {
		fi, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return nil, ld, nil, fmt.Errorf("spool: stat %s: %w", path, err)
		}
		// bbolt would initialize an empty file as a new database; ours are
		// never empty (bbolt writes four pages at creation).
		if fi.Size() == 0 {
			return corrupt(fmt.Errorf("%w: %s is empty", ErrCorrupt, path))
		}
		if err := precheck(f, fi.Size()); err != nil {
			return corrupt(fmt.Errorf("%s: %w", path, err))
		}
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      timeout,
		ReadOnly:     readOnly,
		FreelistType: bolt.FreelistMapType,
		NoSync:       noSync,
		// bbolt opens the file we locked and checked; it locks it again,
		// which flock grants at once, and closes it with the DB.
		OpenFile: func(string, int, os.FileMode) (*os.File, error) { return f, nil },
	})
	if err != nil {
		db = nil
		if errors.Is(err, berrors.ErrTimeout) || isIOError(err) {
			_ = f.Close()
			return nil, ld, nil, classifyOpenError(path, timeout, err)
		}
		return corrupt(fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err))
	}
	if validate {
		ld, err = load(db, path)
	}
	if err == nil && !readOnly {
		err = createBuckets(db)
	}
	if err != nil {
		if isIOError(err) && !errors.Is(err, ErrCorrupt) {
			closeQuietly(db, nil)
			return nil, ld, nil, err
		}
		if !errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
		}
		return corrupt(err)
	}
	return db, ld, nil, nil
}

// errLockTimeout is lockFile's timeout, reported as ErrLocked.
var errLockTimeout = berrors.ErrTimeout

func classifyOpenError(path string, timeout time.Duration, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("spool: %s is held by another edgerelay process (lock not acquired within %s): %w", path, timeout, ErrLocked)
	case isIOError(err):
		return fmt.Errorf("spool: open %s: %w", path, err)
	default:
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
}

// isIOError tells an error of the environment (permissions, a read-only or
// full file system) from one of the file's content.
func isIOError(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.As(err, &pe) || errors.As(err, &errno)
}

// closeQuietly closes db, or f when bbolt does not own it yet.
func closeQuietly(db *bolt.DB, f *os.File) {
	defer func() { _ = recover() }() // closing a damaged file must not crash either
	if db != nil {
		_ = db.Close()
	} else if f != nil {
		_ = f.Close()
	}
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// load reads the whole file. Records behind every cursor, and all records
// when there is no cursor, are not live: nobody can receive them.
func load(db *bolt.DB, path string) (ld loaded, err error) {
	err = db.View(func(tx *bolt.Tx) error {
		ld.hwm = tx.Size()
		// A truncated file: pages the tree may point to are missing. Caught
		// here, before any of them is touched.
		if fi, err := os.Stat(path); err == nil && fi.Size() < ld.hwm {
			return corruptf("%s is %d bytes but its pages reach %d: truncated", path, fi.Size(), ld.hwm)
		}
		// Every page tx.Check will visit must be one this walk visits first
		// (see openChecked): so no bucket but ours, and no nested bucket.
		if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if !bytes.Equal(name, bucketMeta) && !bytes.Equal(name, bucketCursors) && !bytes.Equal(name, bucketRecords) {
				return corruptf("unknown bucket %q", name)
			}
			return nil
		}); err != nil {
			return err
		}
		mb, cb, rb := tx.Bucket(bucketMeta), tx.Bucket(bucketCursors), tx.Bucket(bucketRecords)
		if mb != nil {
			if err := mb.ForEach(func(k, v []byte) error {
				if v == nil {
					return corruptf("nested bucket %q in meta", k)
				}
				return nil
			}); err != nil {
				return err
			}
			if v := mb.Get(keyVersion); v != nil {
				if ver, ok := decodeU64(v); !ok || ver != formatVersion {
					return corruptf("unknown format version %x", v)
				}
			}
			if v := mb.Get(keyLastSeq); v != nil {
				last, ok := decodeU64(v)
				if !ok {
					return corruptf("bad last_seq %x", v)
				}
				ld.metaLast = last
			}
			if v := mb.Get(keyGaps); v != nil {
				gaps, ok := decodeGaps(v)
				if !ok {
					return corruptf("bad gaps %x", v)
				}
				ld.gaps = gaps
			}
			if v := mb.Get(keyCounters); v != nil {
				ld.counters = slices.Clone(v)
			}
		}
		ld.cursors = make(map[string]uint64)
		if cb != nil {
			if err := cb.ForEach(func(k, v []byte) error {
				c, ok := decodeU64(v)
				if len(k) == 0 || !ok {
					return corruptf("bad cursor %q=%x", k, v)
				}
				ld.cursors[string(k)] = c
				return nil
			}); err != nil {
				return err
			}
		}
		liveFrom := uint64(1<<64 - 1)
		for _, c := range ld.cursors {
			liveFrom = min(liveFrom, c+1)
		}
		var prev, firstKey uint64
		if rb != nil {
			c := rb.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) != 8 || v == nil {
					return corruptf("bad record key %x", k)
				}
				seq := binary.BigEndian.Uint64(k)
				if seq == 0 || seq <= prev {
					return corruptf("record %d out of order after %d", seq, prev)
				}
				if prev != 0 && seq != prev+1 && seq > liveFrom && !inGaps(ld.gaps, prev+1, seq-1) {
					return corruptf("records not contiguous: %d after %d", seq, prev)
				}
				data, ok := decodeValue(v)
				if !ok {
					return corruptf("record %d fails its checksum", seq)
				}
				if firstKey == 0 {
					firstKey = seq
				}
				if seq >= liveFrom {
					if ld.liveFirst == 0 {
						ld.liveFirst = seq
					}
					ld.liveCount++
					ld.liveCost += recordCost(len(data))
				}
				prev = seq
			}
		}
		ld.lastSeq = max(ld.metaLast, prev)
		ld.diskFirst = firstKey
		if firstKey == 0 {
			ld.diskFirst = ld.lastSeq + 1
		}
		if ld.liveFirst == 0 {
			ld.liveFirst = ld.lastSeq + 1
		}
		// Gaps behind the live records no longer matter.
		var gaps []gap
		for _, g := range ld.gaps {
			if g.hi >= ld.liveFirst && g.lo <= ld.lastSeq {
				gaps = append(gaps, gap{max(g.lo, ld.liveFirst), min(g.hi, ld.lastSeq)})
			}
		}
		ld.gaps = gaps
		// bbolt's own check: page reachability, the freelist, key order. Drain
		// the channel: its goroutine ends only then.
		var first error
		for e := range tx.Check() {
			if first == nil {
				first = e
			}
		}
		if first != nil {
			return corruptf("consistency check: %v", first)
		}
		return nil
	})
	return ld, err
}

// createBuckets adds the buckets a new file lacks.
func createBuckets(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketRecords, bucketCursors, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		mb := tx.Bucket(bucketMeta)
		if mb.Get(keyVersion) == nil {
			return mb.Put(keyVersion, u64(formatVersion))
		}
		return nil
	})
}

// quarantine moves the damaged file aside as <name>.corrupt-<UTC time> so
// that a fresh spool can start, and logs why.
func (s *Spool) quarantine(cause error, release func()) error {
	defer release() // the rename happens under the lock
	path := s.opts.Path
	base := path + ".corrupt-" + s.opts.Now().UTC().Format("20060102T150405")
	dst := base
	for i := 2; ; i++ { // two quarantines within a second keep both files
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		dst = fmt.Sprintf("%s-%d", base, i)
	}
	var size int64
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	if err := os.Rename(path, dst); err != nil {
		return fmt.Errorf("spool: %s is damaged (%v) and cannot be moved aside: %w", path, cause, err)
	}
	syncDir(filepath.Dir(path))
	s.quarantined++
	s.log.Error("spool file damaged; moved aside, starting an empty spool", "moved_to", dst, "file_bytes", size,
		"err", cause, "next", "inspect it with `edgerelay spool dump`; delete it when done")
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// inGaps says whether every seq of lo..hi is in one of gaps (sorted,
// disjoint, adjacent ones merged).
func inGaps(gaps []gap, lo, hi uint64) bool {
	for _, g := range gaps {
		if g.lo <= lo && hi <= g.hi {
			return true
		}
	}
	return false
}
