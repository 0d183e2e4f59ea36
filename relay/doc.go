// Package relay delivers envelopes from the spool to their destinations.
//
// Every destination is a Sink: the HTTP metrics API (httpsink), a trickle
// channel (trickle.Publisher), Kafka (kafkasink), stdout. One Forwarder per
// sink, the one delivery loop of the agent, reads batches from that sink's
// cursor in its Queue, hands them to Send, acknowledges what the sink
// settled, and waits as the outcome requires: backoff with jitter after a
// transient error (every wait at most MaxBackOff, jitter included), the
// peer's Retry-After exactly when throttled with one, a periodic
// probe while paused. The forwarder never drops anything on its own; only a
// sink decides that a record is undeliverable (poison, oversize) and says so
// in its Result. A sink that offers lanes (LaneSink) may have several
// batches in flight (Forwarder.Inflight): each is read after the last one
// sent, and they are acknowledged strictly in order.
//
// Outcome classes are carried by typed errors (ThrottledError, PausedError,
// ErrClosed; any other error is transient) and mapped by Classify, the one
// place that decides how the forwarder reacts.
//
// Stats counts a sink's outcomes and Account turns them, with the spool's
// accounting, into the SinkReport that /v1/stats, /metrics and agent_status
// show. No lock is held across I/O on that path.
//
// The HTTP-speaking sinks share one client constructor (NewHTTPClient),
// Retry-After parsing and URL redaction for logs (RedactURL, RedactError).
package relay
