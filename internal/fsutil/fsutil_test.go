package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, content := range []string{"first", "second, longer than the first"} {
		if err := WriteFileAtomic(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != content {
			t.Fatalf("read %q, %v; want %q", b, err, content)
		}
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}

func TestLock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	if Locked(p) {
		t.Fatal("locked before anyone took it")
	}
	f, err := Lock(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(p); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v", err)
	}
	if !Locked(p) {
		t.Fatal("Locked says free while held")
	}
	f.Close()
	if Locked(p) {
		t.Fatal("still locked after close")
	}
}

func TestUnescapeAndMounts(t *testing.T) {
	if got := unescape(`/a\040b\134c`); got != `/a b\c` {
		t.Fatalf("unescape: %q", got)
	}
	ms, err := Mounts()
	if err != nil {
		t.Skip("no /proc/self/mountinfo:", err)
	}
	if _, ok := FindMount("/"); !ok || len(ms) == 0 {
		t.Fatal("the root mount is not listed")
	}
	if IsMountPoint(t.TempDir()) {
		t.Fatal("a fresh temp dir is not a mount point")
	}
}
