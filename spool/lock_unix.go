//go:build unix

package spool

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// lockFile takes flock on f, exclusive or shared, polling until timeout as
// bbolt does. bbolt later locks the same open file again, which flock
// grants at once; holding the lock from the start means the checks before
// bbolt opens the file, and a quarantine, never race a live writer.
func lockFile(f *os.File, exclusive bool, timeout time.Duration) error {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	start := time.Now()
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return &os.PathError{Op: "flock", Path: f.Name(), Err: err}
		}
		if time.Since(start) >= timeout {
			return errLockTimeout
		}
		time.Sleep(50 * time.Millisecond)
	}
}
