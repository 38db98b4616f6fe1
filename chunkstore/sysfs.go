package chunkstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"
)

// fileSystem is what the store needs of the file system under it: the
// operating system's (plain system calls, the store's fast path), or a
// pebble vfs.FS (tests run the store and the index over one crashable
// in-memory file system that loses whatever was not synced).
type fileSystem interface {
	mkdirAll(dir string) error
	mkdir(dir string) error // an existing directory is not an error
	isDir(dir string) (bool, error)
	// create makes a new file holding data (not synced); it fails if the
	// file exists.
	create(path string, data []byte) error
	// read appends the file's bytes to dst and returns its mtime; a missing
	// file gives fs.ErrNotExist.
	read(path string, dst []byte) ([]byte, time.Time, error)
	touch(path string, t time.Time)
	remove(path string) error // a missing file gives fs.ErrNotExist
	readDir(dir string) ([]dirEntry, error)
	sync(path string) error   // fsync a file or a directory
	syncAll(dir string) error // syncfs: every file and directory under dir
	size(path string) (int64, error)
	openPack(path string, create, writable bool) (packFile, error)
	rename(from, to string) error
	stat(path string) (int64, time.Time, error)
}

type dirEntry struct {
	name         string
	dir, regular bool
}

// osFS is the operating system's file system.
type osFS struct{}

func (osFS) mkdirAll(dir string) error { return os.MkdirAll(dir, 0o700) }

func (osFS) mkdir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

func (osFS) isDir(dir string) (bool, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return false, err
	}
	return st.IsDir(), nil
}

// create and read use plain system calls rather than os.File: a chunk file
// is opened for one write or one read, and os.File's poller registration
// (an epoll_ctl that fails for regular files, and four fcntl calls around
// it) would cost more system calls than the access itself.
func (osFS) create(p string, data []byte) error {
	fd, err := openRetry(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = writeAll(fd, data)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
	}
	return err
}

func (osFS) read(p string, dst []byte) ([]byte, time.Time, error) {
	fd, err := openRetry(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, time.Time{}, err
	}
	n := int(st.Size)
	if cap(dst)-len(dst) < n {
		nd := make([]byte, len(dst), len(dst)+n)
		copy(nd, dst)
		dst = nd
	}
	buf := dst[len(dst) : len(dst)+n]
	if err := readFull(fd, buf); err != nil {
		return dst, time.Time{}, err
	}
	return dst[:len(dst)+n], time.Unix(st.Mtim.Unix()), nil
}

func (osFS) touch(p string, t time.Time) {
	ts := unix.NsecToTimespec(t.UnixNano())
	unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, 0)
}

func (osFS) remove(p string) error { return os.Remove(p) }

func (osFS) readDir(dir string) ([]dirEntry, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]dirEntry, len(ents))
	for i, e := range ents {
		out[i] = dirEntry{name: e.Name(), dir: e.IsDir(), regular: e.Type().IsRegular()}
	}
	return out, nil
}

func (osFS) sync(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (osFS) syncAll(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

func (osFS) size(p string) (int64, error) {
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// vfsFS is a pebble vfs.FS.
type vfsFS struct{ fs vfs.FS }

func (v vfsFS) mkdirAll(dir string) error { return v.fs.MkdirAll(dir, 0o700) }

func (v vfsFS) mkdir(dir string) error {
	if st, err := v.fs.Stat(dir); err == nil && st.IsDir() {
		return nil
	}
	return v.fs.MkdirAll(dir, 0o700)
}

func (v vfsFS) isDir(dir string) (bool, error) {
	st, err := v.fs.Stat(dir)
	if err != nil {
		return false, err
	}
	return st.IsDir(), nil
}

func (v vfsFS) create(p string, data []byte) error {
	if _, err := v.fs.Stat(p); err == nil {
		return fmt.Errorf("%s: %w", p, fs.ErrExist)
	}
	f, err := v.fs.Create(p, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (v vfsFS) read(p string, dst []byte) ([]byte, time.Time, error) {
	f, err := v.fs.Open(p)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, err
	}
	n := int(st.Size())
	out := append(dst, make([]byte, n)...)
	if _, err := io.ReadFull(f, out[len(dst):]); err != nil {
		return dst, time.Time{}, err
	}
	return out, st.ModTime(), nil
}

func (vfsFS) touch(string, time.Time) {}

func (v vfsFS) remove(p string) error { return v.fs.Remove(p) }

func (v vfsFS) readDir(dir string) ([]dirEntry, error) {
	names, err := v.fs.List(dir)
	if err != nil {
		return nil, err
	}
	out := make([]dirEntry, 0, len(names))
	for _, n := range names {
		st, err := v.fs.Stat(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		out = append(out, dirEntry{name: n, dir: st.IsDir(), regular: st.Mode().IsRegular()})
	}
	return out, nil
}

func (v vfsFS) sync(p string) error {
	st, err := v.fs.Stat(p)
	if err != nil {
		return err
	}
	var f vfs.File
	if st.IsDir() {
		f, err = v.fs.OpenDir(p)
	} else {
		f, err = v.fs.Open(p)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// syncAll syncs every file and directory under dir, as syncfs(2) does for
// the whole file system.
func (v vfsFS) syncAll(dir string) error {
	ents, err := v.readDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.name)
		if e.dir {
			if err := v.syncAll(p); err != nil {
				return err
			}
			continue
		}
		if err := v.sync(p); err != nil {
			return err
		}
	}
	return v.sync(dir)
}

func (v vfsFS) size(p string) (int64, error) {
	st, err := v.fs.Stat(p)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// packFile is an open pack: read anywhere, written at its end.
type packFile interface {
	io.ReaderAt
	io.WriterAt
	Close() error
	Sync() error // the data written, and the size (fdatasync)
	// writeRecord writes a record's header and payload at off, without
	// copying them into one buffer.
	writeRecord(h, payload []byte, off int64) error
	// readRecord fills h and then payload from off on, reading the
	// payload straight into its buffer (no copy of it after the read).
	readRecord(h, payload []byte, off int64) error
	stat() (int64, time.Time, error)
	// punch gives back the disk blocks wholly inside [off, off+n), which
	// then read as zeroes; best effort (file systems without it keep them).
	punch(off, n int64)
	// startWriteback asks the kernel to start writing [off, off+n) to disk
	// now (n == 0: to the end) without waiting for it: a later Sync then
	// finds less to write. It promises nothing; best effort.
	startWriteback(off, n int64)
}

func (f osPack) startWriteback(off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// startWriteback in the in-memory file system has nothing to start.
func (f vfsPack) startWriteback(off, n int64) {}

// punchBlock is the granularity of hole punching that is assumed.
const punchBlock = 4096

func punchRange(off, n int64) (int64, int64) {
	start := (off + punchBlock - 1) / punchBlock * punchBlock
	end := (off + n) / punchBlock * punchBlock
	return start, end - start
}

func (f osPack) punch(off, n int64) {
	if s, l := punchRange(off, n); l > 0 {
		unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, s, l)
	}
}

// punch in the in-memory file system writes the zeroes a punched hole
// reads as (not synced: as a real punch, it may or may not survive a
// crash, which the store must tolerate).
func (f vfsPack) punch(off, n int64) {
	if s, l := punchRange(off, n); l > 0 {
		f.WriteAt(make([]byte, l), s)
	}
}

type osPack struct{ *os.File }

func (f osPack) writeRecord(h, payload []byte, off int64) error {
	return vectored(unix.Pwritev, int(f.Fd()), [][]byte{h, payload}, off, io.ErrShortWrite)
}

func (f osPack) readRecord(h, payload []byte, off int64) error {
	return vectored(unix.Preadv, int(f.Fd()), [][]byte{h, payload}, off, io.ErrUnexpectedEOF)
}

// vectored runs op (pwritev or preadv) until every byte of bufs is moved,
// going on after a short transfer; none at all is short.
func vectored(op func(int, [][]byte, int64) (int, error), fd int, bufs [][]byte, off int64, short error) error {
	want := 0
	for _, b := range bufs {
		want += len(b)
	}
	for want > 0 {
		n, err := op(fd, bufs, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return short
		}
		off += int64(n)
		want -= n
		for n > 0 {
			k := min(n, len(bufs[0]))
			bufs[0] = bufs[0][k:]
			n -= k
			if len(bufs[0]) == 0 {
				bufs = bufs[1:]
			}
		}
	}
	return nil
}

func (f vfsPack) readRecord(h, payload []byte, off int64) error {
	if _, err := f.ReadAt(h, off); err != nil {
		return err
	}
	_, err := f.ReadAt(payload, off+int64(len(h)))
	return err
}

func (f osPack) Sync() error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

func (f osPack) stat() (int64, time.Time, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, time.Time{}, err
	}
	return st.Size(), st.ModTime(), nil
}

// openPack opens a pack file; create makes a new one (failing if it exists).
func (osFS) openPack(p string, create, writable bool) (packFile, error) {
	flags := os.O_RDONLY
	if writable {
		flags = os.O_RDWR
	}
	if create {
		flags |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(p, flags, 0o600)
	if err != nil {
		return nil, err
	}
	return osPack{f}, nil
}

type vfsPack struct{ vfs.File }

func (f vfsPack) writeRecord(h, payload []byte, off int64) error {
	_, err := f.WriteAt(append(append(make([]byte, 0, len(h)+len(payload)), h...), payload...), off)
	return err
}

func (f vfsPack) stat() (int64, time.Time, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, time.Time{}, err
	}
	return st.Size(), st.ModTime(), nil
}

func (v vfsFS) openPack(p string, create, writable bool) (packFile, error) {
	if create {
		if _, err := v.fs.Stat(p); err == nil {
			return nil, fmt.Errorf("%s: %w", p, fs.ErrExist)
		}
		f, err := v.fs.Create(p, vfs.WriteCategoryUnspecified)
		if err != nil {
			return nil, err
		}
		f.Close()
	}
	var f vfs.File
	var err error
	if writable {
		f, err = v.fs.OpenReadWrite(p, vfs.WriteCategoryUnspecified)
	} else {
		f, err = v.fs.Open(p)
	}
	if err != nil {
		return nil, err
	}
	return vfsPack{f}, nil
}

func (osFS) rename(from, to string) error { return os.Rename(from, to) }

func (v vfsFS) rename(from, to string) error { return v.fs.Rename(from, to) }

func (osFS) stat(p string) (int64, time.Time, error) {
	st, err := os.Stat(p)
	if err != nil {
		return 0, time.Time{}, err
	}
	return st.Size(), st.ModTime(), nil
}

func (v vfsFS) stat(p string) (int64, time.Time, error) {
	st, err := v.fs.Stat(p)
	if err != nil {
		return 0, time.Time{}, err
	}
	return st.Size(), st.ModTime(), nil
}
