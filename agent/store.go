package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/livepeer/edgerelay/spool"
)

// SpoolFile is the spool's file name inside the state directory.
const SpoolFile = "spool.db"

// openStore opens the spool named by the configuration: bbolt on disk, or
// memory-only with EDGERELAY_SPOOL=off. A spool that cannot be opened for
// an I/O reason (read-only or full file system) degrades to memory-only,
// loudly; one held by another process is a start-up error, since two agents
// on one state directory would each lose the other's events.
func (a *Agent) openStore() (store, func() bool, error) {
	memory := func() (store, func() bool, error) {
		return spool.NewMemory(a.cfg.RingMaxBytes), func() bool { return false }, nil
	}
	if !a.cfg.Spool {
		a.log.Warn("spool off: memory-only mode; events are lost on a crash or restart", "cap_bytes", a.cfg.RingMaxBytes)
		return memory()
	}
	if err := os.MkdirAll(a.cfg.StateDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("EDGERELAY_STATE_DIR: %w", err)
	}
	if fi, err := os.Stat(a.cfg.StateDir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		a.log.Warn("state directory is accessible to other users; it should be 0700", "dir", a.cfg.StateDir, "mode", fi.Mode().Perm().String())
	}
	s, err := spool.Open(spool.Options{
		Path:     filepath.Join(a.cfg.StateDir, SpoolFile),
		MaxBytes: a.cfg.SpoolMaxBytes,
		Logger:   a.log.With("part", "spool"),
	})
	switch {
	case err == nil:
		if q := s.Stat().Quarantined; q > 0 {
			a.log.Error("corrupt spool file moved aside; started a fresh spool", "quarantined", q, "dir", a.cfg.StateDir)
		}
		return s, func() bool { return true }, nil
	case errors.Is(err, spool.ErrLocked):
		return nil, nil, fmt.Errorf("EDGERELAY_STATE_DIR: %w", err)
	default:
		a.log.Error("cannot open the disk spool; running memory-only (events are lost on a crash)", "dir", a.cfg.StateDir, "err", err)
		return memory()
	}
}

// isNotDurable reports whether an append was accepted into memory only
// because the disk spool is failing.
func isNotDurable(err error) bool { return errors.Is(err, spool.ErrNotDurable) }

// forgetStaleSinks removes the cursors of sinks that a previous run had and
// this one does not: a stale cursor would pin every record forever. What
// such a sink had not delivered is counted as dropped (sink_removed).
func (a *Agent) forgetStaleSinks() {
	lister, ok := a.store.(interface{ Sinks() []string })
	if !ok {
		return
	}
	for _, name := range lister.Sinks() {
		a.sinksMu.Lock()
		_, live := a.sinks[name]
		a.sinksMu.Unlock()
		if live {
			continue
		}
		st, err := a.store.RemoveSink(name)
		if err != nil {
			continue
		}
		a.counters.dropped.add("spool/sink_removed", st.Pending)
		a.log.Warn("removed the spool cursor of a sink that is no longer configured", "sink", name, "undelivered", st.Pending)
	}
}
