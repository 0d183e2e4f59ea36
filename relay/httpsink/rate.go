package httpsink

import (
	"context"
	"sync"
	"time"
)

// bucket is a token bucket holding at most one token, refilled once per
// interval. With burst 1 the peer sees at most N requests in any rolling
// minute plus one (the window may open on a request and close on the N+1st).
//
// It is safe for concurrent use: the lanes of one sink share it, each take
// reserving the next slot in turn, so the budget holds however many
// requests are in flight.
type bucket struct {
	interval time.Duration // 0: no budget (RatePerMinute 0)

	mu   sync.Mutex // guards next
	next time.Time  // when the next token is available
}

func newBucket(perMinute int) *bucket {
	if perMinute == 0 {
		return &bucket{}
	}
	return &bucket{interval: time.Minute / time.Duration(perMinute)}
}

// take waits for a token and spends it. It returns ctx.Err() if ctx ends
// first; the token is then given back unless a later take has reserved the
// one after it.
func (b *bucket) take(ctx context.Context) error {
	if b.interval == 0 {
		return ctx.Err()
	}
	b.mu.Lock()
	now := time.Now()
	// An idle period earns no credit beyond the one token: the next token
	// counts from when this one is used, not from when it became available.
	at := now
	if b.next.After(now) {
		at = b.next
	}
	b.next = at.Add(b.interval)
	b.mu.Unlock()
	if wait := at.Sub(now); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			b.mu.Lock()
			if b.next.Equal(at.Add(b.interval)) {
				b.next = at
			}
			b.mu.Unlock()
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
