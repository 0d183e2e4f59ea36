package agent

import (
	"fmt"
	"io"
	"testing"
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

func benchAgent(b *testing.B) *Agent {
	cfg, err := Load(nil, mapEnv(map[string]string{"EDGERELAY_ENABLED": "true", "EDGERELAY_HOST": "h", "EDGERELAY_NODE_ID": "0123456789abcdef0123456789abcdef"}), io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	a, err := New(cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// BenchmarkPrepare compares the ingest fast path with the general path (the
// baseline) on the same events, in the same run.
func BenchmarkPrepare(b *testing.B) {
	a := benchAgent(b)
	items, _ := splitItems(benchBody())
	for _, bc := range []struct {
		name string
		fn   func([]byte) error
	}{
		{"fast", func(raw []byte) error { _, err := a.prepareEvent(raw); return err }},
		{"general", func(raw []byte) error { _, _, _, err := a.prepareSlow(raw); return err }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, it := range items {
					if err := bc.fn(it.raw); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/event")
		})
	}
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
