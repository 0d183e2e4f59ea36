package relay_test

import (
	"errors"
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

// Settle counts only after its ack succeeds; drops go by reason; only a
// delivery (or MarkSuccess) moves LastSuccess; Snapshot returns copies.
func TestStatsCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := relay.NewStats()
		t0 := time.Now()
		ackErr := errors.New("spool: closed")
		if err := s.Settle(5, []relay.Drop{{Reason: relay.DropRejected}}, func() error { return ackErr }); !errors.Is(err, ackErr) {
			t.Fatalf("Settle with a failing ack = %v, want its error", err)
		}
		if snap := s.Snapshot(nil); snap.Delivered != 0 || snap.DroppedTotal() != 0 || !snap.LastSuccess.IsZero() {
			t.Fatalf("a failed ack was counted: %+v", snap)
		}

		acks := 0
		if err := s.Settle(3, []relay.Drop{{Reason: relay.DropRejected}, {Reason: relay.DropOversize}, {Reason: relay.DropRejected}},
			func() error { acks++; return nil }); err != nil || acks != 1 {
			t.Fatalf("Settle = %v after %d acks", err, acks)
		}
		time.Sleep(time.Minute)
		if err := s.Settle(0, []relay.Drop{{Reason: relay.DropChannelClosed}}, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		s.AddDropped(relay.DropChannelClosed, 4)
		s.AddRequest("200")
		s.AddRequest("200")
		s.AddRequest("error")
		s.AddRetry("throttled")
		s.SetPaused("unauthorized")
		snap := s.Snapshot(nil)
		if snap.Delivered != 3 || !snap.LastSuccess.Equal(t0) || snap.Paused != "unauthorized" || snap.DroppedTotal() != 8 ||
			snap.Dropped[relay.DropRejected] != 2 || snap.Dropped[relay.DropOversize] != 1 || snap.Dropped[relay.DropChannelClosed] != 5 ||
			snap.Requests["200"] != 2 || snap.Requests["error"] != 1 || snap.Retries["throttled"] != 1 {
			t.Fatalf("snapshot %+v", snap)
		}

		snap.Dropped[relay.DropRejected] = 100
		snap.Requests["200"] = 100
		snap.Retries["x"] = 1
		if again := s.Snapshot(nil); again.Dropped[relay.DropRejected] != 2 || again.Requests["200"] != 2 || len(again.Retries) != 1 {
			t.Fatalf("Snapshot shares its maps with Stats: %+v", again)
		}

		time.Sleep(time.Minute)
		s.MarkSuccess()
		s.SetPaused("")
		if snap := s.Snapshot(nil); !snap.LastSuccess.Equal(t0.Add(2*time.Minute)) || snap.Paused != "" {
			t.Fatalf("after MarkSuccess: %+v", snap)
		}
	})
}

// SettleRange counts only the records after the cursor the ack moved from:
// those at or before it were evicted in flight and the spool counts them.
func TestStatsSettleRange(t *testing.T) {
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
			if err := s.SettleRange(10, 15, drops, func() (uint64, error) { return tc.prev, nil }); err != nil {
				t.Fatal(err)
			}
			snap := s.Snapshot(nil)
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
		if err := s.SettleRange(13, 13, drops, func() (uint64, error) { return 12, nil }); err != nil {
			t.Fatal(err)
		}
		if snap := s.Snapshot(nil); snap.Delivered != 0 || snap.Dropped[relay.DropOversize] != 1 || !snap.LastSuccess.IsZero() {
			t.Fatalf("a batch of drops: %+v; want 1 oversize and no success", snap)
		}
	})
	t.Run("ack error", func(t *testing.T) {
		s := relay.NewStats()
		ackErr := errors.New("spool: closed")
		if err := s.SettleRange(1, 5, nil, func() (uint64, error) { return 0, ackErr }); !errors.Is(err, ackErr) {
			t.Fatalf("SettleRange = %v, want the ack's error", err)
		}
		if snap := s.Snapshot(nil); snap.Delivered != 0 || !snap.LastSuccess.IsZero() {
			t.Fatalf("a failed ack was counted: %+v", snap)
		}
	})
}

// Snapshot runs its read under the lock Settle and SettleRange ack under, so
// snapshots taken while Settles and Appends run concurrently always satisfy
// received = delivered + dropped + pending + evicted, and the spool's acked
// count equals what Stats counted.
//
// Settle cannot tell that a record was evicted between its read and its ack
// (it would be counted twice), so it runs over an uncapped spool; SettleRange
// runs over a small cap, with two settlers that may ack the same record.
func TestStatsSnapshotConsistentUnderConcurrency(t *testing.T) {
	t.Run("Settle", func(t *testing.T) {
		mem, stats := spool.NewMemory(0), relay.NewStats()
		errNothing := errors.New("nothing to ack")
		stressSnapshots(t, mem, stats, func(drop bool) (bool, error) {
			delivered, drops := 1, []relay.Drop(nil)
			if drop {
				delivered, drops = 0, []relay.Drop{{Reason: relay.DropRejected}}
			}
			err := stats.Settle(delivered, drops, func() error {
				recs, err := mem.Read(sinkName, 1, 0)
				if err != nil {
					return err
				}
				if len(recs) == 0 {
					return errNothing
				}
				if err := mem.Ack(sinkName, recs[0].Seq); err != nil {
					return err
				}
				runtime.Gosched() // widen the window between the ack and the count
				return nil
			})
			if errors.Is(err, errNothing) {
				return false, nil
			}
			return err == nil, err
		})
	})
	t.Run("SettleRange with evictions", func(t *testing.T) {
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
			return true, stats.SettleRange(seq, seq, drops, func() (uint64, error) {
				prev, err := mem.AckFrom(sinkName, seq)
				runtime.Gosched()
				return prev, err
			})
		})
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
				var ss spool.SinkStat
				snap := stats.Snapshot(func() { ss, _ = mem.SinkStat(sinkName) })
				if ss.Received != snap.Delivered+snap.DroppedTotal()+ss.Pending+ss.Evicted || ss.Acked != snap.Delivered+snap.DroppedTotal() {
					t.Errorf("inconsistent snapshot: received %d, delivered %d, dropped %d, pending %d, evicted %d, acked %d",
						ss.Received, snap.Delivered, snap.DroppedTotal(), ss.Pending, ss.Evicted, ss.Acked)
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
