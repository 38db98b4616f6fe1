package vault

import (
	"path/filepath"
	"testing"
)

// TestStoreDir: the config's store setting is where the sealed chunks
// go: empty means home/store, a relative path is taken from the home
// (so a vault directory moved as a whole keeps its store), an absolute
// one is used as it is.
func TestStoreDir(t *testing.T) {
	home := t.TempDir()
	abs := filepath.Join(t.TempDir(), "fast")
	for _, c := range []struct{ store, want string }{
		{"", filepath.Join(home, StoreDirName)},
		{"chunks", filepath.Join(home, "chunks")},
		{"../elsewhere", filepath.Join(filepath.Dir(home), "elsewhere")},
		{abs, abs},
	} {
		v := &Vault{Home: home, Config: &Config{Store: c.store}}
		if got := v.StoreDir(); got != c.want {
			t.Errorf("store = %q: StoreDir %q, want %q", c.store, got, c.want)
		}
	}
	if got, want := (&Vault{Home: home}).IndexDir(), filepath.Join(home, IndexDirName); got != want {
		t.Errorf("IndexDir %q, want %q", got, want)
	}
}

// TestCreateWithDefaults: a vault created with the zero options gets the
// documented defaults (RFC 9106's Argon2id parameters, 1 MiB chunks)
// written in its key file, and opens with its password.
func TestCreateWithDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: derives a 64 MiB Argon2id key twice")
	}
	home := filepath.Join(t.TempDir(), "home")
	if err := Create(home, []byte("pw"), CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kf, err := ReadKeyFile(home)
	if err != nil {
		t.Fatal(err)
	}
	if want := (KDFParams{Time: 3, MemoryK: 64 << 10, Threads: 4}); kf.Params != want || kf.ChunkSize != 1<<20 {
		t.Fatalf("defaults written: %+v, chunk size %d; want %+v and 1 MiB", kf.Params, kf.ChunkSize, want)
	}
	if _, err := Open(home, []byte("pw"), OpenOptions{}); err != nil {
		t.Fatal(err)
	}
}
