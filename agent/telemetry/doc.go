// Package telemetry speaks the stormlog GPU-memory telemetry record (schema v2
// and v3, spec/stormlog.md) for the agent's sources. Where the spec and
// stormlog's own module differ, the module wins (docs/STORMLOG.md): records
// are read as Python's json reads them (pyjson.go), and validation, legacy
// conversion, session ids and file reading are stormlog's, checked by a
// differential test against the module.
//
// It holds pure functions and small types the agent calls:
//
//   - DecodeRecords splits a request body or file into items (JSON array,
//     {"events":[…]}, a single record, or JSON lines).
//   - Validate checks one v2/v3 record as stormlog's validator does; Normalize
//     also upgrades v2 to v3, converts legacy records when allowed, and
//     resolves distributed identity. Integers stay exact (json.Number).
//   - DecodeSnapshot and Allocators turn a runner's torch.cuda.memory_stats()
//     push into v3 records and keep the latest allocator figures per GPU for
//     the GPU sampler.
//   - Tailer follows a stormlog sink directory and hands every complete line
//     to the agent exactly once across restarts.
//   - ValidateFiles backs `edgerelay validate`; SinkWriter writes a stormlog
//     sink directory for `edgerelay export`.
//
// Nothing here starts a goroutine except Tailer.Run, which runs in the
// caller's goroutine.
package telemetry
