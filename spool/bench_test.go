package spool

import (
	"log/slog"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// The benchmarks append groups of benchGroup envelopes of about benchSize
// bytes, each group one fsynced transaction, and report events/s.
// BenchmarkRawBolt is the baseline: bbolt alone inserting the same records
// in the same groups, FillPercent 1.0, fsync on. Compare BenchmarkAppend to
// it within one run (goal: at least half).
const (
	benchGroup = 256
	benchSize  = 300
)

func BenchmarkAppend(b *testing.B) {
	s := benchSpool(b, 0)
	g := group(1, benchGroup, benchSize)
	for b.Loop() {
		if err := s.Append(g); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchGroup)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAppendAtCap appends to a spool held at its cap by a sink that
// never acks: every Append also evicts a group (the outage case).
func BenchmarkAppendAtCap(b *testing.B) {
	const maxBytes = 8 << 20
	s := benchSpool(b, maxBytes)
	g := group(1, benchGroup, benchSize)
	for range 2 * maxBytes / (benchGroup * benchSize) {
		if err := s.Append(g); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if err := s.Append(g); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchGroup)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkRawBolt(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucketRecords); return err }); err != nil {
		b.Fatal(err)
	}
	g := group(1, benchGroup, benchSize)
	var seq uint64
	for b.Loop() {
		err := db.Update(func(tx *bolt.Tx) error {
			rb := tx.Bucket(bucketRecords)
			rb.FillPercent = 1.0
			for _, d := range g {
				seq++
				if err := rb.Put(seqKey(seq), d); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchGroup)/b.Elapsed().Seconds(), "events/s")
}

func benchSpool(b *testing.B, maxBytes int64) *Spool {
	s, err := Open(Options{Path: filepath.Join(b.TempDir(), "spool.db"), MaxBytes: maxBytes, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	if err := s.AddSink("slow"); err != nil {
		b.Fatal(err)
	}
	return s
}
