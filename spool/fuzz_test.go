package spool

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzOpen treats the spool file as outside input: it survives crashes,
// disks and people. Whatever bytes it holds, Inspect and Dump return (an
// error is fine, a crash or hang is not), and Open succeeds, quarantining
// the file if need be, with a spool that works and whose accounting adds up.
// The seeds are bbolt files with 1 KiB pages (valid, with branch pages,
// truncated, damaged in the middle) and non-files.
func FuzzOpen(f *testing.F) {
	f.Fuzz(func(t *testing.T, file []byte) {
		path := filepath.Join(t.TempDir(), "spool.db")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = Inspect(path, time.Second)
		_ = Dump(path, "", 0, io.Discard)

		// No fsync: the target is the parsing, and fsyncs would cut the
		// executions per second a hundredfold.
		s, err := Open(Options{Path: path, Now: func() time.Time { return fixedNow }, Logger: slog.New(slog.DiscardHandler), noSync: true})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer func() {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}()
		checkIdentity(t, s.Stat())
		for _, name := range s.Sinks() {
			if _, err := s.Read(name, 100, 0); err != nil {
				t.Fatalf("Read(%q) of a resumed sink: %v", name, err)
			}
		}
		if err := s.AddSink("fuzz"); err != nil {
			t.Fatal(err)
		}
		if err := s.Append([][]byte{[]byte(`{"id":"x"}`)}); err != nil {
			t.Fatal(err)
		}
		recs, err := s.Read("fuzz", 10, 0)
		if err != nil || len(recs) != 1 || string(recs[0].Data) != `{"id":"x"}` || recs[0].Seq != s.Stat().LastSeq {
			t.Fatalf("Read after Append = %v, %v", recs, err)
		}
		checkIdentity(t, s.Stat())
	})
}
