// Package naap carries the agent's events in a shape the Livepeer analytics
// pipeline (NAAP) ingests (spec/naap.md): its raw ingest keeps only seven
// event families and puts every other one in ignored_raw_events as
// unsupported_event_family, so in NAAP mode an envelope of ours whose family
// is not one of them travels as ai_stream_events, with its own family as
// data.type (the pipeline records it as the event's subtype), and with the
// dimensions the pipeline joins on.
//
// The mapping is an envelope.Mapping (NewMapping) that the agent gives its
// stamper: the stamper applies it as it writes every envelope it stamps
// (its own sources, the {type, data} events and the allocator records of
// the local API, the stormlog tail), in both of its paths; no envelope is
// read again to be mapped. Every stamped envelope gets:
//
//   - type: an accepted family is kept; any other becomes ai_stream_events.
//   - data.type: the envelope's own family when data has none; an existing
//     data.type (a subtype the producer chose) is kept. (The stamper writes
//     it in every mode.)
//   - data.orchestrator_address: the event's own, else its session's, else
//     the node's (the stamper's identity rules), its ASCII letters
//     lower-cased (the pipeline joins on the lower-case hex address).
//   - data.orchestrator_info, when data has none: {address, url} as the
//     go-livepeer gateway writes it (hexutil.Encode of the address:
//     lower-case "0x…", and the orchestrator's service URI). The address is
//     the event's; the URL is the node's, so an event whose address is not
//     the node's gets {address} alone. Unknown members are omitted, and
//     there is none when neither is known.
//   - data.region: the node's, when absent (the stamper's identity rules).
//
// Every member of data is written in key order (json.Marshal's), the
// mapping's among them; id, timestamp, gateway and data's other values are
// what the stamper writes in every mode. The size limit applies to the
// mapped envelope.
//
// An event the agent stamps was born at this node: the stamper gives every
// one the node's identity where the event has none, and so does the
// mapping. There is no exception for an event whose data says
// relayed_via: envelopes another agent relays (trickle) are prebuilt and
// never stamped, so a relayed_via in a {type, data} event is one more
// member of its data.
//
// Envelopes a producer built (a runner's prebuilt envelopes, those another
// agent relays) are never mapped: the envelope contract forwards them
// verbatim, so they travel under the family their producer chose.
package naap

import (
	"strings"

	"github.com/livepeer/edgerelay/envelope"
)

// Family is the family the agent's other events travel under: the pipeline
// keeps it whatever its data.type.
const Family = "ai_stream_events"

// Families are the event families the pipeline's raw ingest accepts
// (spec/naap.md, "Accepted families").
var Families = []string{
	"stream_trace", "ai_stream_status", "ai_stream_events", "stream_ingest_metrics",
	"network_capabilities", "discovery_results", "create_new_payment",
}

// Accepted reports whether the pipeline's raw ingest accepts family.
func Accepted(family string) bool {
	for _, f := range Families {
		if f == family {
			return true
		}
	}
	return false
}

// Options are the node's dimensions. Empty values are unknown and not
// written.
type Options struct {
	// OrchestratorAddress is the orchestrator's Ethereum address. It
	// reaches events as the stamper's node identity
	// (envelope.StamperOptions.Node), where the agent's configuration puts
	// it too; the mapping lower-cases it.
	OrchestratorAddress string
	// OrchestratorURL is the orchestrator's service URI as gateways see it
	// (go-livepeer -serviceAddr: "https://host:port").
	OrchestratorURL string
	// Region is the node's region; like the address, it reaches events as
	// the stamper's node identity.
	Region string
}

// NewMapping returns the mapping of NAAP mode for the node's dimensions,
// for envelope.StamperOptions.Mapping.
func NewMapping(o Options) *envelope.Mapping {
	return &envelope.Mapping{
		Accepted:        Families,
		Family:          Family,
		OrchestratorURL: strings.TrimSpace(o.OrchestratorURL),
	}
}
