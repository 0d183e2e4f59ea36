package kafkasink

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

const sinkName = "kafka"

// testClientOpts make the client notice moved leaders and restarted brokers
// quickly; production keeps franz-go's defaults.
var testClientOpts = []kgo.Opt{
	kgo.MetadataMinAge(50 * time.Millisecond),
	kgo.RetryBackoffFn(func(int) time.Duration { return 20 * time.Millisecond }),
}

// envelope builds a ~size-byte envelope numbered i. The id comes last in
// odd envelopes: the sink must not assume key order.
func testEnvelope(i, size int) (id string, b []byte) {
	id = fmt.Sprintf("0194b7c4-6f2a-7c3e-9a51-%012x", i)
	data := fmt.Sprintf(`{"type":"gpu_memory_sample","client_source":"edgerelay","gpu_id":"GPU-5f3c","memory_used_bytes":%d,"pad":"`, i*4096)
	rest := `"}`
	head := `{"type":"gpu_memory_sample","timestamp":"1767908945298","gateway":"","data":`
	var s string
	pad := max(size-len(head)-len(data)-len(rest)-len(`,"id":""}`)-len(id), 0)
	if i%2 == 0 {
		s = `{"id":"` + id + `",` + head[1:] + data + strings.Repeat("x", pad) + rest + `}`
	} else {
		s = head + data + strings.Repeat("x", pad) + rest + `,"id":"` + id + `"}`
	}
	return id, []byte(s)
}

// harness is one sink fed by a forwarder from a memory spool.
type harness struct {
	t     testing.TB
	mem   *spool.Memory
	stats *relay.Stats
	sink  *Sink
	sent  map[string][]byte // id -> envelope appended
	next  int

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan error
}

// newHarness starts a forwarder over a new sink. Batch is records per Send.
func newHarness(t testing.TB, opts Options, batch int, probe time.Duration) *harness {
	t.Helper()
	h := &harness{t: t, mem: spool.NewMemory(0), stats: relay.NewStats(), sent: make(map[string][]byte)}
	if err := h.mem.AddSink(sinkName); err != nil {
		t.Fatal(err)
	}
	opts.Stats = h.stats
	sink, err := newSink(context.Background(), opts, testClientOpts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.sink = sink
	fwd := &relay.Forwarder{
		Name:          sinkName,
		Sink:          sink,
		Queue:         h.mem,
		Stats:         h.stats,
		Batch:         batch,
		ProbeInterval: probe,
		NewBackOff:    func() backoff.BackOff { return backoff.NewConstantBackOff(20 * time.Millisecond) },
		Resume:        sink.Resume(),
	}
	fwd.Init()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- fwd.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

// stop ends the forwarder, waits for it, and closes the sink.
func (h *harness) stop() {
	h.stopOnce.Do(func() {
		h.cancel()
		<-h.done
		h.sink.Close()
		h.mem.Close()
	})
}

// add appends n envelopes of about size bytes, in chunks as a spool writer
// would.
func (h *harness) add(n, size int) {
	h.t.Helper()
	var chunk [][]byte
	for range n {
		id, b := testEnvelope(h.next, size)
		h.next++
		h.sent[id] = b
		chunk = append(chunk, b)
		if len(chunk) == 500 {
			if err := h.mem.Append(chunk); err != nil {
				h.t.Fatal(err)
			}
			chunk = nil
		}
	}
	if len(chunk) > 0 {
		if err := h.mem.Append(chunk); err != nil {
			h.t.Fatal(err)
		}
	}
}

// appendRaw appends one envelope as given.
func (h *harness) appendRaw(id string, b []byte) {
	h.t.Helper()
	h.sent[id] = b
	if err := h.mem.Append([][]byte{b}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) stat() spool.SinkStat {
	st, err := h.mem.SinkStat(sinkName)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// waitSettled waits until nothing is pending for the sink and the stats
// have counted every acknowledgement (the forwarder counts a batch just
// after the spool takes its ack).
func (h *harness) waitSettled(timeout time.Duration) {
	h.t.Helper()
	waitFor(h.t, timeout, "all records settled", func() bool {
		snap := h.stats.Snapshot()
		st := h.stat()
		return st.Pending == 0 && st.Acked == snap.Delivered+snap.DroppedTotal()
	})
}

// checkIdentity asserts, at rest, received = delivered + dropped + pending
// and returns the snapshot.
func (h *harness) checkIdentity() (relay.Snapshot, spool.SinkStat) {
	h.t.Helper()
	snap := h.stats.Snapshot()
	st, _ := h.mem.SinkStat(sinkName)
	if got := snap.Delivered + snap.DroppedTotal() + st.Pending; got != st.Received {
		h.t.Fatalf("identity broken: received %d != delivered %d + dropped %d + pending %d",
			st.Received, snap.Delivered, snap.DroppedTotal(), st.Pending)
	}
	return snap, st
}

// waitFor polls cond until it holds or timeout passes. The sink talks to a
// real (loopback) broker, so there is no virtual time to advance.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// consumeAll reads every record of topic from the start up to the end
// offsets at the time of the call.
func consumeAll(t testing.TB, brokers []string, topic string, extra ...kgo.Opt) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(50 * time.Millisecond),
	}, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of partition %d: %v", o.Partition, o.Err)
		}
		total += o.Offset
	})
	var out []*kgo.Record
	for int64(len(out)) < total {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(out), total, err)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("fetch partition %d: %v", p, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

// verifyTopic checks that every envelope sent is in the topic with its id
// as key and its bytes unchanged, that nothing else is there, and returns
// how many records are extra copies.
func verifyTopic(t testing.TB, recs []*kgo.Record, sent map[string][]byte, dropped map[string]bool) (dups int) {
	t.Helper()
	seen := make(map[string]int, len(sent))
	for _, r := range recs {
		id := string(r.Key)
		want, ok := sent[id]
		if !ok {
			t.Fatalf("record with unknown key %q", id)
		}
		if !bytes.Equal(r.Value, want) {
			t.Fatalf("record %q: value differs from the envelope sent:\n got %q\nwant %q", id, r.Value, want)
		}
		if dropped[id] {
			t.Fatalf("record %q was reported dropped but is in the topic", id)
		}
		seen[id]++
	}
	missing := 0
	for id := range sent {
		if seen[id] == 0 && !dropped[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d envelopes missing from the topic", missing, len(sent))
	}
	for _, n := range seen {
		dups += n - 1
	}
	return dups
}
