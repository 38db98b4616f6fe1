// Package testbin builds the fincrypt binary once for a test package whose
// tests run real daemon processes.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// SkipEnv, set to 1, leaves the binary unbuilt: for runs of a package's
// in-process tests alone (make mutate's MUTATE_RUN), which would otherwise
// link the whole fincrypt binary for every mutant. *bin then names a file
// that does not exist, so a test that runs the binary fails, loudly.
const SkipEnv = "FINCRYPT_TESTBIN_SKIP"

// Main builds the fincrypt binary into a temporary directory, stores its
// path in *bin, runs the package's tests and exits with their status. Use it
// as the body of TestMain.
func Main(m interface{ Run() int }, bin *string) {
	if os.Getenv(SkipEnv) == "1" {
		*bin = filepath.Join(os.TempDir(), "fincrypt-not-built-"+SkipEnv)
		os.Exit(m.Run())
	}
	tmp, err := os.MkdirTemp("", "fincrypt-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = filepath.Join(tmp, "fincrypt")
	build := exec.Command("go", "build", "-o", *bin, "github.com/fincrypt/fincrypt/cmd/fincrypt")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building fincrypt:", err)
		os.RemoveAll(tmp)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}
