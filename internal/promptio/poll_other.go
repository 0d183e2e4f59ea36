//go:build !linux

package promptio

// Elsewhere connections are not watched and Yield never finds an answer.
const supported = false

func readable(uintptr) bool { return false }
