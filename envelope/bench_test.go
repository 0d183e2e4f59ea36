package envelope

import (
	"fmt"
	"testing"
)

// BenchmarkPrepare compares the stamping fast path with the general path
// (the baseline) on the same events, in the same run.
func BenchmarkPrepare(b *testing.B) {
	s := NewStamper(StamperOptions{Node: Identity{"host": "h", "node_id": "0123456789abcdef0123456789abcdef"}})
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
