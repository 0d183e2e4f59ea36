// Package envelope is the agent's one definition of the envelope
// (spec/envelope.md) and of the trickle frame that carries it: stamping
// (Stamper, with an analytics pipeline's Mapping applied as it writes, never
// by reading an envelope again), checking a prebuilt envelope (Check),
// reading its id (ID), wrapping and parsing frames (WrapTelemetry,
// ParseFrame) and the relay annotation (AnnotateRelay), and the input
// hygiene every item from outside passes first (Validate).
//
// Envelopes are bytes from the moment they are stamped: nothing downstream
// re-encodes them. Everything here reads them with one small byte scanner
// (scan.go) that finds members by offset, so checks cost no allocations and
// prebuilt envelopes are forwarded byte for byte.
//
// It imports nothing of the project: the agent, the sinks and the trickle
// client all speak it.
package envelope
