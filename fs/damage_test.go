package fs_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// vaultWithFiles makes a vault holding n small files, unmounted cleanly.
func vaultWithFiles(t *testing.T, n int) (home string, files map[string][]byte) {
	t.Helper()
	home = newVault(t, vault.CreateOptions{ChunkSize: 4096})
	tm := mountVault(t, home)
	files = map[string][]byte{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("f%02d", i)
		files[name] = randBytes(uint64(i+1), 5000+i*100) // two chunks each
		writeFile(t, tm.path(name), files[name])
	}
	tm.unmount()
	return home, files
}

// storeFiles returns the chunk files of a store and their contents.
func storeFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && filepath.Base(p) != chunkstore.OwnerFile {
			b, _ := os.ReadFile(p)
			got[p] = b
		}
		return nil
	})
	return got
}

// tryMount mounts the vault in home and returns the mount error; a mount
// that succeeds is unmounted again.
func tryMount(t *testing.T, home string) error {
	t.Helper()
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	m, err := fs.Mount(v, t.TempDir(), fs.Options{})
	if err == nil {
		m.Unmount()
	}
	return err
}

func runCheck(t *testing.T, home string) (int, string) {
	t.Helper()
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var out bytes.Buffer
	n, err := fs.Check(v, &out)
	if err != nil {
		t.Fatalf("check stopped instead of reporting: %v\n%s", err, out.String())
	}
	return n, out.String()
}

func indexFiles(t *testing.T, home, suffix string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(home, vault.IndexDirName, "*"+suffix))
	if err != nil || len(m) == 0 {
		t.Fatalf("no %s file in the index (%v)", suffix, err)
	}
	return m
}

// TestDamagedIndexDeletesNothing damages a cleanly unmounted vault's index
// in each way a disk or a person can, and expects the mount to refuse with a
// clear error, no chunk to be deleted or changed, and check to report it.
func TestDamagedIndexDeletesNothing(t *testing.T) {
	fs.UseFileStore(t) // works on chunk files
	requireFUSE(t)
	cases := []struct {
		name    string
		damage  func(t *testing.T, home string)
		mountIs error    // the mount's error wraps this (nil: any error)
		report  []string // check's report holds each
	}{
		{
			name: "torn log",
			damage: func(t *testing.T, home string) {
				for _, p := range indexFiles(t, home, ".log") {
					st, err := os.Stat(p)
					if err != nil {
						t.Fatal(err)
					}
					if st.Size() < 1024 {
						continue // an empty log of a later generation
					}
					if err := os.Truncate(p, st.Size()/2); err != nil {
						t.Fatal(err)
					}
				}
			},
			mountIs: fs.ErrIndexDamaged,
			report:  []string{"does not match the record of the last clean unmount", "lost:", "fincrypt recover"},
		},
		{
			name: "missing table file",
			damage: func(t *testing.T, home string) {
				flushIndex(t, home)
				for _, p := range indexFiles(t, home, ".sst") {
					if err := os.Remove(p); err != nil {
						t.Fatal(err)
					}
				}
			},
			report: []string{"fincrypt recover"},
		},
		{
			name: "emptied index folder",
			damage: func(t *testing.T, home string) {
				dir := filepath.Join(home, vault.IndexDirName)
				ents, err := os.ReadDir(dir)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range ents {
					if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
						t.Fatal(err)
					}
				}
			},
			mountIs: fs.ErrIndexMissing,
			report:  []string{"is missing or empty", "fincrypt recover"},
		},
		{
			name: "another vault's index",
			damage: func(t *testing.T, home string) {
				other, _ := vaultWithFiles(t, 3)
				dir := filepath.Join(home, vault.IndexDirName)
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(filepath.Join(other, vault.IndexDirName), dir); err != nil {
					t.Fatal(err)
				}
			},
			mountIs: meta.ErrForeignIndex,
			report:  []string{"does not open with this vault's key", "fincrypt recover"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			home, _ := vaultWithFiles(t, 20)
			v, err := vault.Open(home, testPassword, vault.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			store := v.StoreDir()
			before := storeFiles(t, store)
			if len(before) < 40 {
				t.Fatalf("only %d chunks stored for 20 two-chunk files", len(before))
			}
			if n, out := runCheck(t, home); n != 0 {
				t.Fatalf("check before the damage: %d problems\n%s", n, out)
			}
			tc.damage(t, home)

			err = tryMount(t, home)
			if err == nil {
				t.Fatal("the mount accepted the damaged index")
			}
			if tc.mountIs != nil && !errors.Is(err, tc.mountIs) {
				t.Errorf("mount error %q does not wrap %q", err, tc.mountIs)
			}
			if !strings.Contains(err.Error(), "recover") {
				t.Errorf("mount error does not say how to get the index back: %v", err)
			}
			t.Logf("mount refused: %v", err)
			n, out := runCheck(t, home)
			if n == 0 {
				t.Errorf("check found no problem in the damaged index:\n%s", out)
			}
			for _, want := range tc.report {
				if !strings.Contains(out, want) {
					t.Errorf("check report lacks %q:\n%s", want, out)
				}
			}
			t.Logf("check:\n%s", out)
			// A second mount attempt must not have changed its mind either.
			if err := tryMount(t, home); err == nil {
				t.Error("a second mount accepted the damaged index")
			}
			after := storeFiles(t, store)
			for p, b := range before {
				if !bytes.Equal(after[p], b) {
					t.Errorf("chunk %s was deleted or changed", p)
				}
			}
		})
	}
}

func flushIndex(t *testing.T, home string) {
	t.Helper()
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	x, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCollectOnlyAfterCleanUnmount: chunks no file references are deleted
// by a mount that follows a clean unmount, and kept by one that follows a
// crash (no clean-unmount record), when the index cannot be known whole.
func TestCollectOnlyAfterCleanUnmount(t *testing.T) {
	fs.UseFileStore(t) // works on chunk files
	requireFUSE(t)
	home, files := vaultWithFiles(t, 2)
	v, err := vault.Open(home, testPassword, vault.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	store := v.StoreDir()
	stray := func() string {
		id := chunkstore.NewID()
		s, err := chunkstore.Open(store)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(id, []byte("left by a crash")); err != nil {
			t.Fatal(err)
		}
		return s.Path(id)
	}

	// As after a crash: no clean-unmount record.
	p := stray()
	if err := os.Remove(filepath.Join(home, fs.CleanFileName)); err != nil {
		t.Fatal(err)
	}
	if n, out := runCheck(t, home); n != 0 || !strings.Contains(out, "kept until a clean unmount") {
		t.Fatalf("check after an unclean stop: %d problems\n%s", n, out)
	}
	tm := mountVault(t, home)
	for name, want := range files {
		mustEqual(t, name, readFile(t, tm.path(name)), want)
	}
	tm.unmount()
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("a mount after an unclean stop deleted an unreferenced chunk: %v", err)
	}
	// After a clean unmount the index is known whole: the chunk goes.
	if _, err := os.Stat(filepath.Join(home, fs.CleanFileName)); err != nil {
		t.Fatalf("a clean unmount left no record: %v", err)
	}
	tm = mountVault(t, home)
	if _, err := os.Stat(filepath.Join(home, fs.CleanFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the record outlived the mount that read it: %v", err)
	}
	tm.unmount()
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a mount after a clean unmount kept an unreferenced chunk: %v", err)
	}
	checkVault(t, home)
}
