package spool

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// impl is one implementation under the shared behavioural tests.
type impl struct {
	name string
	open func(t *testing.T, maxBytes int64) store
	// cost and limit give the cap measure: after an Append the live records'
	// costs add up to at most limit.
	cost  func(n int) int64
	limit func(s store, maxBytes int64) int64
}

var impls = []impl{
	{
		name: "memory",
		open: func(t *testing.T, maxBytes int64) store {
			m := NewMemory(maxBytes)
			t.Cleanup(func() { _ = m.Close() })
			return m
		},
		cost:  func(n int) int64 { return int64(n) },
		limit: func(_ store, maxBytes int64) int64 { return maxBytes },
	},
	{
		name: "spool",
		open: func(t *testing.T, maxBytes int64) store {
			o := testOptions(t)
			o.MaxBytes = maxBytes
			return openSpool(t, o)
		},
		cost:  recordCost,
		limit: func(s store, _ int64) int64 { return s.(*Spool).budget },
	},
}

func forEachImpl(t *testing.T, fn func(t *testing.T, im impl)) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) { fn(t, im) })
	}
}

func TestRoundTrip(t *testing.T) {
	const size = 200
	forEachImpl(t, func(t *testing.T, im impl) {
		s := im.open(t, 0)
		if err := s.Append(group(1, 5, size)); err != nil { // no sink yet: nobody will receive these
			t.Fatal(err)
		}
		for _, name := range []string{"b", "a"} {
			if err := s.AddSink(name); err != nil {
				t.Fatal(err)
			}
		}
		if got := s.Sinks(); !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("Sinks() = %v", got)
		}
		if recs := readAll(t, s, "a"); len(recs) != 0 {
			t.Fatalf("a new sink starts at the end, got %d records", len(recs))
		}
		if st := s.Stat(); st.Records != 0 || st.LastSeq != 5 {
			t.Fatalf("records appended with no sink are not kept: %+v", st)
		}

		select {
		case <-s.Ready("a"):
			t.Fatal("ready before any append")
		default:
		}
		for i := 0; i < 4; i++ {
			if err := s.Append(group(6+i*10, 10, size)); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-s.Ready("a"):
		default:
			t.Fatal("append did not signal Ready")
		}
		checkSeqs(t, readAll(t, s, "a"), 6, 45, size)

		// Bounded reads: by count, then by bytes, and the first record even
		// when it alone is over maxBytes.
		recs, _ := s.Read("a", 3, 0)
		checkSeqs(t, recs, 6, 8, size)
		recs, _ = s.Read("a", 100, 2*size+size/2)
		checkSeqs(t, recs, 6, 7, size)
		recs, _ = s.Read("a", 100, 1)
		checkSeqs(t, recs, 6, 6, size)

		if err := s.Ack("a", 20); err != nil {
			t.Fatal(err)
		}
		checkSeqs(t, readAll(t, s, "a"), 21, 45, size)
		checkSeqs(t, readAll(t, s, "b"), 6, 45, size)
		if err := s.Ack("a", 10); err != nil { // behind the cursor: no-op
			t.Fatal(err)
		}
		ss, _ := s.SinkStat("a")
		if ss != (SinkStat{Received: 40, Acked: 15, Pending: 25, Cursor: 20}) {
			t.Fatalf("a: %+v", ss)
		}
		if st := s.Stat(); st.Records != 40 || st.FirstSeq != 6 {
			t.Fatalf("b still needs 6..: %+v", st)
		}
		if err := s.Ack("b", 30); err != nil {
			t.Fatal(err)
		}
		if st := s.Stat(); st.Records != 25 || st.FirstSeq != 21 {
			t.Fatalf("records behind every cursor are deleted: %+v", st)
		}
		if err := s.Ack("b", 1000); err != nil { // past the end: up to the last record
			t.Fatal(err)
		}
		if ss, _ := s.SinkStat("b"); ss.Cursor != 45 || ss.Acked != 40 || ss.Pending != 0 {
			t.Fatalf("b: %+v", ss)
		}
		checkIdentity(t, s.Stat())

		ss, err := s.RemoveSink("a")
		if err != nil || ss.Pending != 25 || ss.Received != 40 {
			t.Fatalf("RemoveSink(a) = %+v, %v", ss, err)
		}
		if st := s.Stat(); st.Records != 0 {
			t.Fatalf("records only a needed are deleted with it: %+v", st)
		}
		if got := s.Sinks(); !slices.Equal(got, []string{"b"}) {
			t.Fatalf("Sinks() = %v", got)
		}
		if _, err := s.Read("a", 1, 0); !errors.Is(err, ErrUnknownSink) {
			t.Fatalf("Read(removed) = %v", err)
		}
		if err := s.Ack("zz", 1); !errors.Is(err, ErrUnknownSink) {
			t.Fatalf("Ack(unknown) = %v", err)
		}
		if _, err := s.RemoveSink("zz"); !errors.Is(err, ErrUnknownSink) {
			t.Fatalf("RemoveSink(unknown) = %v", err)
		}
		if _, err := s.SinkStat("zz"); !errors.Is(err, ErrUnknownSink) {
			t.Fatalf("SinkStat(unknown) = %v", err)
		}
		if s.Ready("zz") != nil {
			t.Fatal("Ready(unknown) is not nil")
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Append(group(1, 1, size)); !errors.Is(err, ErrClosed) {
			t.Fatalf("Append after Close = %v", err)
		}
		if err := s.AddSink("c"); !errors.Is(err, ErrClosed) {
			t.Fatalf("AddSink after Close = %v", err)
		}
	})
}

// TestCap appends far past the cap with one sink that never acks and one
// that acks everything: exactly the oldest records go, counted for the slow
// sink only, and the live records stay under the cap after every Append.
func TestCap(t *testing.T) {
	for _, size := range []int{300, 1100} { // 1100: a quarter of each page stays empty
		t.Run(fmt.Sprint(size), func(t *testing.T) { testCap(t, size) })
	}
}

func testCap(t *testing.T, size int) {
	const (
		maxBytes = 1 << 20
		per      = 128
	)
	forEachImpl(t, func(t *testing.T, im impl) {
		s := im.open(t, maxBytes)
		for _, name := range []string{"slow", "fast"} {
			if err := s.AddSink(name); err != nil {
				t.Fatal(err)
			}
		}
		sizes := map[uint64]int{} // seq -> envelope bytes
		groupBytes := int64(0)
		next := 1
		for next < 4*maxBytes/size {
			g := group(next, per, size+next%50)
			groupBytes = 0
			for i, d := range g {
				sizes[uint64(next+i)] = len(d)
				groupBytes += int64(len(d))
			}
			if err := s.Append(g); err != nil {
				t.Fatal(err)
			}
			next += per
			if err := s.Ack("fast", uint64(next-1)); err != nil {
				t.Fatal(err)
			}
			st := s.Stat()
			checkIdentity(t, st)
			slow := st.Sinks["slow"]
			recs := readAll(t, s, "slow")
			if uint64(len(recs)) != slow.Pending || len(recs) == 0 {
				t.Fatalf("slow: read %d records, pending %d", len(recs), slow.Pending)
			}
			// Exactly the oldest are gone: what is left runs without a gap to
			// the last record, and everything before it was counted evicted.
			firstLeft := recs[0].Seq
			if recs[len(recs)-1].Seq != uint64(next-1) || recs[len(recs)-1].Seq-firstLeft+1 != uint64(len(recs)) {
				t.Fatalf("slow: records %d..%d (%d) are not the newest", firstLeft, recs[len(recs)-1].Seq, len(recs))
			}
			if slow.Evicted != firstLeft-1 || slow.Cursor != firstLeft-1 {
				t.Fatalf("slow: evicted %d, cursor %d, oldest left %d", slow.Evicted, slow.Cursor, firstLeft)
			}
			if f := st.Sinks["fast"]; f.Evicted != 0 || f.Acked != uint64(next-1) {
				t.Fatalf("fast sink had acked everything, yet %+v", f)
			}
			var held int64
			for _, r := range recs {
				held += im.cost(len(r.Data))
			}
			limit := im.limit(s, maxBytes)
			if held > limit {
				t.Fatalf("live records measure %d, over the limit %d", held, limit)
			}
			if prev := firstLeft - 1; prev > 0 && held+im.cost(sizes[prev]) <= limit {
				t.Fatalf("record %d was evicted though it fitted (%d + %d <= %d)", prev, held, im.cost(sizes[prev]), limit)
			}
			if im.name == "spool" && st.Bytes > maxBytes+groupBytes {
				t.Fatalf("file uses %d bytes, over the cap %d + one group %d", st.Bytes, maxBytes, groupBytes)
			}
		}
		if st := s.Stat(); st.Sinks["slow"].Evicted < uint64(3*maxBytes/size) {
			t.Fatalf("the test did not go far past the cap: %+v", st.Sinks["slow"])
		}
	})
}

// TestConcurrent runs a writer, two forwarders and a stats reader at once
// (for -race), then checks every sink got every record once, in order.
func TestConcurrent(t *testing.T) {
	const (
		groups = 60
		per    = 50
		size   = 120
	)
	forEachImpl(t, func(t *testing.T, im impl) {
		s := im.open(t, 0)
		sinks := []string{"a", "b"}
		for _, name := range sinks {
			if err := s.AddSink(name); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		done := make(chan struct{})
		wg.Go(func() {
			defer close(done)
			for i := range groups {
				if err := s.Append(group(1+i*per, per, size)); err != nil {
					t.Error(err)
					return
				}
			}
		})
		got := make([][]Record, len(sinks))
		for i, name := range sinks {
			wg.Go(func() {
				for len(got[i]) < groups*per {
					recs, err := s.Read(name, 97, 0)
					if err != nil {
						t.Error(err)
						return
					}
					if len(recs) == 0 {
						select {
						case <-s.Ready(name):
						case <-done:
						}
						continue
					}
					got[i] = append(got[i], recs...)
					if err := s.Ack(name, recs[len(recs)-1].Seq); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				checkIdentity(t, s.Stat())
			}
		})
		wg.Wait()
		for i := range sinks {
			checkSeqs(t, got[i], 1, groups*per, size)
		}
		if st := s.Stat(); st.Records != 0 {
			t.Fatalf("everything acked, yet %d records held", st.Records)
		}
	})
}
