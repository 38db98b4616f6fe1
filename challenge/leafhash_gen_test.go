package challenge

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestLeafHashAssemblyIsGenerated: leafhash_amd64.s is what leafhash_gen.go
// writes, so that a change to the generator (or a hand edit of the
// assembly) cannot land with the other out of date.
func TestLeafHashAssemblyIsGenerated(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the Go toolchain")
	}
	gen, err := os.ReadFile("leafhash_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "leafhash_gen.go"), gen, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", "leafhash_gen.go")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run leafhash_gen.go: %v\n%s", err, out)
	}
	want, err := os.ReadFile(filepath.Join(dir, "leafhash_amd64.s"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("leafhash_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("leafhash_amd64.s differs from what leafhash_gen.go writes: run `go run leafhash_gen.go` in challenge/")
	}
}
