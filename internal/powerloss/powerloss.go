// Package powerloss holds what the power-loss tests share: how many seeded
// runs each does (Runs), a seeded crashable disk (Disk: pebble's
// vfs.NewCrashableMem and a CrashClone keeping a seeded share of what was
// not synced), and a file system that cuts the power before a chosen
// operation (CutFS). The tests run a store on them, cut the power and check
// what survives (docs/FORMAT.md, "Power loss").
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

// Seeds calls run with each seed, 0 to Runs(t, def)-1.
func Seeds(t testing.TB, def int, run func(seed uint64)) {
	t.Helper()
	for seed := range Runs(t, def) {
		run(uint64(seed))
	}
}
