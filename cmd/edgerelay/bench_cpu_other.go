//go:build !linux || !(amd64 || arm64)

package main

import "time"

// threadCPU cannot be read on this platform.
func threadCPU() time.Duration { return -1 }

// processCPU is not measured on this platform.
func processCPU() time.Duration { return -1 }
