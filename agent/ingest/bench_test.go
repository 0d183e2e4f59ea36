package ingest

import (
	"fmt"
	"testing"

	"github.com/livepeer/edgerelay/envelope"
)

// benchBody is one 500-event /v1/events request of {type, data} events.
func benchBody() []byte {
	body := []byte{'['}
	for i := range 500 {
		if i > 0 {
			body = append(body, ',')
		}
		body = fmt.Appendf(body, `{"type":"stream_metrics","data":{"stream_id":"stream-%06d","pipeline":"streamdiffusion","fps":%d.97,"latency_ms":%d.5,"frame":%d,"queue_depth":%d,"status":"ok"}}`,
			i%64, 20+i%10, 30+i%40, 100000+i, i%8)
	}
	return append(body, ']')
}

func BenchmarkSplitItems(b *testing.B) {
	body := benchBody()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := splitItems(body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/event")
}

// BenchmarkIngestItems is what a /v1/events body costs before the ring:
// splitting and checking it, then preparing each item (stamping).
func BenchmarkIngestItems(b *testing.B) {
	body := benchBody()
	s := &Server{Stamper: envelope.NewStamper(envelope.StamperOptions{Node: envelope.Identity{"host": "h", "node_id": "0123456789abcdef0123456789abcdef"}})}
	b.ReportAllocs()
	for b.Loop() {
		items, err := splitItems(body)
		if err != nil {
			b.Fatal(err)
		}
		for _, it := range items {
			if it.err != nil {
				b.Fatal(it.err)
			}
			if _, err := s.prepareEvent(it.raw); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/event")
}
