// Package fsutil holds the few file-system primitives every daemon needs:
// crash-safe file replacement, an exclusive directory lock, and a view of the
// mount table.
package fsutil

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// ErrLocked means another process holds the lock.
var ErrLocked = errors.New("locked by another process")

// WriteFileAtomic writes data to a temporary file beside path, syncs it,
// renames it over path and syncs the directory, so that a crash leaves either
// the old file or the new one, never a mix.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return WriteFileAtomicFS(vfs.Default, path, data, perm)
}

// WriteFileAtomicFS is WriteFileAtomic on fs (its power-loss test cuts the
// power of a crashable in-memory one). On the operating system's file
// system the temporary file gets mode perm before anything is written.
func WriteFileAtomicFS(fs vfs.FS, path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp"+strconv.FormatUint(rand.Uint64(), 36))
	if _, err := fs.Stat(tmp); err == nil {
		return fmt.Errorf("%s: %w", tmp, os.ErrExist)
	}
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if fs == vfs.Default {
		err = os.Chmod(tmp, perm)
	}
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, path)
	}
	if err != nil {
		fs.Remove(tmp)
		return fmt.Errorf("%s: %w", path, err)
	}
	return SyncDirFS(fs, dir)
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Lock takes an exclusive, non-blocking flock on path (created if missing)
// and holds it until the returned file is closed or the process dies. It
// fails with ErrLocked while another process holds it.
func Lock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// Locked reports whether some process holds the lock at path now.
func Locked(path string) bool {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false // no lock file: nobody holds it
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	Point  string // where it is mounted
	FSType string // e.g. "fuse.fincrypt"
	Source string // e.g. "fincrypt:/root/.fincrypt"
}

// Mounts lists this mount namespace's mounts.
func Mounts() ([]Mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []Mount
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 2 {
			continue
		}
		out = append(out, Mount{Point: unescape(f[4]), FSType: g[0], Source: unescape(g[1])})
	}
	return out, nil
}

// FindMount returns the mount whose mount point is dir.
func FindMount(dir string) (Mount, bool) {
	ms, err := Mounts()
	if err != nil {
		return Mount{}, false
	}
	for i := len(ms) - 1; i >= 0; i-- { // the topmost mount is listed last
		if ms[i].Point == dir {
			return ms[i], true
		}
	}
	return Mount{}, false
}

// IsMountPoint reports whether dir is a mount point; when the mount table
// cannot be read it answers true, the safer guess for callers that would
// otherwise mount over something.
func IsMountPoint(dir string) bool {
	if _, err := os.Stat("/proc/self/mountinfo"); err != nil {
		return true
	}
	_, ok := FindMount(dir)
	return ok
}

// unescape undoes the kernel's octal escapes (\040 for a space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
