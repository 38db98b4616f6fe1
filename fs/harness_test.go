package fs_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
)

var testPassword = []byte("correct horse battery staple")

// fastKDF keeps vault creation cheap in tests.
var fastKDF = vault.CreateOptions{KDF: vault.KDFParams{Time: 1, MemoryK: 64, Threads: 1}}

// requireFUSE skips the test unless it can mount: root and /dev/fuse.
func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping FUSE test: needs root to mount with mount(2) (CI runs as root)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping FUSE test: /dev/fuse is missing: %v", err)
	}
}

// newVault creates a vault with fast KDF parameters and returns its home.
func newVault(t testing.TB, opt vault.CreateOptions) string {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	if opt.KDF == (vault.KDFParams{}) {
		opt.KDF = fastKDF.KDF
	}
	if err := vault.Create(home, testPassword, opt); err != nil {
		t.Fatal(err)
	}
	return home
}

type testMount struct {
	t    testing.TB
	home string
	dir  string
	v    *vault.Vault
	m    *fs.Mounted
	done bool
}

// mountVault mounts the vault in home on a fresh directory; the mount is
// undone in t.Cleanup even if the test fails.
func mountVault(t testing.TB, home string) *testMount {
	t.Helper()
	return mountVaultOpt(t, home, fs.Options{})
}

func mountVaultOpt(t testing.TB, home string, opt fs.Options) *testMount {
	t.Helper()
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if os.Getenv("FINCRYPT_TEST_DEBUG") != "" {
		opt.Debug = true
		opt.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m, err := fs.Mount(v, dir, opt)
	if err != nil {
		v.Close()
		t.Fatal(err)
	}
	tm := &testMount{t: t, home: home, dir: dir, v: v, m: m}
	t.Cleanup(func() { tm.unmount() })
	return tm
}

func (tm *testMount) path(p ...string) string {
	return filepath.Join(append([]string{tm.dir}, p...)...)
}

// unmount unmounts and closes the vault; a busy mount is detached lazily.
func (tm *testMount) unmount() {
	if tm.done {
		return
	}
	tm.done = true
	var err error
	for i := 0; i < 20; i++ {
		if err = tm.m.Unmount(); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		tm.t.Errorf("unmount %s: %v; detaching", tm.dir, err)
		syscall.Unmount(tm.dir, syscall.MNT_DETACH)
		done := make(chan struct{})
		go func() { tm.m.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
	tm.v.Close()
}

// check runs the offline check on home and fails the test on any problem.
func checkVault(t testing.TB, home string) {
	t.Helper()
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var out bytes.Buffer
	n, err := fs.Check(v, &out)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if n != 0 {
		t.Fatalf("check found %d problems:\n%s", n, out.String())
	}
}

func writeFile(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: got %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
	}
}

func wantErrno(t testing.TB, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v (%s)", what, err, want, strings.ToUpper(want.Error()))
	}
}
