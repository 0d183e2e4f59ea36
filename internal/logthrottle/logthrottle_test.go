package logthrottle_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepeer/edgerelay/internal/logthrottle"
)

func TestThrottle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := logthrottle.New(time.Minute, 3)
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

func TestKeyed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := logthrottle.NewKeyed(time.Minute)
		if !k.Allow("gpu-0") || !k.Allow("gpu-1") || k.Allow("gpu-0") {
			t.Fatal("one line per key per interval")
		}
		time.Sleep(time.Minute)
		if !k.Allow("gpu-0") {
			t.Fatal("not allowed after the interval")
		}
	})
}
