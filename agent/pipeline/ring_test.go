package pipeline

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
)

func TestRingDropsOldestByCount(t *testing.T) {
	r := NewRing(10, 0)
	for i := range 25 {
		if err := r.Push([]byte(fmt.Sprint(i)), "", nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := r.Len(); n != 10 {
		t.Fatalf("len %d, want 10", n)
	}
	if d := r.Dropped(); d != 15 {
		t.Fatalf("dropped %d, want 15", d)
	}
	got := r.Pop(nil, 100)
	for i, it := range got {
		if want := fmt.Sprint(15 + i); string(it.data) != want {
			t.Fatalf("entry %d = %s, want %s (the newest are kept)", i, it.data, want)
		}
	}
}

func TestRingDropsOldestByBytes(t *testing.T) {
	r := NewRing(1000, 100)
	ten := make([]byte, 10)
	for range 10 {
		r.Push(ten, "", nil, 0)
	}
	r.Push(make([]byte, 35), "", nil, 0) // needs room: 4 oldest go
	n, b := r.Len()
	if n != 7 || b != 95 || r.Dropped() != 4 {
		t.Fatalf("len %d bytes %d dropped %d; want 7, 95, 4", n, b, r.Dropped())
	}
	r.Push(make([]byte, 101), "", nil, 0) // larger than the cap: refused, counted
	if n2, b2 := r.Len(); n2 != 7 || b2 != 95 || r.Dropped() != 5 {
		t.Fatalf("oversize entry: len %d bytes %d dropped %d", n2, b2, r.Dropped())
	}
}

func TestRingWaiterLearnsOfDrops(t *testing.T) {
	r := NewRing(2, 0)
	w := newWaiter(3)
	for i := range 3 {
		r.Push([]byte{byte(i)}, "", w, i)
	}
	popped := r.Pop(nil, 10)
	settleWaiters(popped, false, nil)
	<-w.done
	if len(w.dropped) != 1 || w.dropped[0] != 0 {
		t.Fatalf("dropped %v, want [0]", w.dropped)
	}
}

func BenchmarkRingPush(b *testing.B) {
	r := NewRing(50000, 64<<20)
	env := []byte(`{"id":"0194b7c4-6f2a-7c3e-9a51-2f0e6d1b8a90","type":"gpu_memory_sample","timestamp":"1767908945298","gateway":"","data":{"x":1}}`)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // one consumer, as in the agent
		defer close(done)
		buf := make([]ringItem, 0, 1024)
		for {
			select {
			case <-stop:
				return
			case <-r.Ready():
				buf = r.Pop(buf[:0], 1024)
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Push(env, "", nil, 0)
		}
	})
	b.StopTimer()
	close(stop)
	<-done
}

// BenchmarkChanBaseline is the yardstick for BenchmarkRingPush: a buffered
// channel of the same capacity with one consumer (blocking when full, no
// byte cap, no drop accounting).
func BenchmarkChanBaseline(b *testing.B) {
	ch := make(chan []byte, 50000)
	env := []byte(`{"id":"0194b7c4-6f2a-7c3e-9a51-2f0e6d1b8a90","type":"gpu_memory_sample","timestamp":"1767908945298","gateway":"","data":{"x":1}}`)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range ch {
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ch <- env
		}
	})
	b.StopTimer()
	close(ch)
	<-done
}

// WaitRoom holds a caller while the ring is over half full and lets it go
// when the writer pops it down to half; a cancelled wait reports no room.
func TestRingWaitRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRing(10, 0)
		for range 6 {
			if err := r.Push([]byte("x"), "", nil, 0); err != nil {
				t.Fatal(err)
			}
		}
		got := make(chan bool, 1)
		go func() { got <- r.WaitRoom(context.Background()) }()
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("WaitRoom returned with 6 of 10 held")
		default:
		}
		r.Pop(nil, 1)
		synctest.Wait()
		if ok := <-got; !ok {
			t.Fatal("WaitRoom reported no room at half")
		}
		r.Push([]byte("x"), "", nil, 0)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if r.WaitRoom(ctx) {
			t.Fatal("a cancelled WaitRoom reported room with 6 of 10 held")
		}
	})
}
