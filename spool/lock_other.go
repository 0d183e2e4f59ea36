//go:build !unix

package spool

import (
	"os"
	"time"
)

// lockFile leaves locking to bbolt where flock does not exist.
func lockFile(*os.File, bool, time.Duration) error { return nil }
