// Package agent is one running edgerelay: its configuration (Load), its
// lifecycle (New, Run, Abort, Reload) and the pipeline it wires together.
//
//	sources ──► stamp ──► Ring ──► spool writer ──► spool ──► one forwarder per sink
//	(ingest API,  (once)   (drop    (group commit,    (bbolt,    (relay.Forwarder or
//	 sampler,               oldest)  then answer)      or memory)  trickle publisher)
//	 stormlog tail,
//	 trickle subscriber,
//	 agent_status)
//
// Sources never block: Ring.Push returns at once and drops the oldest entry
// when full. The spool writer is the only goroutine that appends to the
// spool; the ingest API answers 202 only after the group holding its events
// is committed. Each sink reads its own cursor and acknowledges what it
// settled. Report is the one view of the counters, served by /v1/stats,
// /metrics and agent_status alike, so the identity
// received = delivered + dropped + pending holds in all three.
//
// Where data can be lost, each counted in edgerelay_events_dropped_total:
// the ring when producers outrun the writer (ring_full), the spool over its
// cap (spool_full), a sink refusing an event (rejected, oversize), a trickle
// channel that ended (channel_closed). With the spool off or its disk
// failing, accepted events are held in memory and a crash loses them; the
// answers then say "durable": false.
//
// Agent's doc comment gives the shutdown order.
package agent
