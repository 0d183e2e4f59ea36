package promptio

import "golang.org/x/sys/unix"

const supported = true

// readable reports whether a read on fd would not block: bytes, an end of
// stream or an error are waiting.
func readable(fd uintptr) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, 0)
	return err == nil && n > 0 && p[0].Revents != 0
}
