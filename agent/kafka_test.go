package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
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

// TestKafkaMissingTopicFailsAlone (issue 18): with the topic missing, the
// agent starts, serves its API and delivers to stdout and HTTP, while the
// Kafka sink is paused with reason misconfigured, keeping its events;
// creating the topic resumes it and delivers every held event.
func TestKafkaMissingTopicFailsAlone(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1)) // no topic
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()[0]
	metrics := &captureServer{envs: map[string]json.RawMessage{}}
	ms := httptest.NewServer(metrics)
	defer ms.Close()
	cfg := loadConfig(t, testEnv(t, map[string]string{
		"EDGERELAY_KAFKA_BROKERS": brokers, "EDGERELAY_STDOUT": "on",
		"EDGERELAY_HTTP_URL": ms.URL, "EDGERELAY_HTTP_API_KEY": "k", "EDGERELAY_HTTP_RATE": "0", "EDGERELAY_HTTP_LINGER": "0s",
	}))
	out := &syncBuffer{}
	a, err := New(cfg, Options{Stdout: out, newBackOff: fastBackOff})
	if err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, a, out)
	const n = 100
	postIDs(t, r, "m", 0, n)
	waitUntil(t, "stdout and HTTP to deliver while Kafka is paused", func() bool {
		rep := r.a.Report()
		k := rep.Sinks["kafka"]
		return k.Paused == "misconfigured" && k.Pending == n && rep.Sinks["http"].Delivered == n && rep.Sinks["stdout"].Delivered == n
	})
	if m := scrape(t, r); m[`edgerelay_sink_paused{reason="misconfigured",sink="kafka"}`] != 1 {
		t.Errorf("/metrics does not show the Kafka sink paused (misconfigured)")
	}
	if metrics.count() != n {
		t.Errorf("the metrics API got %d events", metrics.count())
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "network_events"); err != nil {
		t.Fatal(err)
	}
	postIDs(t, r, "m", n, n)
	waitUntil(t, "the Kafka sink to resume and deliver what it held, and the others the rest", func() bool {
		rep := r.a.Report()
		k := rep.Sinks["kafka"]
		return k.Paused == "" && k.Delivered == 2*n && k.Pending == 0 &&
			rep.Sinks["http"].Delivered == 2*n && rep.Sinks["stdout"].Delivered == 2*n
	})
	rep := r.a.Report()
	for _, name := range []string{"kafka", "http", "stdout"} {
		if s := rep.Sinks[name]; !s.Balanced || s.DroppedTotal != 0 || s.Delivered != 2*n {
			t.Errorf("%s: %+v", name, s)
		}
	}
	if m := scrape(t, r); m[`edgerelay_sink_paused{reason="misconfigured",sink="kafka"}`] != 0 {
		t.Errorf("/metrics still shows the Kafka sink paused")
	}
}

// TestKafkaUnreachableBrokerFailsAlone: brokers that do not answer hold up
// neither the agent's start nor its other sinks; the Kafka sink retries.
func TestKafkaUnreachableBrokerFailsAlone(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connections are refused
	cfg := loadConfig(t, testEnv(t, map[string]string{"EDGERELAY_KAFKA_BROKERS": addr, "EDGERELAY_STDOUT": "on"}))
	out := &syncBuffer{}
	a, err := New(cfg, Options{Stdout: out, newBackOff: fastBackOff})
	if err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, a, out)
	postIDs(t, r, "u", 0, 10)
	waitUntil(t, "stdout to deliver and Kafka to retry", func() bool {
		rep := r.a.Report()
		k := rep.Sinks["kafka"]
		return rep.Sinks["stdout"].Delivered == 10 && k.Pending == 10 && k.Retries["transient"] > 0
	})
}
