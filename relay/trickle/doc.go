// Package trickle speaks Livepeer's trickle protocol (spec/trickle.md) in
// both directions: a Publisher that writes spool records to an events
// channel, and a Subscriber that reads telemetry frames from one and relays
// their envelopes into the local pipeline.
//
// # Framing
//
// The channel's readers disagree on what a segment is (spec/trickle.md,
// "Readers, as they really behave"), so the publisher has two framings:
//
//   - FramingJSONL (default): many {"type":"telemetry","event":<envelope>}
//     lines per segment, gathered for up to SegmentInterval (1 s) or
//     SegmentMaxBytes (1 MiB). Line readers (the Scope client) read it, and
//     requests drop to about one per second.
//   - FramingGateway ("segment" is its old name): one JSON document per
//     segment in the go-livepeer gateway's {queue_event_type, event} shape
//     (envelope.AppendGatewayFrame), gathering the envelopes of a family
//     from each batch, paced at least Pace apart, because that reader keeps
//     only 5 segments, pauses 300 ms after any error and stops the stream
//     after more than 5 errors in a row.
//
// Keep-alives are real frames (KeepAliveEvent), never an empty segment, and
// no segment is larger than SegmentMaxBytes, frame included: MaxEventBytes
// tells the agent the largest event it may accept.
//
// The subscriber takes both framings, and also a segment holding one JSON
// document spread over several lines.
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
//   - The channel goes away (404, Lp-Trickle-Closed) with records unsent: a
//     Persistent publisher (the static channel) pauses and probes until it
//     is back, keeping them; a session's reports relay.ErrClosed and the
//     agent counts them (relay.DropChannelClosed).
//   - A server restart loses what it held and no reader had read yet. The
//     publisher learns the position again after any fault or new
//     connection and resets, so readers lose nothing after it.
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
