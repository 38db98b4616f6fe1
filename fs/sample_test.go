package fs_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
)

// The v1 sample under testdata/vault-v1 is a vault written by format 1 of
// the key file, index and chunk store. It must keep loading: a format change
// bumps a version and keeps reading this. Regenerate it (only when adding a
// new version's sample) with FINCRYPT_WRITE_SAMPLE=1.
const (
	sampleDir      = "../testdata/vault-v1"
	samplePassword = "fincrypt sample v1"
)

// sampleTree is what the sample holds: path -> content ("->x" is a symlink to x).
var sampleTree = map[string]string{
	"readme.txt":              "Fincrypt format-1 sample vault.\n",
	"docs/notes.md":           strings.Repeat("a line of notes\n", 600), // spans two 4 KiB chunks and more
	"docs/empty":              "",
	"docs/ünïcödé name ✓.txt": "odd bytes in names\n",
	"link":                    "->docs/notes.md",
}

func writeSampleTree(t *testing.T, root string) {
	for p, content := range sampleTree {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Setxattr(filepath.Join(root, "readme.txt"), "user.sample", []byte("xattr value"), 0); err != nil {
		t.Fatal(err)
	}
}

func TestFormatV1SampleLoads(t *testing.T) {
	requireFUSE(t)
	if os.Getenv("FINCRYPT_WRITE_SAMPLE") != "" {
		os.RemoveAll(sampleDir)
		if err := vault.Create(sampleDir, []byte(samplePassword), vault.CreateOptions{KDF: fastKDF.KDF, ChunkSize: 4096}); err != nil {
			t.Fatal(err)
		}
		v, err := vault.Open(sampleDir, []byte(samplePassword), vault.OpenOptions{Lock: true})
		if err != nil {
			t.Fatal(err)
		}
		mnt := t.TempDir()
		m, err := fs.Mount(v, mnt, fs.Options{})
		if err != nil {
			t.Fatal(err)
		}
		writeSampleTree(t, mnt)
		if err := m.Unmount(); err != nil {
			t.Fatal(err)
		}
		v.Close()
		os.Remove(filepath.Join(sampleDir, vault.LockFileName))
	}

	// Work on a copy: mounting writes to the index.
	home := filepath.Join(t.TempDir(), "home")
	if out, err := exec.Command("cp", "-a", sampleDir, home).CombinedOutput(); err != nil {
		t.Fatalf("copying the sample: %v\n%s", err, out)
	}
	v, err := vault.Open(home, []byte(samplePassword), vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatalf("opening the v1 sample: %v", err)
	}
	var report bytes.Buffer
	if n, err := fs.Check(v, &report); err != nil || n != 0 {
		t.Fatalf("check of the v1 sample: %d problems, %v\n%s", n, err, report.String())
	}
	mnt := t.TempDir()
	m, err := fs.Mount(v, mnt, fs.Options{})
	if err != nil {
		t.Fatalf("mounting the v1 sample: %v", err)
	}
	defer v.Close()
	defer m.Unmount()
	for p, want := range sampleTree {
		full := filepath.Join(mnt, p)
		if target, ok := strings.CutPrefix(want, "->"); ok {
			if got, err := os.Readlink(full); err != nil || got != target {
				t.Errorf("%s: readlink %q, %v; want %q", p, got, err, target)
			}
			continue
		}
		got, err := os.ReadFile(full)
		if err != nil || string(got) != want {
			t.Errorf("%s: %d bytes, %v; want %d bytes", p, len(got), err, len(want))
		}
	}
	buf := make([]byte, 64)
	n, err := syscall.Getxattr(filepath.Join(mnt, "readme.txt"), "user.sample", buf)
	if err != nil || string(buf[:n]) != "xattr value" {
		t.Errorf("xattr: %q, %v", buf[:n], err)
	}
}
