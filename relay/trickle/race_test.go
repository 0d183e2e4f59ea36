//go:build race

package trickle

// raceEnabled: the race detector makes every request about 7 times slower.
const raceEnabled = true
