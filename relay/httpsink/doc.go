// Package httpsink delivers envelopes to the HTTP metrics API
// (spec/metrics-api.md): POST <url> with a bearer key and a body
// {"app":…,"host":…,"events":[…]} built from the stored envelope bytes
// without decoding them.
//
// A Sink does one logical delivery attempt per Send; the waiting between
// attempts (linger, backoff, Retry-After, pause and probe) belongs to
// relay.Forwarder. Within one Send:
//
//   - the batch is cut, left to right, into requests of at most MaxEvents
//     events and the body limit: MaxBody, or less once the API refused a
//     body with 413 (bodyLimit: learned by bisection, probed upward every
//     ReprobeAfter); an event that alone would exceed MaxBody is dropped as
//     "oversize" without being sent;
//   - every request first takes a token from the rate budget (a token bucket
//     with burst 1), so the peer never sees more than RatePerMinute requests
//     in any rolling minute, plus one;
//   - a poison answer (400, 409, 415, 422) is bisected and a 413 is split,
//     depth first and left to right, so what is settled is always a prefix
//     of the batch. Only a single event that the peer refused on its own is
//     dropped; when both halves of a refused batch are accepted the peer was
//     flaky and nothing is dropped;
//   - a 2xx is a success only once its answer has been read whole; one that
//     breaks off (reset, timeout, short of its length, a cut chunked or
//     close-delimited body) is a transient failure and the batch goes again.
//     An answer whose "accepted" count is below the events sent settles the
//     request, the rest counted as DropNotAccepted;
//   - any other failure stops the Send and returns the prefix settled so far
//     with an error that relay.Classify maps (throttled, paused, transient).
//
// The waits between Sends are the forwarder's: a usable Retry-After
// exactly, whatever came before; otherwise exponential backoff with jitter,
// every wait at most relay.MaxBackOff.
//
// Where data can be lost: only the drops above, each counted by reason in
// relay.Stats and logged with the envelope id (for DropNotAccepted, the
// request's range). Everything else stays in the spool until the peer
// accepts it.
//
// The API key never appears in logs, errors or stats: it is sent only in the
// Authorization header, and any response text quoted in an error has it
// blanked out. The URL appears only as relay.RedactURL gives it (no user
// info, query or fragment), in errors from the transport too.
package httpsink
