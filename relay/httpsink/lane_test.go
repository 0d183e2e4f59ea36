package httpsink

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Lanes share one budget: four takers at once get their tokens one
// interval apart, never two in one interval.
func TestBucketSharedByLanes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBucket(60)
		start := time.Now()
		var (
			mu sync.Mutex
			at []time.Duration
			wg sync.WaitGroup
		)
		for range 4 {
			wg.Go(func() {
				for range 2 {
					if err := b.take(context.Background()); err != nil {
						t.Error(err)
					}
					mu.Lock()
					at = append(at, time.Since(start))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		slices.Sort(at)
		for i, d := range at {
			if want := time.Duration(i) * time.Second; d != want {
				t.Fatalf("tokens at %v; want one a second from 0", at)
			}
		}
	})
}

// A lane shares the URL, client, key source, budget and counters, and has
// buffers of its own.
func TestLaneShares(t *testing.T) {
	s, err := New(Options{URL: "http://127.0.0.1:1/v1/metrics", APIKey: "k", Host: "h", Gzip: true})
	if err != nil {
		t.Fatal(err)
	}
	l := s.Lane().(*Sink)
	if l == s || l.client != s.client || l.keys != s.keys || l.rate != s.rate || l.stats != s.stats || l.url != s.url {
		t.Fatal("a lane must share the client, key source, budget, counters and URL")
	}
	s.buf = append(s.buf, "x"...)
	if l.zw == s.zw || l.dropLog == s.dropLog || len(l.buf) != 0 {
		t.Fatal("a lane must have its own buffers and log throttle")
	}
}
