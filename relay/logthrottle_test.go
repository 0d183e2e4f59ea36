package relay_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepeer/edgerelay/relay"
)

func TestLogThrottle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := relay.NewLogThrottle(time.Minute, 3)
		allowed := 0
		for range 10 {
			if l.Allow() {
				allowed++
			}
		}
		if allowed != 3 || l.Suppressed() != 7 || l.Suppressed() != 0 {
			t.Errorf("allowed %d of 10 with burst 3", allowed)
		}
		time.Sleep(time.Minute)
		if !l.Allow() {
			t.Error("not allowed after the interval")
		}
		l.Allow()
		l.Allow()
		if l.Allow() {
			t.Error("a fourth line within the interval")
		}
		l.Reset()
		if !l.Allow() {
			t.Error("not allowed after Reset")
		}
	})
}
