package kafkasink

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// In virtual time: a broker that swallows every produce request makes Send
// return a transient "timeout" exactly at the default ProduceTimeout (10 s),
// without the abandon path; once the broker answers again, the retry
// delivers.
func TestProduceTimeoutVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pn := newPipeNet()
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic), kfake.ListenFn(pn.listen))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		stats := relay.NewStats()
		s, err := newSink(context.Background(), Options{Brokers: c.ListenAddrs(), Stats: stats}, kgo.Dialer(pn.dial))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()

		var swallow atomic.Bool
		swallow.Store(true)
		c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			return nil, nil, swallow.Load()
		})
		var recs []spool.Record
		for i := range 5 {
			_, b := testEnvelope(i, 300)
			recs = append(recs, spool.Record{Seq: uint64(i + 1), Data: b})
		}
		start := time.Now()
		res := s.Send(context.Background(), recs)
		if took := time.Since(start); took != DefaultProduceTimeout {
			t.Fatalf("Send returned after %s of virtual time, want exactly %s", took, DefaultProduceTimeout)
		}
		if class, _ := relay.Classify(res.Err); class != relay.ClassTransient || res.Settled != 0 {
			t.Fatalf("Send: settled %d, %v (%s); want 0 and transient", res.Settled, res.Err, class)
		}
		swallow.Store(false)
		if res := s.Send(context.Background(), recs); res.Err != nil || res.Settled != 5 {
			t.Fatalf("retry: settled %d err %v", res.Settled, res.Err)
		}
		if r := stats.Snapshot().Requests; r["timeout"] != 1 || r["ok"] != 1 {
			t.Fatalf("requests %v; want one timeout, one ok", r)
		}
	})
}

// In virtual time, with the forwarder's defaults: wrong credentials pause
// the sink; the password file is fixed without a Reload; nothing happens
// until the probe five minutes after the pause, which builds a client from
// the file and delivers everything.
func TestPeriodicProbeReadsFixedPasswordVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pn := newPipeNet()
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic), kfake.ListenFn(pn.listen),
			kfake.EnableSASL(), kfake.Superuser(SASLPlain, "relay", "s3cret"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rejectPlainPassword(c, "s3cret")
		pwFile := filepath.Join(t.TempDir(), "password")
		if err := os.WriteFile(pwFile, []byte("wrong"), 0o600); err != nil {
			t.Fatal(err)
		}

		mem := spool.NewMemory(0)
		defer mem.Close()
		if err := mem.AddSink(sinkName); err != nil {
			t.Fatal(err)
		}
		stats := relay.NewStats()
		s, err := newSink(context.Background(), Options{
			Brokers: c.ListenAddrs(), SASLMechanism: SASLPlain, SASLUser: "relay", SASLPasswordFile: pwFile, Stats: stats,
		}, kgo.Dialer(pn.dial))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		fwd := &relay.Forwarder{Name: sinkName, Sink: s, Queue: mem, Stats: stats, Resume: s.Resume()}
		fwd.Init()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- fwd.Run(ctx) }()
		defer func() { cancel(); <-done }()

		var batch [][]byte
		for i := range 100 {
			_, b := testEnvelope(i, 300)
			batch = append(batch, b)
		}
		if err := mem.Append(batch); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		pausedAt := time.Now()
		if p := stats.Snapshot().Paused; p != "unauthorized" {
			t.Fatalf("paused %q, want unauthorized", p)
		}
		if err := os.WriteFile(pwFile, []byte("s3cret"), 0o600); err != nil {
			t.Fatal(err)
		}

		time.Sleep(relay.DefaultProbeInterval - time.Second)
		synctest.Wait()
		if st, _ := mem.SinkStat(sinkName); st.Pending != 100 {
			t.Fatalf("%d pending before the probe, want 100", st.Pending)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		snap := stats.Snapshot()
		if st, _ := mem.SinkStat(sinkName); st.Pending != 0 || snap.Delivered != 100 || snap.Paused != "" {
			t.Fatalf("after the probe: pending %d delivered %d paused %q; want 0, 100, running", st.Pending, snap.Delivered, snap.Paused)
		}
		t.Logf("resumed %s after the pause; requests %v", snap.LastSuccess.Sub(pausedAt), snap.Requests)
	})
}
