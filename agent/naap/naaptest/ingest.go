// Package naaptest models the raw ingest of the Livepeer analytics pipeline
// (NAAP) as spec/naap.md describes it, for tests: which Kafka records it
// takes into accepted_raw_events, which it puts in ignored_raw_events and
// why, which it drops, and the dimensions its APIs join on.
package naaptest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Families the raw ingest accepts (spec/naap.md, "Accepted families").
var Families = []string{
	"stream_trace", "ai_stream_status", "ai_stream_events", "stream_ingest_metrics",
	"network_capabilities", "discovery_results", "create_new_payment",
}

// The stream_trace subtypes the ingest keeps: the gateway and runner
// lifecycle edges.
var traceSubtypes = []string{
	"gateway_receive_stream_request", "gateway_ingest_stream_closed",
	"gateway_send_first_ingest_segment", "gateway_receive_first_processed_segment",
	"gateway_receive_few_processed_segments", "gateway_receive_first_data_segment",
	"gateway_no_orchestrators_available", "orchestrator_swap",
	"runner_receive_first_ingest_segment", "runner_send_first_processed_segment",
}

// Scope client stream_trace subtypes ignored as client noise.
var scopeNoise = []string{
	"stream_heartbeat", "pipeline_load_start", "pipeline_loaded", "session_created",
	"stream_started", "playback_ready", "session_closed", "stream_stopped",
	"pipeline_unloaded", "websocket_connected", "websocket_disconnected", "error",
}

// Outcomes of Ingest.Take besides "" (accepted into accepted_raw_events).
// The first five are the ignore reasons of ignored_raw_events; the others
// are records the pipeline does not keep at all or quarantines.
const (
	UnsupportedFamily     = "unsupported_event_family"
	TraceNonCoreApp       = "ignored_stream_trace_non_core_app"
	TraceScopeNoise       = "ignored_stream_trace_scope_client_noise"
	TraceUnsupportedType  = "unsupported_stream_trace_type"
	Malformed             = "malformed_or_invalid_payload"
	EmptyID               = "empty_id"             // not ingested at all
	BadTimestamp          = "timestamp_not_ms"     // not milliseconds since the epoch
	BadVersion            = "unsupported_version"  // version / data.version not "1" / "v1"
	TooLarge              = "row_over_1000000"     // a row over 1,000,000 bytes
	Duplicate             = "duplicate_within_24h" // the same id within 24 h
	MaxRowBytes           = 1_000_000
	duplicateWindow       = 24 * time.Hour
	minMillis, maxMillis  = 1e11, 1e13 // 1973 .. 2286 in milliseconds; seconds, microseconds and nanoseconds fall outside
	orchestratorAddrRegex = `^0x[0-9a-f]{40}$`
)

var (
	addrRE = regexp.MustCompile(orchestratorAddrRegex)
	gpuRE  = regexp.MustCompile(`^GPU-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// Ingest is the raw ingest of one topic: it remembers ids for the duplicate
// rule. Not safe for concurrent use.
type Ingest struct {
	seen map[string]int64 // id -> timestamp (ms) of its first record

	Accepted map[string]int // by family/subtype
	Refused  map[string]int // by outcome
}

// NewIngest returns an empty ingest.
func NewIngest() *Ingest {
	return &Ingest{seen: map[string]int64{}, Accepted: map[string]int{}, Refused: map[string]int{}}
}

// Record is one accepted record as the pipeline stores it.
type Record struct {
	ID        string
	Family    string
	Subtype   string // data.type for stream_trace, ai_stream_status, ai_stream_events
	Timestamp time.Time
	Data      map[string]any
}

// Take classifies one Kafka record value as the pipeline does: outcome ""
// means accepted (rec is then set), anything else names why not.
func (in *Ingest) Take(value []byte) (rec Record, outcome string) {
	rec, outcome = in.classify(value)
	if outcome != "" {
		in.Refused[outcome]++
		return Record{}, outcome
	}
	in.Accepted[rec.Family+"/"+rec.Subtype]++
	return rec, ""
}

func (in *Ingest) classify(value []byte) (Record, string) {
	if len(value) > MaxRowBytes {
		return Record{}, TooLarge
	}
	var root map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&root); err != nil || root == nil {
		return Record{}, Malformed
	}
	// JSONEachRow into (id String, type String, timestamp String, gateway
	// String, data String): a missing column takes its default, "".
	str := func(k string) (string, bool) {
		raw, ok := root[k]
		if !ok {
			return "", true
		}
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err == nil
	}
	id, ok1 := str("id")
	typ, ok2 := str("type")
	ts, ok3 := str("timestamp")
	_, ok4 := str("gateway")
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return Record{}, Malformed
	}
	if id == "" {
		return Record{}, EmptyID
	}
	rawData, ok := root["data"]
	if !ok {
		return Record{}, Malformed
	}
	var data map[string]any
	ddec := json.NewDecoder(bytes.NewReader(rawData))
	ddec.UseNumber()
	if err := ddec.Decode(&data); err != nil || data == nil {
		return Record{}, Malformed
	}
	subtype, _ := data["type"].(string)
	switch {
	case !contains(Families, typ):
		return Record{}, UnsupportedFamily
	case typ == "stream_trace" && strings.HasPrefix(strings.ToLower(subtype), "app_"):
		return Record{}, TraceNonCoreApp
	case typ == "stream_trace" && strings.EqualFold(fmt.Sprint(data["client_source"]), "scope") && contains(scopeNoise, subtype):
		return Record{}, TraceScopeNoise
	case typ == "stream_trace" && !contains(traceSubtypes, subtype):
		return Record{}, TraceUnsupportedType
	case typ == "stream_trace" && (str2(data, "stream_id") == "" || str2(data, "request_id") == ""):
		return Record{}, Malformed
	}
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || ms < minMillis || ms >= maxMillis {
		return Record{}, BadTimestamp
	}
	for _, v := range []any{jsonValue(root["version"]), data["version"]} {
		if v != nil && v != "1" && v != "v1" {
			return Record{}, BadVersion
		}
	}
	if first, ok := in.seen[id]; ok && absDuration(ms-first) < duplicateWindow.Milliseconds() {
		return Record{}, Duplicate
	}
	in.seen[id] = ms
	if typ != "stream_trace" && typ != "ai_stream_status" && typ != "ai_stream_events" {
		subtype = ""
	}
	return Record{ID: id, Family: typ, Subtype: subtype, Timestamp: time.UnixMilli(ms).UTC(), Data: data}, ""
}

// Dimensions checks the dimensions the pipeline's APIs join on in an
// accepted record's data (spec/naap.md, "Dimensions the APIs join on"):
// every event has a lower-case orchestrator_address, orchestrator_info
// {address, url} with the same address, and a region; an event of a stream
// session also has stream_id, request_id, pipeline and model_id; a GPU's
// event has gpu_id as NVML names it. It returns every problem found.
func Dimensions(data map[string]any, session, gpu bool) []string {
	var probs []string
	addr := str2(data, "orchestrator_address")
	if !addrRE.MatchString(addr) {
		probs = append(probs, fmt.Sprintf("orchestrator_address %q: not lower-case 0x hex of 40 digits", addr))
	}
	info, _ := data["orchestrator_info"].(map[string]any)
	switch {
	case info == nil:
		probs = append(probs, "orchestrator_info: missing")
	case str2(info, "address") != addr:
		probs = append(probs, fmt.Sprintf("orchestrator_info.address %q: not the event's orchestrator_address %q", str2(info, "address"), addr))
	case !strings.HasPrefix(str2(info, "url"), "https://") && !strings.HasPrefix(str2(info, "url"), "http://"):
		probs = append(probs, fmt.Sprintf("orchestrator_info.url %q: not the orchestrator's service URI", str2(info, "url")))
	}
	if str2(data, "region") == "" {
		probs = append(probs, "region: missing")
	}
	if session {
		for _, k := range []string{"stream_id", "request_id", "pipeline", "model_id"} {
			if str2(data, k) == "" {
				probs = append(probs, k+": missing on a session's event")
			}
		}
	}
	if gpu && !gpuRE.MatchString(str2(data, "gpu_id")) {
		probs = append(probs, fmt.Sprintf("gpu_id %q: not GPU-<uuid>", str2(data, "gpu_id")))
	}
	return probs
}

func str2(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func jsonValue(raw json.RawMessage) any {
	if raw == nil {
		return nil
	}
	var v any
	json.Unmarshal(raw, &v)
	return v
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func absDuration(ms int64) int64 {
	if ms < 0 {
		return -ms
	}
	return ms
}
