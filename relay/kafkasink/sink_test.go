package kafkasink

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

const topic = "network_events"

// 50,000 envelopes through spool, forwarder and sink to a three-broker
// cluster, read back by a consumer: every one there, bytes unchanged, keyed
// by id, and the accounting identity holds with nothing pending.
func TestEndToEnd50k(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(3), kfake.SeedTopics(6, topic))
	h := newHarness(t, Options{Brokers: c.ListenAddrs()}, 2000, time.Minute)

	const n = 50_000
	start := time.Now()
	h.add(n, 300)
	h.waitSettled(45 * time.Second) // about 2 s alone; the CI machine is shared
	elapsed := time.Since(start)

	snap, st := h.checkIdentity()
	if st.Received != n || snap.Delivered != n || snap.DroppedTotal() != 0 || st.Pending != 0 {
		t.Fatalf("received %d delivered %d dropped %d pending %d; want %d delivered, none dropped or pending",
			st.Received, snap.Delivered, snap.DroppedTotal(), st.Pending, n)
	}
	h.stop()
	recs := consumeAll(t, c.ListenAddrs(), topic)
	dups := verifyTopic(t, recs, h.sent, nil)
	if uint64(dups) != h.sink.Duplicates() {
		t.Fatalf("topic holds %d duplicates, sink reported %d", dups, h.sink.Duplicates())
	}
	t.Logf("%d envelopes in %s (%.0f/s), %d records read back, requests %v, duplicates %d",
		n, elapsed, n/elapsed.Seconds(), len(recs), snap.Requests, dups)
}

// Leaders move twice and the whole cluster stops and restarts (state kept on
// disk, same ports) while envelopes flow: nothing is lost, and whatever was
// written twice is reported.
func TestLeadersMovedAndBrokersRestarted(t *testing.T) {
	dir := t.TempDir()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(6, topic), kfake.DataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	addrs := c.ListenAddrs()
	var ports []int
	for _, a := range addrs {
		_, p, _ := net.SplitHostPort(a)
		n, _ := strconv.Atoi(p)
		ports = append(ports, n)
	}
	t.Cleanup(func() { c.Close() }) // c is replaced by the restart below

	h := newHarness(t, Options{Brokers: addrs, ProduceTimeout: time.Second}, 500, time.Minute)
	const chunk = 5000
	h.add(chunk, 300)
	c.ShufflePartitionLeaders()
	h.add(chunk, 300)
	for p := range int32(6) {
		if err := c.MoveTopicPartition(topic, p, p%3); err != nil {
			t.Fatal(err)
		}
	}
	h.add(chunk, 300)
	waitFor(t, 20*time.Second, "some records delivered before the restart", func() bool {
		return h.stat().Acked >= chunk
	})

	c.Close() // every broker stops; the forwarder keeps retrying
	h.add(chunk, 300)
	waitFor(t, 10*time.Second, "a failed send while the brokers are down", func() bool {
		r := h.stats.Snapshot().Requests
		return r["timeout"]+r["error"] > 0
	})
	restarted, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.Ports(ports...), kfake.DataDir(dir))
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	c = restarted
	h.add(chunk, 300)
	h.waitSettled(30 * time.Second)

	snap, st := h.checkIdentity()
	if st.Received != 5*chunk || snap.Delivered != 5*chunk {
		t.Fatalf("received %d delivered %d; want %d each", st.Received, snap.Delivered, 5*chunk)
	}
	h.stop()
	recs := consumeAll(t, addrs, topic)
	dups := verifyTopic(t, recs, h.sent, nil)
	if uint64(dups) < h.sink.Duplicates() {
		t.Fatalf("topic holds %d duplicates, fewer than the %d the sink reported", dups, h.sink.Duplicates())
	}
	t.Logf("%d envelopes, %d records in the topic: %d duplicates (%d reported by the sink); requests %v, retries %v",
		len(h.sent), len(recs), dups, h.sink.Duplicates(), snap.Requests, snap.Retries)
}

// One partition fails a few produce requests with a non-retriable error
// while the others succeed: Send settles the prefix before the first failed
// record, the acknowledged records after it are produced again, and the
// duplicates counted are exactly the extra copies in the topic.
func TestPartialFailureSettlesPrefixAndCountsDuplicates(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(3), kfake.SeedTopics(3, topic))
	fault := c.Fault(kfake.Fault{
		Keys:       []kmsg.Key{kmsg.Produce},
		Topic:      topic,
		Partitions: []int32{1},
		Err:        kerr.UnknownServerError, // not retried by the client: the record fails
		Count:      3,
	})
	h := newHarness(t, Options{Brokers: c.ListenAddrs()}, 500, time.Minute)
	h.add(5000, 300)
	h.waitSettled(20 * time.Second)
	if fault.Hits() != 3 {
		t.Fatalf("fault hit %d times, want 3", fault.Hits())
	}
	snap, _ := h.checkIdentity()
	if snap.Delivered != 5000 || snap.Retries["transient"] == 0 {
		t.Fatalf("delivered %d retries %v; want 5000 delivered after transient retries", snap.Delivered, snap.Retries)
	}
	h.stop()
	recs := consumeAll(t, c.ListenAddrs(), topic)
	dups := verifyTopic(t, recs, h.sent, nil)
	if dups == 0 || uint64(dups) != h.sink.Duplicates() {
		t.Fatalf("topic holds %d duplicates, sink reported %d; want the same, above 0", dups, h.sink.Duplicates())
	}
	t.Logf("duplicates %d, requests %v", dups, snap.Requests)
}

// incompressible returns a JSON-safe string of n random hex digits, so the
// broker cannot take an oversized envelope by compressing it.
func incompressible(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

func oversizeEnvelope(i, size int) (string, []byte) {
	id := fmt.Sprintf("big-%d", i)
	return id, []byte(`{"id":"` + id + `","type":"blob","timestamp":"1","gateway":"","data":{"x":"` + incompressible(size) + `"}}`)
}

// A topic with max.message.bytes 4096: the sink learns the limit at start,
// drops the three larger envelopes as oversize, delivers the rest.
func TestOversizeDroppedRestDelivered(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1))
	if err := c.CreateTopic(topic, 3, map[string]string{"max.message.bytes": "4096"}); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{Brokers: c.ListenAddrs()}, 500, time.Minute)
	if got := h.sink.batchMax.Load(); got != 4096 {
		t.Fatalf("learned batch limit %d, want the topic's 4096", got)
	}
	dropped := map[string]bool{}
	for i := range 3 {
		h.add(700, 300)
		id, b := oversizeEnvelope(i, 6000)
		h.appendRaw(id, b)
		dropped[id] = true
	}
	h.add(100, 300)
	h.waitSettled(20 * time.Second)
	snap, _ := h.checkIdentity()
	if snap.Dropped[relay.DropOversize] != 3 || snap.Delivered != 2200 {
		t.Fatalf("dropped %v delivered %d; want 3 oversize, 2200 delivered", snap.Dropped, snap.Delivered)
	}
	if snap.Requests["too_large"] == 0 {
		t.Fatalf("requests %v: no too_large counted", snap.Requests)
	}
	h.stop()
	verifyTopic(t, consumeAll(t, c.ListenAddrs(), topic), h.sent, dropped)
}

// The topic's limit shrinks after start, so the client still builds batches
// for the old one and the broker rejects whole batches with
// MESSAGE_TOO_LARGE. Only envelopes too large on their own are dropped; the
// others are delivered, and the sink learns the new limit.
func TestOversizeBrokerRejectsBatchAfterLimitShrinks(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(2, topic))
	h := newHarness(t, Options{Brokers: c.ListenAddrs()}, 200, time.Minute)
	h.add(200, 300)
	h.waitSettled(10 * time.Second)

	adm := kadm.NewClient(mustClient(t, c.ListenAddrs()))
	resp, err := adm.AlterTopicConfigs(context.Background(), []kadm.AlterConfig{{Name: "max.message.bytes", Value: kmsg.StringPtr("4096")}}, topic)
	if err == nil {
		var r kadm.AlterConfigsResponse
		if r, err = resp.On(topic, nil); err == nil {
			err = r.Err
		}
	}
	if err != nil {
		t.Fatalf("alter topic config: %v", err)
	}
	dropped := map[string]bool{}
	id, b := oversizeEnvelope(0, 6000)
	h.add(100, 300)
	h.appendRaw(id, b)
	dropped[id] = true
	h.add(1000, 300)
	h.waitSettled(20 * time.Second)

	snap, _ := h.checkIdentity()
	if snap.Dropped[relay.DropOversize] != 1 || snap.Delivered != 1300 {
		t.Fatalf("dropped %v delivered %d; want 1 oversize and 1300 delivered", snap.Dropped, snap.Delivered)
	}
	alone := h.sink.alone.Load()
	if h.sink.batchMax.Load() != 4096 {
		// The Send that met the refusal reads the limit again; on a busy
		// machine that read can fail (a connection the broker dropped), and
		// the next Send makes it.
		h.add(1, 300)
		h.waitSettled(20 * time.Second)
	}
	if got := h.sink.batchMax.Load(); got != 4096 {
		t.Fatalf("batch limit %d after the shrink, want 4096", got)
	}
	if alone == 0 || alone > 300 {
		t.Fatalf("%d records produced alone; want some (the rejected batch) but not all 1100", alone)
	}
	h.stop()
	verifyTopic(t, consumeAll(t, c.ListenAddrs(), topic), h.sent, dropped)
	t.Logf("records produced alone after MESSAGE_TOO_LARGE: %d", alone)
}

// A topic check whose config read fails (here the broker answers a
// DescribeConfigs with a topic error) keeps the learned limit: falling back
// to the client default would let the client build batches the brokers
// refuse, one refused batch per Send. The check fails and is made again.
func TestLearnedLimitSurvivesFailedConfigRead(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1))
	if err := c.CreateTopic(topic, 1, map[string]string{"max.message.bytes": "4096"}); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{Brokers: c.ListenAddrs()}, 100, time.Minute)
	if got := h.sink.batchMax.Load(); got != 4096 {
		t.Fatalf("learned batch limit %d, want 4096", got)
	}
	var fail atomic.Bool
	fail.Store(true)
	c.ControlKey(int16(kmsg.DescribeConfigs), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !fail.Load() {
			return nil, nil, false
		}
		r := req.(*kmsg.DescribeConfigsRequest)
		resp := r.ResponseKind().(*kmsg.DescribeConfigsResponse)
		for _, rr := range r.Resources {
			res := kmsg.NewDescribeConfigsResponseResource()
			res.ResourceType, res.ResourceName = rr.ResourceType, rr.ResourceName
			res.ErrorCode = kerr.KafkaStorageError.Code
			resp.Resources = append(resp.Resources, res)
		}
		return resp, nil, true
	})
	_, adm, err := h.sink.client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.sink.verify(context.Background(), adm); err == nil {
		t.Fatal("topic check passed although its config read failed")
	}
	if got := h.sink.batchMax.Load(); got != 4096 {
		t.Fatalf("batch limit %d after a failed config read, want the learned 4096", got)
	}
	fail.Store(false)
	if _, err := h.sink.verify(context.Background(), adm); err != nil {
		t.Fatalf("topic check after the broker recovered: %v", err)
	}
	if got := h.sink.batchMax.Load(); got != 4096 {
		t.Fatalf("batch limit %d, want 4096", got)
	}
}

func mustClient(t testing.TB, brokers []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// rejectPlainPassword makes the cluster answer a PLAIN authentication with
// a wrong password the way Kafka does, SASL_AUTHENTICATION_FAILED in the
// response; kfake itself just closes the connection.
func rejectPlainPassword(c *kfake.Cluster, good string) {
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.SASLAuthenticateRequest)
		if parts := bytes.SplitN(r.SASLAuthBytes, []byte{0}, 3); len(parts) == 3 && string(parts[2]) != good {
			resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
			resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
			resp.ErrorMessage = kmsg.StringPtr("Authentication failed: Invalid username or password")
			return resp, nil, true
		}
		return nil, nil, false
	})
}

// A wrong password pauses the sink as unauthorized with nothing lost; after
// the password file is fixed, Reload ends the pause at once (the probe
// interval is an hour) and everything spooled is delivered. The periodic
// probe's part is TestPeriodicProbeReadsFixedPasswordVirtualTime.
func TestAuthFailurePausesUntilReload(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(3, topic),
		kfake.EnableSASL(), kfake.Superuser(SASLPlain, "relay", "s3cret"))
	rejectPlainPassword(c, "s3cret")
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{
		Brokers: c.ListenAddrs(), SASLMechanism: SASLPlain, SASLUser: "relay", SASLPasswordFile: pwFile,
	}, 500, time.Hour)
	h.add(1000, 300)
	waitFor(t, 10*time.Second, "sink paused", func() bool { return h.stats.Snapshot().Paused == "unauthorized" })
	snap, st := h.checkIdentity()
	if snap.Delivered != 0 || st.Pending != 1000 || snap.Requests["auth"] == 0 {
		t.Fatalf("while paused: delivered %d pending %d requests %v; want 0, 1000, auth counted", snap.Delivered, st.Pending, snap.Requests)
	}

	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.sink.Reload(); err != nil {
		t.Fatal(err)
	}
	h.add(500, 300)
	h.waitSettled(10 * time.Second)
	snap, _ = h.checkIdentity()
	if snap.Delivered != 1500 || snap.Paused != "" {
		t.Fatalf("after the fix: delivered %d paused %q; want 1500 and running", snap.Delivered, snap.Paused)
	}
	h.stop()
	consumer := kgo.SASL(plain.Auth{User: "relay", Pass: "s3cret"}.AsMechanism())
	verifyTopic(t, consumeAll(t, c.ListenAddrs(), topic, consumer), h.sent, nil)
}

// Each SASL mechanism authenticates and delivers.
func TestSASLMechanisms(t *testing.T) {
	for _, mech := range []string{SASLPlain, SASLScramSHA256, SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			c := newCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(3, topic),
				kfake.EnableSASL(), kfake.Superuser(mech, "relay", "s3cret"))
			h := newHarness(t, Options{
				Brokers: c.ListenAddrs(), SASLMechanism: mech, SASLUser: "relay", SASLPassword: "s3cret",
			}, 500, time.Hour)
			h.add(300, 300)
			h.waitSettled(10 * time.Second)
			h.stop()
			var m sasl.Mechanism
			switch mech {
			case SASLPlain:
				m = plain.Auth{User: "relay", Pass: "s3cret"}.AsMechanism()
			case SASLScramSHA256:
				m = scram.Auth{User: "relay", Pass: "s3cret"}.AsSha256Mechanism()
			default:
				m = scram.Auth{User: "relay", Pass: "s3cret"}.AsSha512Mechanism()
			}
			verifyTopic(t, consumeAll(t, c.ListenAddrs(), topic, kgo.SASL(m)), h.sent, nil)
		})
	}
}

// The brokers refuse writes to the topic (TOPIC_AUTHORIZATION_FAILED) after
// the sink has started: it pauses as unauthorized, probes, and delivers
// everything once the ACL is fixed.
func TestTopicAuthorizationFailurePauses(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	h := newHarness(t, Options{Brokers: c.ListenAddrs()}, 500, 50*time.Millisecond)
	deny := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.TopicAuthorizationFailed, Count: -1})
	h.add(1000, 300)
	waitFor(t, 10*time.Second, "sink paused", func() bool { return h.stats.Snapshot().Paused == "unauthorized" })
	waitFor(t, 10*time.Second, "a probe while paused", func() bool { return h.stats.Snapshot().Retries["paused"] >= 2 })
	if st := h.stat(); st.Pending != 1000 {
		t.Fatalf("pending %d while denied, want 1000", st.Pending)
	}
	deny.Remove()
	h.waitSettled(10 * time.Second)
	snap, _ := h.checkIdentity()
	if snap.Delivered != 1000 || snap.Paused != "" {
		t.Fatalf("delivered %d paused %q; want 1000 and running", snap.Delivered, snap.Paused)
	}
	h.stop()
	verifyTopic(t, consumeAll(t, c.ListenAddrs(), topic), h.sent, nil)
}

// A missing topic is an error at start that names it; with AutoCreateTopic
// the sink creates it instead.
func TestTopicMissing(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(1))
	_, err := New(context.Background(), Options{Brokers: c.ListenAddrs(), Topic: "gpu_events"})
	if !errors.Is(err, ErrTopicMissing) || !strings.Contains(err.Error(), `"gpu_events"`) || !strings.Contains(err.Error(), "auto-creation") {
		t.Fatalf("New: %v; want ErrTopicMissing naming the topic and auto-creation", err)
	}

	h := newHarness(t, Options{Brokers: c.ListenAddrs(), Topic: "gpu_events", AutoCreateTopic: true}, 100, time.Minute)
	if info := c.TopicInfo("gpu_events"); info == nil {
		t.Fatal("topic not created")
	}
	h.add(100, 300)
	h.waitSettled(10 * time.Second)
	h.stop()
	verifyTopic(t, consumeAll(t, c.ListenAddrs(), "gpu_events"), h.sent, nil)
}

// Brokers that cannot be reached at start do not fail New (a sidecar may
// start first); Send then fails transiently within its timeout.
func TestUnreachableAtStartIsTransient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused

	stats := relay.NewStats()
	s, err := newSink(context.Background(), Options{Brokers: []string{addr}, ProduceTimeout: 300 * time.Millisecond, Stats: stats}, testClientOpts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer s.Close()
	_, b := testEnvelope(1, 300)
	start := time.Now()
	res := s.Send(context.Background(), []spool.Record{{Seq: 1, Data: b}})
	if class, _ := relay.Classify(res.Err); class != relay.ClassTransient || res.Settled != 0 {
		t.Fatalf("Send: settled %d err %v (%s); want 0 and a transient error", res.Settled, res.Err, class)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Send took %s with a 300ms timeout", d)
	}
	if r := stats.Snapshot().Requests; r["timeout"]+r["error"] != 1 {
		t.Fatalf("requests %v; want one timeout or error", r)
	}
}

// Reload replaces the client every 20 ms while 10,000 envelopes flow: a Send
// caught on a closed client fails transiently and the retry delivers;
// nothing is lost.
func TestReloadWhileSending(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(3), kfake.SeedTopics(6, topic))
	h := newHarness(t, Options{Brokers: c.ListenAddrs()}, 500, time.Minute)
	stop := make(chan struct{})
	reloaded := make(chan int)
	go func() {
		n := 0
		tick := time.NewTicker(20 * time.Millisecond)
		defer func() { tick.Stop(); reloaded <- n }()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := h.sink.Reload(); err != nil {
				t.Error(err)
				return
			}
			n++
		}
	}()
	h.add(10_000, 300)
	h.waitSettled(20 * time.Second)
	close(stop)
	n := <-reloaded
	snap, _ := h.checkIdentity()
	if snap.Delivered != 10_000 {
		t.Fatalf("delivered %d, want 10000", snap.Delivered)
	}
	h.stop()
	dups := verifyTopic(t, consumeAll(t, c.ListenAddrs(), topic), h.sent, nil)
	if uint64(dups) < h.sink.Duplicates() {
		t.Fatalf("topic holds %d duplicates, fewer than the %d reported", dups, h.sink.Duplicates())
	}
	t.Logf("%d reloads; requests %v; duplicates %d (%d reported)", n, snap.Requests, dups, h.sink.Duplicates())
}
