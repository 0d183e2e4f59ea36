// Package agent is one running edgerelay: its configuration (Load, the one
// settings table), its lifecycle (New, Run, Abort, Reload) and the wiring of
// its parts, each in a package of its own:
//
//	sources ──► stamp ─────► pipeline ──────────────► spool ──► relay.Group
//	(sampler,   (envelope)   (ring, then the one       (bbolt,   (one relay.Forwarder
//	 stormlog                 spool writer: group       or        per sink: HTTP, trickle,
//	 tail,                    commit, then answer)      memory)   Kafka, stdout, and the
//	 trickle        ▲                │ after commit               session channels)
//	 subscribers,   │                ▼
//	 agent_status)  ingest     session.Registry (session channels' logs)
//	                (the local API: /v1/events, /v1/telemetry, sessions, ...)
//
// Sources never block: the ring drops the oldest entry when full. The spool
// writer is the only goroutine that appends to the spool; the local API
// answers 202 only after the group holding its events is committed. Each
// sink reads its own cursor and acknowledges what it settled. Report is the
// one view of the counters, served by /v1/stats, /metrics and agent_status
// alike, so the identity received = delivered + dropped + pending holds in
// all three.
//
// Where data can be lost, each counted in edgerelay_events_dropped_total:
// the ring when producers outrun the writer (ring_full), the spool over its
// cap (spool_full), a sink refusing an event (rejected, oversize), a trickle
// channel that ended (channel_closed). With the spool off or its disk
// failing, accepted events are held in memory and a crash loses them; the
// answers then say "durable": false.
//
// The start and stop orders are written on Agent.start and Agent.shutdown;
// ARCHITECTURE.md at the repository's root has the package map and who owns
// which goroutine.
package agent
