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
package spool
