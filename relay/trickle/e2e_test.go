package trickle

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/trickle/trickletest"
)

// A subscriber follows a publisher through the fake server over loopback
// TCP: every envelope arrives once, in order, with id, type, timestamp and
// data unchanged but for the two relay members.
func TestEndToEnd(t *testing.T) {
	tests := []struct {
		framing string
		n       int
		keep    int
	}{
		{FramingJSONL, 10_000, 0},
		// One segment per envelope at full speed: a reader one round trip
		// slower than the publisher falls more than 5 segments behind and
		// jumps (TestSubscriberJumpsOn470). This case checks delivery, so
		// the server keeps every segment.
		{FramingSegment, 10_000, 20_000},
	}
	if raceEnabled {
		// 10,000 sequential POST/GET pairs take about 30 s under the race
		// detector; 2,000 keep the package's run short.
		tests[1].n = 2_000
	}
	for _, tt := range tests {
		t.Run(tt.framing, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
			defer cancel()
			srv := newFake(t, trickletest.Options{KeepSegments: tt.keep})
			srv.CreateChannel("ch-events")
			c := newCollector()
			sub, _ := startSubscriber(t, SubscriberOptions{
				URL:        srv.ChannelURL("ch-events"),
				OnEnvelope: c.on,
				Now:        func() time.Time { return relayTime },
				NewBackOff: fastBackOff,
			})
			if err := srv.WaitReaders(ctx, "ch-events", 1); err != nil {
				t.Fatal(err)
			}
			cur := newSpool(t)
			pub, _ := startPublisher(t, PublisherOptions{
				URL:     srv.ChannelURL("ch-events"),
				Framing: tt.framing,
				Wrap:    true,
			}, cur, func(f *relay.Forwarder) { f.NewBackOff = fastBackOff })
			envs := envelopes(tt.n)
			for i := 0; i < len(envs); i += 250 {
				cur.append(t, envs[i:min(i+250, len(envs))]...)
			}
			got := c.waitN(t, ctx, tt.n)
			cur.waitAcked(t, ctx, uint64(tt.n))
			// The annotation keeps every byte and appends to data, which
			// these envelopes end with: the exact bytes are known.
			suffix := `,"relayed_via":"trickle","relay_received_timestamp":"` + strconv.FormatInt(relayTime.UnixMilli(), 10) + `"}}`
			for i := range envs {
				want := string(envs[i][:len(envs[i])-2]) + suffix
				if string(got[i]) != want {
					t.Fatalf("envelope %d:\n got %s\nwant %s", i, got[i], want)
				}
			}
			ss, ps := sub.Stats(), pub.Stats().Snapshot()
			if ss.Relayed != uint64(tt.n) || ss.Jumps != 0 || ss.MalformedTotal() != 0 || ss.Duplicates != 0 {
				t.Fatalf("subscriber stats %+v", ss)
			}
			if ps.Delivered != uint64(tt.n) || len(ps.Retries) != 0 {
				t.Fatalf("publisher stats %+v", ps)
			}
			checkNoRePost(t, srv.Requests())
			t.Logf("%s: %d envelopes in %d segments, %d GETs", tt.framing, tt.n, len(srv.Received("ch-events")), ss.Requests["200"])
		})
	}
}
