package btcdtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", errors.New("btcdtest: no go.mod above the working directory")
		}
		d = p
	}
}

// Binary returns the path of the btcd binary: $FINCRYPT_BTCD, or
// tools/bin/btcd under the repository root, built there first if missing.
func Binary() (string, error) {
	binOnce.Do(func() { binPath, binErr = findOrBuild() })
	return binPath, binErr
}

func findOrBuild() (string, error) {
	if p := os.Getenv("FINCRYPT_BTCD"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("FINCRYPT_BTCD=%s: %w", p, err)
		}
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bindir := filepath.Join(root, "tools", "bin")
	p := filepath.Join(bindir, "btcd")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(bindir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(root, "tools", ".btcd-build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("btcdtest: lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(p); err == nil { // built by another package meanwhile
		return p, nil
	}
	goBin := "go"
	if gr := os.Getenv("GOROOT"); gr != "" {
		if _, err := os.Stat(filepath.Join(gr, "bin", "go")); err == nil {
			goBin = filepath.Join(gr, "bin", "go")
		}
	}
	cmd := exec.Command(goBin, "install", "github.com/btcsuite/btcd@"+BtcdVersion, "github.com/btcsuite/btcd/cmd/btcctl@"+BtcdVersion)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOBIN="+bindir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("btcdtest: building btcd %s: %v\n%s", BtcdVersion, err, out)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("btcdtest: go install did not produce %s", p)
	}
	return p, nil
}
