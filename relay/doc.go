// Package relay delivers envelopes from the spool to their destinations.
//
// Every destination is a Sink. One Forwarder per sink reads batches from that
// sink's cursor, hands them to Send, acknowledges what the sink settled, and
// waits as the outcome requires: backoff with jitter after a transient error,
// max(backoff, Retry-After) when throttled, a periodic probe while paused.
// The forwarder never drops anything on its own; only a sink decides that a
// record is undeliverable (poison, oversize) and says so in its Result.
//
// Outcome classes are carried by typed errors (ThrottledError, PausedError,
// ErrClosed; any other error is transient) and mapped by Classify, the one
// place that decides how the forwarder reacts.
package relay
