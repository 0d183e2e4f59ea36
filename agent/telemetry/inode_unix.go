//go:build unix

package telemetry

import (
	"os"
	"syscall"
)

// inodeOf returns the file's inode number, to notice a segment replaced
// under the same name.
func inodeOf(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
