package spool

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// store is the method set Memory and Spool share: what the agent will hold.
type store interface {
	AddSink(name string) error
	RemoveSink(name string) (SinkStat, error)
	Append(data [][]byte) error
	Read(sink string, max, maxBytes int) ([]Record, error)
	Ack(sink string, seq uint64) error
	Ready(sink string) <-chan struct{}
	SinkStat(sink string) (SinkStat, error)
	Sinks() []string
	Stat() Stat
	Close() error
}

var (
	_ store = (*Memory)(nil)
	_ store = (*Spool)(nil)
)

// fixedNow is the clock of tests that check quarantine names.
var fixedNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testOptions are the options of a spool in a fresh temporary directory.
func testOptions(t testing.TB) Options {
	return Options{
		Path:   filepath.Join(t.TempDir(), "state", "spool.db"),
		Logger: testLogger(t),
	}
}

// openSpool opens a spool and closes it when the test ends.
func openSpool(t testing.TB, o Options) *Spool {
	t.Helper()
	s, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// envelope returns a JSON envelope for seq padded to about size bytes.
func envelope(seq, size int) []byte {
	head := fmt.Sprintf(`{"id":"id-%08d","type":"test","timestamp":"%d","gateway":"","data":{"n":%d,"pad":"`, seq, 1767908945298+seq, seq)
	pad := max(0, size-len(head)-3)
	return []byte(head + strings.Repeat("x", pad) + `"}}`)
}

// group returns n envelopes numbered from first.
func group(first, n, size int) [][]byte {
	g := make([][]byte, n)
	for i := range g {
		g[i] = envelope(first+i, size)
	}
	return g
}

// checkIdentity fails the test unless every sink's accounting adds up.
func checkIdentity(t testing.TB, st Stat) {
	t.Helper()
	for name, ss := range st.Sinks {
		if ss.Received != ss.Acked+ss.Evicted+ss.MemoryEvicted+ss.Pending {
			t.Fatalf("sink %s: received %d != acked %d + evicted %d + memory evicted %d + pending %d", name, ss.Received, ss.Acked, ss.Evicted, ss.MemoryEvicted, ss.Pending)
		}
	}
}

// readAll reads everything pending for sink without acking.
// A disk spool's batches stop at gaps and between disk and memory: the
// batches are read one after the other.
func readAll(t testing.TB, s store, sink string) []Record {
	t.Helper()
	sp, ok := s.(*Spool)
	if !ok {
		recs, err := s.Read(sink, 1<<30, 0)
		if err != nil {
			t.Fatalf("Read(%s): %v", sink, err)
		}
		return recs
	}
	var all []Record
	var after uint64
	for {
		recs, err := sp.read(sink, after, 1<<30, 0)
		if err != nil {
			t.Fatalf("Read(%s): %v", sink, err)
		}
		if len(recs) == 0 {
			return all
		}
		all = append(all, recs...)
		after = recs[len(recs)-1].Seq
	}
}

// checkSeqs fails unless recs are exactly seqs from..to with the envelopes
// group() made for them.
func checkSeqs(t testing.TB, recs []Record, from, to uint64, size int) {
	t.Helper()
	if want := int(to - from + 1); to < from && len(recs) != 0 || to >= from && len(recs) != want {
		t.Fatalf("got %d records, want seqs %d..%d", len(recs), from, to)
	}
	for i, r := range recs {
		seq := from + uint64(i)
		if r.Seq != seq {
			t.Fatalf("record %d has seq %d, want %d", i, r.Seq, seq)
		}
		if want := envelope(int(seq), size); string(r.Data) != string(want) {
			t.Fatalf("seq %d: data %.40q..., want %.40q...", seq, r.Data, want)
		}
	}
}
