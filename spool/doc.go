// Package spool keeps envelopes between the ring and the sinks.
//
// A spool is an append-only log of records keyed by a monotonically
// increasing sequence number, with one cursor per sink. A record is deleted
// once every sink's cursor has passed it; over the byte cap the oldest records
// are evicted and counted per sink that had not yet delivered them.
//
// Two implementations share one method set: Memory (memory-only mode, nothing
// survives a restart) and Spool (bbolt on disk, fsynced group commits). The
// agent picks one at start-up; sinks never know which.
//
// # Disk layout
//
// One bbolt file, three buckets:
//
//	spool.db
//	├── "records"  FillPercent 1.0 (keys only ever grow)
//	│     key:   seq, 8 bytes big-endian ── 00 00 00 00 00 00 00 2a
//	│     value: CRC-32C of the envelope (4 bytes BE) ║ envelope JSON bytes
//	│            the live records are exactly first..last but for meta "gaps"
//	├── "cursors"
//	│     key:   sink name ── "http", "kafka", ...
//	│     value: seq of the last record the sink acked, 8 bytes BE
//	└── "meta"
//	      "version"  = 1, 8 bytes BE (the layout above)
//	      "last_seq" = last seq ever assigned and committed, 8 bytes BE
//	                   (kept so seqs never repeat after the log empties)
//	      "gaps"     = (lo, hi) pairs, 8 bytes BE each: seqs with no record,
//	                   dropped from memory while the disk was full (only
//	                   while some cursor is behind one; see degraded.go)
//	      "counters" = Options.Counters' bytes of the last commit (the
//	                   agent's accounting counters, JSON)
//
//	      first                     cursor(kafka)      cursor(http)      last
//	        │                             │                  │             │
//	 ───────┼──────── records ────────────┼──────────────────┼─────────────┤
//	  deleted: behind every cursor,       pending for kafka  pending for   │
//	  or evicted over the cap             only               both ─────────┘
//
// # Where data can be lost
//
//   - Over the cap: the oldest records are evicted (counted as Evicted).
//   - Degraded mode: while writes fail (at Open too), new records are held
//     in memory (Append returns ErrNotDurable); a crash then loses them.
//     Over Options.MemoryMaxBytes the oldest held go (MemoryEvicted).
//   - Corruption: a damaged file is moved aside whole (<name>.corrupt-<time>)
//     and the spool starts empty; the old file stays for inspection.
//   - Duplicates, not loss: a batch sent but not yet acked when the process
//     dies is sent again after the restart, and so are records acked whose
//     cursor no commit had carried yet: an ack moves the cursor in memory
//     and the next commit (the writer's group commit, or the ack flusher's
//     within Options.AckDelay) writes it; at most Options.AckMaxUnsynced
//     records per sink wait so (ack.go).
package spool
