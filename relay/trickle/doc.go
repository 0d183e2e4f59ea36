// Package trickle speaks Livepeer's trickle protocol (spec/trickle.md) in
// both directions: a Publisher that writes spool records to an events
// channel, and a Subscriber that reads telemetry frames from one and relays
// their envelopes into the local pipeline.
//
// # Framing
//
// Every frame is one line: {"type":"telemetry","event":<envelope>} and '\n'
// (spec/envelope.md). The publisher cuts lines into segments in one of two
// ways, because the channel's two kinds of readers disagree:
//
//   - FramingSegment: one frame per segment. go-livepeer's gateway reads a
//     whole segment and parses it as one JSON document; only this framing
//     suits it. It costs one POST (and one GET per reader) per envelope.
//   - FramingJSONL (default): many lines per segment, gathered for up to
//     SegmentInterval (1 s) or SegmentMaxBytes (1 MiB). Line readers (the
//     Scope client, livepeer-python-gateway) read it, and requests drop to
//     about one per second. A gateway's whole-segment parser fails on it.
//
// The subscriber accepts both, and also a segment holding one JSON document
// spread over several lines.
//
// # Delivery
//
// The Publisher is a relay.Sink: the agent's one delivery loop
// (relay.Forwarder) reads batches and hands them to Send, which writes them
// as whole segments. Tune sets the forwarder's batch to one segment's worth,
// its linger to SegmentInterval (jsonl), and its Idle hook to the keep-alive.
// Backoff, Retry-After and stats are the forwarder's, as for every sink.
//
// A record is acknowledged only when the POST of its segment is answered
// 200. Where data can be lost or doubled:
//
//   - A segment that fails after some of its bytes left is DELETEd and its
//     records are sent again in the next seq: readers may see them twice
//     (the subscriber skips ids it saw recently; the analytics side
//     collapses equal id and timestamp).
//   - A completed seq is never POSTed again: the server would answer 200
//     and drop the data.
//   - Only the last 5 segments are kept: a reader more than 5 segments
//     behind gets a 470 and jumps to the live edge, losing what it skipped
//     (counted in SubscriberStats.Jumps).
//   - The channel ends (404, Lp-Trickle-Closed) with records unsent: Send
//     reports relay.ErrClosed and they stay in the spool for the agent to
//     count (relay.DropChannelClosed) or send elsewhere.
//
// # Shutdown order
//
// Publisher: the forwarder drains (partial segments go at once) until
// nothing is pending or the grace passes, then its context ends; a segment
// in flight at that moment is abandoned and its records stay in the spool.
// The next publisher on the channel starts with Lp-Trickle-Reset, which
// unblocks that segment's readers. DeleteChannel only for a channel the
// agent owns.
// Subscriber: cancel Run's context.
package trickle
