package envelope

import (
	"fmt"
	"testing"
)

// BenchmarkPrepare compares the stamping fast path with the general path
// (the baseline) on the same events, in the same run; and the fast path
// with the NAAP mapping (fast_mapped, the agent's default with the HTTP or
// Kafka sink) with the same node without it (fast_unmapped).
func BenchmarkPrepare(b *testing.B) {
	s := NewStamper(StamperOptions{Node: Identity{"host": "h", "node_id": "0123456789abcdef0123456789abcdef"}})
	node := Identity{"host": "h", "node_id": "0123456789abcdef0123456789abcdef", "region": "eu-west",
		"orchestrator_address": "0x9727b492c4af6c4a8caf4cc1ba6fbb332206d794"}
	unmapped := NewStamper(StamperOptions{Node: node})
	mapped := NewStamper(StamperOptions{Node: node, Mapping: &Mapping{
		Accepted: []string{"stream_trace", "ai_stream_status", "ai_stream_events", "stream_ingest_metrics",
			"network_capabilities", "discovery_results", "create_new_payment"},
		Family:          "ai_stream_events",
		OrchestratorURL: "https://orch.example.net:8935",
	}})
	var items [][]byte
	for i := range 500 {
		items = append(items, fmt.Appendf(nil, `{"type":"stream_metrics","data":{"stream_id":"stream-%06d","pipeline":"streamdiffusion","fps":%d.97,"latency_ms":%d.5,"frame":%d,"queue_depth":%d,"status":"ok"}}`,
			i%64, 20+i%10, 30+i%40, 100000+i, i%8))
	}
	for _, bc := range []struct {
		name string
		fn   func([]byte) error
	}{
		{"fast", func(raw []byte) error { _, err := s.Prepare(raw); return err }},
		{"general", func(raw []byte) error {
			ms, _ := members(raw, nil)
			_, err := s.prepareSlow(raw, ms)
			return err
		}},
		{"fast_unmapped", func(raw []byte) error { _, err := unmapped.Prepare(raw); return err }},
		{"fast_mapped", func(raw []byte) error { _, err := mapped.Prepare(raw); return err }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, raw := range items {
					if err := bc.fn(raw); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(items)), "ns/event")
		})
	}
}
