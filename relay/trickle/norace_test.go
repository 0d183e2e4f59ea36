//go:build !race

package trickle

const raceEnabled = false
