package httpsink

import (
	"context"
	"time"
)

// bucket is a token bucket holding at most one token, refilled once per
// interval. With burst 1 the peer sees at most N requests in any rolling
// minute plus one (the window may open on a request and close on the N+1st).
//
// It is used by the Send goroutine only and is not safe for concurrent use.
type bucket struct {
	interval time.Duration // 0: no budget (RatePerMinute 0)
	next     time.Time     // when the next token is available
}

func newBucket(perMinute int) bucket {
	if perMinute == 0 {
		return bucket{}
	}
	return bucket{interval: time.Minute / time.Duration(perMinute)}
}

// take waits for the token and spends it. It returns ctx.Err() if ctx ends
// first, and then the token is not spent.
func (b *bucket) take(ctx context.Context) error {
	if b.interval == 0 {
		return ctx.Err()
	}
	now := time.Now()
	if wait := b.next.Sub(now); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		now = time.Now()
	}
	// An idle period earns no credit beyond the one token: the next token
	// counts from now, not from when this one became available.
	b.next = now.Add(b.interval)
	return nil
}
