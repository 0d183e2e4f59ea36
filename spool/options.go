package spool

import (
	"errors"
	"log/slog"
	"time"
)

// Defaults for Options.
const (
	DefaultMaxBytes        = 1 << 30 // EDGERELAY_SPOOL_MAX_BYTES
	DefaultLockTimeout     = 2 * time.Second
	DefaultCompactMinBytes = 8 << 20
	DefaultAckDelay        = 5 * time.Millisecond
	DefaultAckMaxUnsynced  = 4096
	// DefaultMemoryMaxBytes bounds what the spool holds in memory while its
	// disk cannot be written (EDGERELAY_SPOOL_MEMORY_MAX_BYTES).
	DefaultMemoryMaxBytes = 16 << 20

	// MinMaxBytes is the smallest cap Validate accepts: below it bbolt's own
	// pages (two meta pages, the freelist, the roots) are a large part of the
	// file and the cap loses its meaning.
	MinMaxBytes = 64 << 10
)

// Options configures Open. The zero value of every field but Path means its
// documented default.
type Options struct {
	// Path is the bbolt file, e.g. <state dir>/spool.db. Its directory is
	// created with mode 0700 if missing. Required.
	Path string
	// MaxBytes caps the disk the spool uses (default DefaultMaxBytes). Over
	// the cap the oldest records are evicted, counted per sink as Evicted
	// (reason spool_full). See Spool.Append for how the cap is measured.
	MaxBytes int64
	// LockTimeout is how long Open waits for another process to release the
	// file (default DefaultLockTimeout). bbolt's own zero means forever,
	// which would hang a restart behind a stuck old process.
	LockTimeout time.Duration
	// CompactMinBytes is the file size below which the spool never compacts
	// (default DefaultCompactMinBytes): rewriting a small file gives little
	// back. Above it, the file is compacted whenever its live records fill
	// at most an eighth of it, so a drained backlog leaves a file of at most
	// about this size.
	CompactMinBytes int64
	// AckDelay is how long an acknowledgement may wait for the spool
	// writer's next group commit to carry its cursor to disk before the ack
	// flusher commits it (default DefaultAckDelay).
	AckDelay time.Duration
	// AckMaxUnsynced bounds, per sink, the records acknowledged whose cursor
	// is not yet on disk (default DefaultAckMaxUnsynced): AckFrom waits for
	// a commit beyond it. A crash sends those records again.
	AckMaxUnsynced int
	// MemoryMaxBytes caps the records held in memory while the disk cannot
	// be written (degraded mode; default DefaultMemoryMaxBytes). Over it the
	// oldest records held in memory are dropped, counted per sink as
	// MemoryEvicted (reason memory_full); records already on disk stay.
	// The measure is the records' bytes plus heldOverhead each.
	MemoryMaxBytes int64
	// Counters, when set, is called in the last transaction of every
	// commit; the bytes it returns are stored with that commit (meta key
	// "counters") and handed back by SavedCounters after the next Open. The
	// agent keeps its accounting counters there, so that they survive a
	// restart. It runs with the spool's writer lock held: it may call
	// Stat and SinkStat, but no method that writes.
	Counters func() []byte
	// Logger receives the spool's few log lines (default: discarded).
	Logger *slog.Logger
	// Now is the clock, for quarantine names and the write-retry interval
	// (default time.Now).
	Now func() time.Time

	noSync bool // tests only (the fuzz target): skip fsync
}

// Validate reports every invalid field at once.
func (o Options) Validate() error {
	var errs []error
	if o.Path == "" {
		errs = append(errs, errors.New("spool: Options.Path is required"))
	}
	if o.MaxBytes < 0 || (o.MaxBytes > 0 && o.MaxBytes < MinMaxBytes) {
		errs = append(errs, errors.New("spool: Options.MaxBytes must be 0 (default) or at least 64 KiB"))
	}
	if o.LockTimeout < 0 {
		errs = append(errs, errors.New("spool: Options.LockTimeout must not be negative"))
	}
	if o.MemoryMaxBytes < 0 || (o.MemoryMaxBytes > 0 && o.MemoryMaxBytes < MinMaxBytes) {
		errs = append(errs, errors.New("spool: Options.MemoryMaxBytes must be 0 (default) or at least 64 KiB"))
	}
	if o.CompactMinBytes < 0 {
		errs = append(errs, errors.New("spool: Options.CompactMinBytes must not be negative"))
	}
	if o.AckDelay < 0 {
		errs = append(errs, errors.New("spool: Options.AckDelay must not be negative"))
	}
	if o.AckMaxUnsynced < 0 {
		errs = append(errs, errors.New("spool: Options.AckMaxUnsynced must not be negative"))
	}
	return errors.Join(errs...)
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.CompactMinBytes == 0 {
		o.CompactMinBytes = DefaultCompactMinBytes
	}
	if o.AckDelay == 0 {
		o.AckDelay = DefaultAckDelay
	}
	if o.AckMaxUnsynced == 0 {
		o.AckMaxUnsynced = DefaultAckMaxUnsynced
	}
	if o.MemoryMaxBytes == 0 {
		o.MemoryMaxBytes = DefaultMemoryMaxBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}
