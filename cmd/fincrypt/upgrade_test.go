package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
)

const (
	v1Sample         = "../../testdata/vault-v1"
	v1SamplePassword = "fincrypt sample v1"
)

// copyTree copies the sample vault to a new home.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// storeChunks reads every chunk of a store (chunk files or packs).
func storeChunks(t *testing.T, dir string) (map[meta.ChunkID][]byte, int) {
	t.Helper()
	s, err := chunkstore.OpenExisting(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := map[meta.ChunkID][]byte{}
	err = s.List(func(id meta.ChunkID) error {
		b, err := s.Get(id, nil)
		m[id] = b
		return err
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m, s.Format()
}

// TestUpgradeV1Sample upgrades a copy of the format 1 sample vault: the
// store becomes format 2 with no chunk file left, `fincrypt check` finds it
// consistent (every chunk decrypts and matches the index), and a second
// upgrade changes nothing.
func TestUpgradeV1Sample(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	copyTree(t, v1Sample, home)
	pw := writePassword(t, v1SamplePassword)
	before, format := storeChunks(t, filepath.Join(home, "store"))
	if format != chunkstore.FormatFiles || len(before) == 0 {
		t.Fatalf("the sample's store: format %d, %d chunks", format, len(before))
	}
	r := fincrypt(t, nil, "--home", home, "upgrade", "--password-file", pw)
	if r.code != 0 || !strings.Contains(r.stdout, "now in format 2") {
		t.Fatalf("upgrade: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	after, format := storeChunks(t, filepath.Join(home, "store"))
	if format != chunkstore.FormatPacks || len(after) != len(before) {
		t.Fatalf("after the upgrade: format %d, %d chunks, want 2 and %d", format, len(after), len(before))
	}
	for id, b := range before {
		if !bytes.Equal(after[id], b) {
			t.Fatalf("chunk %s changed in the upgrade", id)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(home, "store"))
	for _, e := range ents {
		if e.IsDir() && len(e.Name()) == 2 {
			t.Fatalf("format 1 directory %s left after the upgrade", e.Name())
		}
	}
	if r := fincrypt(t, nil, "--home", home, "check", "--password-file", pw); r.code != 0 {
		t.Fatalf("check after the upgrade: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := fincrypt(t, nil, "--home", home, "upgrade", "--password-file", pw); r.code != 0 || !strings.Contains(r.stdout, "already in format 2") {
		t.Fatalf("second upgrade: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestUpgradeKilledMidway: `fincrypt upgrade` of a format 1 store with
// 2,000 chunks (the sample's and 64 KiB fillers, 128 MiB, so that packs are
// synced and chunk files removed several times) is killed with SIGKILL once
// it reports half of them moved; the store then still holds every chunk
// (from its file or its pack), and a rerun finishes: format 2, every chunk
// intact, and `fincrypt check` finds the sample's files whole.
func TestUpgradeKilledMidway(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	copyTree(t, v1Sample, home)
	pw := writePassword(t, v1SamplePassword)
	store := filepath.Join(home, "store")
	buf := make([]byte, 64<<10)
	for range 2000 {
		id := chunkstore.NewID()
		rand.Read(buf)
		h := id.String()
		if err := os.MkdirAll(filepath.Join(store, h[:2]), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(store, h[:2], h), buf, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := storeChunks(t, store)

	cmd := exec.Command(binPath, "--home", home, "upgrade", "--password-file", pw)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killedAt := ""
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var done, total int
		if _, err := fmt.Sscanf(sc.Text(), "upgrade: %d of %d", &done, &total); err == nil && done*2 >= total && done < total {
			cmd.Process.Signal(syscall.SIGKILL)
			killedAt = sc.Text()
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	werr := cmd.Wait()
	if killedAt == "" {
		t.Fatalf("the upgrade ended before it could be killed midway: %v", werr)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("the upgrade was not killed (%v); it printed %q", werr, killedAt)
	}
	mid, format := storeChunks(t, store)
	if len(mid) != len(before) || format != chunkstore.FormatPacks {
		t.Fatalf("after kill -9 at %q: %d chunks (format %d), want %d", killedAt, len(mid), format, len(before))
	}
	r := fincrypt(t, nil, "--home", home, "upgrade", "--password-file", pw)
	if r.code != 0 {
		t.Fatalf("upgrade rerun: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	after, format := storeChunks(t, store)
	if format != chunkstore.FormatPacks || len(after) != len(before) {
		t.Fatalf("after the rerun: format %d, %d chunks, want %d", format, len(after), len(before))
	}
	for id, b := range before {
		if !bytes.Equal(after[id], b) {
			t.Fatalf("chunk %s changed", id)
		}
	}
	if r := fincrypt(t, nil, "--home", home, "check", "--password-file", pw); !strings.Contains(r.stdout+r.stderr, "unreferenced") && r.code != 0 {
		t.Fatalf("check after the rerun: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
