// Package ingest is the agent's local API, served on a unix socket and on
// loopback TCP: the mux, the bearer-token check, body splitting (a JSON
// object, an array, or JSON lines) and the handlers.
//
//	POST /v1/events                 envelopes (kept byte for byte) or {type, data} events (stamped)
//	POST /v1/telemetry              stormlog records, each an allocator_sample
//	POST /v1/allocator              a runner's torch.cuda.memory_stats() snapshot
//	GET  /v1/stream                 WebSocket form of /v1/events, answered in order
//	GET  /v1/tail                   WebSocket: live envelopes (TailHub)
//	POST /v1/sessions, DELETE /v1/sessions/{id}, POST /v1/sessions/{id}/frames
//	GET  /v1/stats, /metrics, /healthz, /readyz
//
// Every item is held to envelope.Validate before anything else; a request
// over a limit is refused whole with 413 naming the limit (Answer.Limit).
// An answer sent before the body was read whole is followed by a bounded
// lingering read (linger.go), so clients that write their whole body
// first read it.
//
// It needs only a submit function to hand envelopes to the pipeline (it
// waits on the returned waiter before answering 202), the stamper, the
// session registry and the telemetry registry; it owns the server's
// goroutines (Start to Shutdown).
package ingest
