package relay_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// Drops go by reason; only a delivery (or MarkSuccess) moves LastSuccess;
// Snapshot returns copies.
func TestStatsCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := relay.NewStats()
		t0 := time.Now()
		s.Settle(1, 6, 0, []relay.Drop{{Seq: 2, Reason: relay.DropRejected}, {Seq: 3, Reason: relay.DropOversize}, {Seq: 5, Reason: relay.DropRejected}})
		time.Sleep(time.Minute)
		s.Settle(7, 7, 6, []relay.Drop{{Seq: 7, Reason: relay.DropChannelClosed}})
		s.AddDropped(relay.DropChannelClosed, 4)
		s.AddRequest("200")
		s.AddRequest("200")
		s.AddRequest("error")
		s.AddRetry("throttled")
		s.SetPaused("unauthorized")
		snap := s.Snapshot()
		if snap.Delivered != 3 || !snap.LastSuccess.Equal(t0) || snap.Paused != "unauthorized" || snap.DroppedTotal() != 8 ||
			snap.Dropped[relay.DropRejected] != 2 || snap.Dropped[relay.DropOversize] != 1 || snap.Dropped[relay.DropChannelClosed] != 5 ||
			snap.Requests["200"] != 2 || snap.Requests["error"] != 1 || snap.Retries["throttled"] != 1 {
			t.Fatalf("snapshot %+v", snap)
		}

		snap.Dropped[relay.DropRejected] = 100
		snap.Requests["200"] = 100
		snap.Retries["x"] = 1
		if again := s.Snapshot(); again.Dropped[relay.DropRejected] != 2 || again.Requests["200"] != 2 || len(again.Retries) != 1 {
			t.Fatalf("Snapshot shares its maps with Stats: %+v", again)
		}

		time.Sleep(time.Minute)
		s.MarkSuccess()
		s.SetPaused("")
		if snap := s.Snapshot(); !snap.LastSuccess.Equal(t0.Add(2*time.Minute)) || snap.Paused != "" {
			t.Fatalf("after MarkSuccess: %+v", snap)
		}
	})
}

// Settle counts only the records after the cursor the ack moved from:
// those at or before it were evicted in flight and the spool counts them.
func TestStatsSettle(t *testing.T) {
	drops := []relay.Drop{{Seq: 11, Reason: relay.DropRejected}, {Seq: 13, Reason: relay.DropOversize}, {Seq: 99, Reason: relay.DropRejected}}
	for _, tc := range []struct {
		name      string
		prev      uint64
		delivered uint64
		dropped   map[string]uint64
	}{
		{"nothing evicted", 9, 4, map[string]uint64{relay.DropRejected: 1, relay.DropOversize: 1}},
		{"cursor far behind", 0, 4, map[string]uint64{relay.DropRejected: 1, relay.DropOversize: 1}},
		{"first two evicted", 11, 3, map[string]uint64{relay.DropOversize: 1}},
		{"all but the last evicted", 14, 1, map[string]uint64{}},
		{"all evicted", 15, 0, map[string]uint64{}},
		{"cursor past the batch", 40, 0, map[string]uint64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := relay.NewStats()
			s.Settle(10, 15, tc.prev, drops)
			snap := s.Snapshot()
			if snap.Delivered != tc.delivered || fmt.Sprint(snap.Dropped) != fmt.Sprint(tc.dropped) {
				t.Fatalf("delivered %d dropped %v; want %d, %v", snap.Delivered, snap.Dropped, tc.delivered, tc.dropped)
			}
			if snap.LastSuccess.IsZero() != (tc.delivered == 0) {
				t.Fatalf("LastSuccess %v after %d delivered", snap.LastSuccess, tc.delivered)
			}
		})
	}
	t.Run("only drops", func(t *testing.T) {
		s := relay.NewStats()
		s.Settle(13, 13, 12, drops)
		if snap := s.Snapshot(); snap.Delivered != 0 || snap.Dropped[relay.DropOversize] != 1 || !snap.LastSuccess.IsZero() {
			t.Fatalf("a batch of drops: %+v; want 1 oversize and no success", snap)
		}
	})
}

// Account over a snapshot taken before the spool's stat balances exactly
// while appends, acks (with evictions in flight) and counts run
// concurrently, although no lock covers an ack and its count; at rest its
// pending equals the spool's own.
func TestAccountBalancedUnderConcurrency(t *testing.T) {
	mem, stats := spool.NewMemory(128), relay.NewStats()
	stressSnapshots(t, mem, stats, func(drop bool) (bool, error) {
		recs, err := mem.Read(sinkName, 1, 0)
		if err != nil || len(recs) == 0 {
			return false, err
		}
		seq := recs[0].Seq
		var drops []relay.Drop
		if drop {
			drops = []relay.Drop{{Seq: seq, Reason: relay.DropRejected}}
		}
		runtime.Gosched() // "in flight": the appender may evict it now
		prev, err := mem.AckFrom(sinkName, seq)
		if err != nil {
			return false, err
		}
		runtime.Gosched() // widen the window between the ack and the count
		stats.Settle(seq, seq, prev, drops)
		return true, nil
	})
}

// stressSnapshots runs an appender, two settlers calling settle (which says
// whether it found a record to settle; every third call drops it), and two
// readers that check 2000 snapshots each; then the settlers drain the spool
// and the final accounting is checked.
func stressSnapshots(t *testing.T, mem *spool.Memory, stats *relay.Stats, settle func(drop bool) (bool, error)) {
	const snapsPerReader = 2000
	if err := mem.AddSink(sinkName); err != nil {
		t.Fatal(err)
	}
	var (
		appended  atomic.Bool
		nAppended atomic.Uint64
		workers   sync.WaitGroup
		readers   sync.WaitGroup
		stop      = make(chan struct{}) // the readers are done
	)
	workers.Go(func() {
		defer appended.Store(true)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if ss, _ := mem.SinkStat(sinkName); ss.Pending > 200 {
				runtime.Gosched() // let the settlers catch up
				continue
			}
			batch := [][]byte{{byte(i)}, {byte(i >> 8)}}[:1+i%2]
			if err := mem.Append(batch); err != nil {
				t.Error(err)
				return
			}
			nAppended.Add(uint64(len(batch)))
		}
	})
	for w := range 2 {
		workers.Go(func() {
			for i := 0; ; i++ {
				done := appended.Load() // before the read: then finding nothing means the end
				ok, err := settle((i+w)%3 == 0)
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					if done {
						return
					}
					runtime.Gosched()
				}
			}
		})
	}
	for range 2 {
		readers.Go(func() {
			for range snapsPerReader {
				snap := stats.Snapshot()
				ss, _ := mem.SinkStat(sinkName)
				r := relay.Account("test", snap, ss)
				if !r.Balanced || r.Pending < ss.Pending || r.Received != ss.Received {
					t.Errorf("report %+v against the spool's %+v", r, ss)
					return
				}
				runtime.Gosched()
			}
		})
	}
	readers.Wait()
	close(stop)
	workers.Wait()
	if t.Failed() {
		return
	}
	snap, ss := checkIdentity(t, stats, mem)
	if ss.Pending != 0 || ss.Received != nAppended.Load() || snap.Delivered == 0 || snap.DroppedTotal() == 0 {
		t.Fatalf("at the end: %+v, %+v", snap, ss)
	}
	t.Logf("%d records: delivered %d, dropped %d, evicted %d", ss.Received, snap.Delivered, snap.DroppedTotal(), ss.Evicted)
}
