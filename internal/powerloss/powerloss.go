// Package powerloss holds what the power-loss tests share: how many seeded
// runs each does. The tests themselves run a store on pebble's crashable
// in-memory file system (vfs.NewCrashableMem), cut the power at a seeded
// step and check what survives (docs/FORMAT.md, "Power loss").
package powerloss

import (
	"os"
	"strconv"
	"testing"
)

// DefaultRuns is how many seeds a power-loss test runs in `make test`.
const DefaultRuns = 30

// Runs is how many seeds to run: FINCRYPT_POWERLOSS_RUNS (`make stress`
// sets it), else def.
func Runs(t testing.TB, def int) int {
	t.Helper()
	s := os.Getenv("FINCRYPT_POWERLOSS_RUNS")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("FINCRYPT_POWERLOSS_RUNS=%q: want a positive count", s)
	}
	return n
}
