package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// SpoolFile is the spool's file name inside the state directory.
const SpoolFile = "spool.db"

// Spool is the spool the agent opened: spool.Spool on disk, or
// spool.Memory when the spool is off or cannot be opened. It is the whole
// method set the two share, not an interface of one user: the agent picks
// the implementation at start and hands the one value to each part, which
// takes only what it needs (the writer pipeline.Store, the forwarders
// relay.Queue, the sink group the cursor methods, the reports Stat).
type Spool interface {
	relay.Queue // ReadBatch, AckFrom, Ready
	Append(data [][]byte) error
	AddSink(name string) error
	RemoveSink(name string) (spool.SinkStat, error)
	SinkStat(name string) (spool.SinkStat, error)
	Stat() spool.Stat
	Close() error
}

// openStore opens the spool named by the configuration: bbolt on disk, or
// memory-only with EDGERELAY_SPOOL=off. A disk that cannot be written at
// start (full, read-only, the state directory missing) does not stop the
// agent: the spool starts degraded, holding events in memory within
// EDGERELAY_SPOOL_MEMORY_MAX_BYTES, and goes to disk once it can, like a
// disk that fails later. A spool held by another process is a start-up
// error, since two agents on one state directory would each lose the
// other's events. The counters of the previous run resume from the file.
func (a *Agent) openStore() (st Spool, durable bool, err error) {
	if !a.cfg.Spool {
		a.log.Warn("spool off: memory-only mode; events are lost on a crash or restart", "cap_bytes", a.cfg.SpoolMemoryMax)
		return spool.NewMemory(a.cfg.SpoolMemoryMax), false, nil
	}
	if fi, err := os.Stat(a.cfg.StateDir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		a.log.Warn("state directory is accessible to other users; it should be 0700", "dir", a.cfg.StateDir, "mode", fi.Mode().Perm().String())
	}
	s, err := spool.Open(spool.Options{
		Path:           filepath.Join(a.cfg.StateDir, SpoolFile),
		MaxBytes:       a.cfg.SpoolMaxBytes,
		MemoryMaxBytes: a.cfg.SpoolMemoryMax,
		Counters:       a.countersForCommit,
		Logger:         a.log.With("part", "spool"),
	})
	switch {
	case err == nil:
		st := s.Stat()
		if st.Quarantined > 0 {
			a.log.Error("corrupt spool file moved aside; started a fresh spool", "quarantined", st.Quarantined, "dir", a.cfg.StateDir)
		}
		if b := s.TakeSavedCounters(); b != nil {
			a.restoreCounters(b, st.Sinks)
		}
		a.diskSpool.Store(s)
		return s, true, nil
	case errors.Is(err, spool.ErrLocked):
		return nil, false, fmt.Errorf("EDGERELAY_STATE_DIR: %w", err)
	default: // a fresh file damaged at once
		a.log.Error("cannot open the disk spool; running memory-only (events are lost on a crash)", "dir", a.cfg.StateDir, "err", err)
		return spool.NewMemory(a.cfg.SpoolMemoryMax), false, nil
	}
}

// forgetStaleSinks removes the cursors of sinks that a previous run had and
// this one does not: a stale cursor would pin every record forever. What
// such a sink had not delivered is counted as dropped (sink_removed).
func (a *Agent) forgetStaleSinks() {
	live := a.sinks.Names()
	for name := range a.spool.Stat().Sinks {
		if slices.Contains(live, name) {
			continue
		}
		st, err := a.spool.RemoveSink(name)
		if err != nil {
			continue
		}
		a.counters.AddDropped("spool", "sink_removed", st.Pending)
		a.log.Warn("removed the spool cursor of a sink that is no longer configured", "sink", name, "undelivered", st.Pending)
	}
}
