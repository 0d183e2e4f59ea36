package relay_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// closedSink is a destination that has ended.
type closedSink struct{}

func (closedSink) Send(context.Context, []spool.Record) relay.Result {
	return relay.Result{Err: relay.ErrClosed}
}

// TestGroupRetireNeverShowsLess: a reader that looks while a sink retires
// (its cursor gone from the queue, its final report not yet kept) waits for
// the retirement and sees the final report, not the sink at zero: no
// counter goes down across a retirement. The reader's Stat fails inside
// Remove's window by construction, so the test does not depend on timing.
func TestGroupRetireNeverShowsLess(t *testing.T) {
	const name, n = "session:a", 10
	mem := spool.NewMemory(1 << 20)
	if err := mem.AddSink(name); err != nil {
		t.Fatal(err)
	}
	var recs [][]byte
	for i := range n {
		recs = append(recs, fmt.Appendf(nil, `{"id":"e%d"}`, i))
	}
	if err := mem.Append(recs); err != nil {
		t.Fatal(err)
	}
	removed, release := make(chan struct{}), make(chan struct{})
	sawGone := make(chan struct{}, 1)
	f := &relay.Forwarder{Name: name, Queue: mem, Stats: relay.NewStats(), Sink: closedSink{}}
	f.Init()
	g := relay.NewGroup(testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g.Start(ctx, relay.Member{
		Name: name, Kind: "session", Fwd: f, Aggregate: "sessions",
		Stat: func() (spool.SinkStat, error) {
			st, err := mem.SinkStat(name)
			if err != nil {
				select {
				case sawGone <- struct{}{}:
				default:
				}
			}
			return st, err
		},
		Remove: func() (spool.SinkStat, error) {
			st, err := mem.RemoveSink(name)
			close(removed)
			<-release
			return st, err
		},
	})
	<-removed // the forwarder got ErrClosed; Retire is inside Remove
	got := make(chan map[string]relay.SinkReport)
	go func() { got <- g.Reports() }()
	<-sawGone // the reader found the cursor gone
	close(release)
	reps := <-got
	g.Wait()
	s, ok := reps["sessions"]
	if !ok || len(reps) != 1 {
		t.Fatalf("reports during the retirement: %+v", reps)
	}
	if s.Received != n || s.Dropped[relay.DropChannelClosed] != n || s.DroppedTotal != n || s.Pending != 0 || !s.Balanced {
		t.Errorf("final report %+v, want %d received and dropped channel_closed", s, n)
	}
}
