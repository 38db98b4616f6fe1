//go:build race

package vault

// raceEnabled: the race detector drops pooled values at random, so
// allocation counts do not hold under it.
const raceEnabled = true
