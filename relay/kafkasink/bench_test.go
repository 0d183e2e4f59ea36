package kafkasink

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/livepeer/edgerelay/envelope"
)

// BenchmarkEndToEnd measures events/s from a memory spool through the
// forwarder and the sink to a three-broker kfake cluster (acks=all,
// idempotent), against a baseline in the same run: a bare franz-go client
// producing the same keyed ~300-byte records with ProduceSync in batches of
// the same size. Reported: both rates and sink/baseline.
func BenchmarkEndToEnd(b *testing.B) {
	const pool = 10_000
	envs := make([][]byte, pool)
	keys := make([][]byte, pool)
	for i := range envs {
		_, envs[i] = testEnvelope(i, 300)
		keys[i], _ = envelope.ID(envs[i])
	}
	for _, batch := range []int{500, 2000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			c := newCluster(b, kfake.NumBrokers(3), kfake.SeedTopics(6, topic))
			n := max(b.N, batch)

			// Baseline: the client alone.
			cl := mustClient(b, c.ListenAddrs(), kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(DefaultLinger))
			recs := make([]*kgo.Record, 0, batch)
			start := time.Now()
			for i := 0; i < n; {
				recs = recs[:0]
				for ; len(recs) < batch && i < n; i++ {
					recs = append(recs, &kgo.Record{Key: keys[i%pool], Value: envs[i%pool]})
				}
				if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
					b.Fatal(err)
				}
			}
			base := float64(n) / time.Since(start).Seconds()
			cl.Close()

			// The sink behind its forwarder.
			h := newHarness(b, Options{Brokers: c.ListenAddrs()}, batch, time.Minute)
			b.ResetTimer()
			start = time.Now()
			for i := 0; i < n; i += batch {
				chunk := make([][]byte, 0, batch)
				for j := i; j < min(i+batch, n); j++ {
					chunk = append(chunk, envs[j%pool])
				}
				if err := h.mem.Append(chunk); err != nil {
					b.Fatal(err)
				}
			}
			waitFor(b, 5*time.Minute, "all delivered", func() bool { return h.stat().Pending == 0 })
			sink := float64(n) / time.Since(start).Seconds()
			b.StopTimer()
			h.stop()

			b.ReportMetric(base, "baseline_events/s")
			b.ReportMetric(sink, "sink_events/s")
			b.ReportMetric(sink/base, "sink/baseline")
			b.ReportMetric(0, "ns/op")
		})
	}
}
