package mediator

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPebbleStoreLocked: a store open in this process cannot be opened
// again, under its own name or another (relative, through a symbolic
// link), nor from another process: each says ErrLocked. Once closed, it
// opens again. Before, a second open in the same process failed with
// Pebble's "lock held by current process", which is not ErrLocked.
func TestPebbleStoreLocked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	s, err := OpenPebbleStore(dir, PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{dir, dir + "/", rel, link} {
		s2, err := OpenPebbleStore(name, PebbleOptions{})
		if !errors.Is(err, ErrLocked) {
			if s2 != nil {
				s2.Close()
			}
			t.Fatalf("second open in this process as %s: %v, want ErrLocked", name, err)
		}
	}
	// Another process.
	cmd := exec.Command(os.Args[0], "-test.run=^TestPebbleStoreLockedHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "FINCRYPT_TEST_LOCKED_STORE="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "helper: ErrLocked") {
		t.Fatalf("open in another process: %v\n%s", err, out)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenPebbleStore(link, PebbleOptions{})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPebbleStoreLockedHelper is TestPebbleStoreLocked's other process:
// it opens the store named by FINCRYPT_TEST_LOCKED_STORE and says whether
// that failed with ErrLocked.
func TestPebbleStoreLockedHelper(t *testing.T) {
	dir := os.Getenv("FINCRYPT_TEST_LOCKED_STORE")
	if dir == "" {
		t.Skip("run by TestPebbleStoreLocked")
	}
	s, err := OpenPebbleStore(dir, PebbleOptions{})
	if err == nil {
		s.Close()
		t.Fatal("helper: opened a store another process has open")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("helper: %v", err)
	}
	os.Stdout.WriteString("helper: ErrLocked\n")
}
