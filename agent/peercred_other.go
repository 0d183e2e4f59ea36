//go:build !linux

package agent

func peerCredPID(fd int) int { return 0 }
