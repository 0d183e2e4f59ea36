package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKafkaSinkThroughAgent: events posted to the agent reach the topic,
// keyed by envelope id, with the stored bytes as values.
func TestKafkaSinkThroughAgent(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "network_events"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()[0]
	r := startAgent(t, testEnv(t, map[string]string{"EDGERELAY_KAFKA_BROKERS": brokers, "EDGERELAY_STDOUT": "off"}))
	const n = 2000
	for i := 0; i < n; i += 500 {
		postIDs(t, r, "k", i, 500)
	}
	waitUntil(t, "kafka delivery", func() bool { return r.a.Report().Sinks["kafka"].Delivered == n })

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics("network_events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := map[string]string{}
	for len(got) < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(rec *kgo.Record) { got[string(rec.Key)] = string(rec.Value) })
	}
	for i := range n {
		id := fmt.Sprintf("k%06d", i)
		want := fmt.Sprintf(`{"id":"%s","type":"o","timestamp":"1","data":{"pad":"%s"}}`, id, padding)
		if got[id] != want {
			t.Fatalf("record %s: %q", id, got[id])
		}
	}
	if s := r.a.Report().Sinks["kafka"]; !s.Balanced || s.Pending != 0 {
		t.Errorf("kafka sink: %+v", s)
	}
}
