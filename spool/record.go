package spool

import "errors"

// Record is one stored envelope: its sequence number in the spool and the
// envelope's JSON bytes exactly as they were accepted.
type Record struct {
	Seq  uint64
	Data []byte
}

// SinkStat is one sink's accounting since the spool was opened. At every
// moment Received == Acked + Evicted + MemoryEvicted + Pending.
//
// Received counts the records the sink had to deliver: the backlog found for
// it at open plus every record appended while it was registered.
type SinkStat struct {
	Received uint64 // backlog at open + appended since
	Acked    uint64 // passed by Ack (delivered or dropped by the sink)
	Evicted  uint64 // removed over the byte cap before the sink acked them (spool_full)
	// MemoryEvicted counts records dropped over Options.MemoryMaxBytes
	// while the disk could not be written, before the sink acked them
	// (memory_full).
	MemoryEvicted uint64
	Pending       uint64 // records after the sink's cursor
	Cursor        uint64 // sequence number of the last acked record
}

// Stat describes the whole spool.
type Stat struct {
	Durable     bool   // records survive a crash (bbolt with fsync)
	Degraded    bool   // disk writes are failing; new records are held in memory only
	Records     uint64 // records held
	Bytes       int64  // bytes of record data held (file size for the disk spool: see Spool.Stat)
	FirstSeq    uint64 // oldest held record; 0 when empty
	LastSeq     uint64 // newest record ever appended
	Quarantined int    // corrupt files moved aside at open
	Sinks       map[string]SinkStat
}

// ErrUnknownSink is returned by Read, Ack and RemoveSink for a sink that was
// never added.
var ErrUnknownSink = errors.New("spool: unknown sink")

// ErrClosed is returned by every method after Close.
var ErrClosed = errors.New("spool: closed")
