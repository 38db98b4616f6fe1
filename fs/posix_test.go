package fs_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/vault"
)

// bigDirEntries is how many entries TestPOSIX puts in one directory; fewer
// under the race detector (race_test.go), which makes each create ten
// times slower and finds nothing more in the ten-thousandth.
var bigDirEntries = 20000

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func stat(t testing.TB, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// TestPOSIX drives one mount through the semantics a program expects, then
// remounts and checks that everything persisted and that the vault checks
// clean. A small chunk size makes chunk boundaries frequent.
func TestPOSIX(t *testing.T) {
	requireFUSE(t)
	const cs = 4096
	home := newVault(t, vault.CreateOptions{ChunkSize: cs})
	tm := mountVault(t, home)

	t.Run("ReadWriteAtOffsets", func(t *testing.T) {
		p := tm.path("rw")
		model := make([]byte, 0)
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 200; i++ {
			off := r.IntN(10 * cs)
			data := randBytes(uint64(i), 1+r.IntN(3*cs))
			if _, err := f.WriteAt(data, int64(off)); err != nil {
				t.Fatal(err)
			}
			if end := off + len(data); end > len(model) {
				model = append(model, make([]byte, end-len(model))...)
			}
			copy(model[off:], data)
			if i%20 == 0 { // read back through a second descriptor
				mustEqual(t, fmt.Sprintf("after write %d", i), readFile(t, p), model)
			}
		}
		got := make([]byte, len(model))
		if _, err := f.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "final", got, model)
		// Reads at odd offsets and lengths, crossing chunk boundaries.
		for i := 0; i < 50; i++ {
			off, n := r.IntN(len(model)), r.IntN(2*cs)
			buf := make([]byte, n)
			m, err := f.ReadAt(buf, int64(off))
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			want := model[off:min(off+n, len(model))]
			mustEqual(t, "partial read", buf[:m], want)
		}
	})

	t.Run("SparseBeyond4GiB", func(t *testing.T) {
		p := tm.path("sparse")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		const far = 5<<30 + 12345
		if _, err := f.WriteAt([]byte("end"), far); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("start"), 10); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if st := stat(t, p); st.Size != far+3 {
			t.Fatalf("size %d, want %d", st.Size, far+3)
		}
		f, err = os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 64)
		for _, off := range []int64{0, 3 << 30, far - 30} {
			if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			want := make([]byte, 64)
			if off == 0 {
				copy(want[10:], "start")
			}
			if off == far-30 {
				copy(want[30:], "end")
				want = want[:33]
				buf = buf[:33]
			}
			mustEqual(t, fmt.Sprintf("read at %d", off), buf, want)
		}
	})

	t.Run("AppendAndTrunc", func(t *testing.T) {
		p := tm.path("append")
		writeFile(t, p, []byte("one\n"))
		for _, s := range []string{"two\n", "three\n"} {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(s); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		mustEqual(t, "append", readFile(t, p), []byte("one\ntwo\nthree\n"))
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("x")
		f.Close()
		mustEqual(t, "O_TRUNC", readFile(t, p), []byte("x"))
	})

	t.Run("TruncateUpAndDown", func(t *testing.T) {
		p := tm.path("trunc")
		data := randBytes(7, 5*cs+100)
		writeFile(t, p, data)
		for _, size := range []int64{3*cs + 10, 3 * cs, 7, 0, 2*cs + 1} {
			if err := os.Truncate(p, size); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, size)
			copy(want, data[:min(int(size), len(data))])
			data = want
			mustEqual(t, fmt.Sprintf("truncate to %d", size), readFile(t, p), want)
		}
		// Shrink then grow through an open descriptor: the bytes cut off must
		// not come back.
		writeFile(t, p, bytes.Repeat([]byte("A"), 2*cs))
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(cs + 5); err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(3 * cs); err != nil {
			t.Fatal(err)
		}
		want := append(bytes.Repeat([]byte("A"), cs+5), make([]byte, 2*cs-5)...)
		mustEqual(t, "shrink then grow", readFile(t, p), want)
	})

	t.Run("BigDirectory", func(t *testing.T) {
		d := tm.path("big")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		n := bigDirEntries
		for i := 0; i < n; i++ {
			fd, err := syscall.Open(filepath.Join(d, fmt.Sprintf("entry-%05d", i)), syscall.O_CREAT|syscall.O_WRONLY|syscall.O_CLOEXEC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			syscall.Close(fd)
		}
		ents, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != n {
			t.Fatalf("readdir: %d entries, want %d", len(ents), n)
		}
		names := make([]string, len(ents))
		for i, e := range ents {
			names[i] = e.Name()
		}
		sort.Strings(names)
		for i, name := range names {
			if want := fmt.Sprintf("entry-%05d", i); name != want {
				t.Fatalf("entry %d is %q, want %q", i, name, want)
			}
		}
		removed := filepath.Join(d, fmt.Sprintf("entry-%05d", 12345%n))
		if err := os.Remove(removed); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(removed); !os.IsNotExist(err) {
			t.Fatalf("removed entry: stat gives %v", err)
		}
	})

	t.Run("OddNames", func(t *testing.T) {
		var name []byte
		for b := 1; len(name) < 255; b++ {
			if c := byte(b%255 + 1); c != '/' {
				name = append(name, c)
			}
		}
		name[0] = 0xff // not valid UTF-8 either
		p := tm.path(string(name))
		writeFile(t, p, []byte("odd"))
		mustEqual(t, "odd name", readFile(t, p), []byte("odd"))
		ents, err := os.ReadDir(tm.dir)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range ents {
			found = found || e.Name() == string(name)
		}
		if !found {
			t.Fatal("255-byte name missing from readdir")
		}
		long := tm.path(string(name) + "x")
		_, err = os.Create(long)
		wantErrno(t, "256-byte name", err, syscall.ENAMETOOLONG)
		wantErrno(t, "mkdir 256-byte name", os.Mkdir(long, 0o755), syscall.ENAMETOOLONG)
	})

	t.Run("Rename", func(t *testing.T) {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.MkdirAll(tm.path("r", "a"), 0o755))
		must(os.MkdirAll(tm.path("r", "b"), 0o755))
		writeFile(t, tm.path("r", "a", "f"), []byte("f"))
		writeFile(t, tm.path("r", "b", "g"), []byte("g"))
		ino := stat(t, tm.path("r", "a", "f")).Ino
		// Over an existing file, across directories.
		must(os.Rename(tm.path("r", "a", "f"), tm.path("r", "b", "g")))
		mustEqual(t, "renamed over", readFile(t, tm.path("r", "b", "g")), []byte("f"))
		if got := stat(t, tm.path("r", "b", "g")).Ino; got != ino {
			t.Fatalf("inode changed by rename: %d -> %d", ino, got)
		}
		if _, err := os.Stat(tm.path("r", "a", "f")); !os.IsNotExist(err) {
			t.Fatalf("source still there: %v", err)
		}
		// A directory, across directories, with link counts following.
		must(os.Mkdir(tm.path("r", "a", "sub"), 0o755))
		writeFile(t, tm.path("r", "a", "sub", "x"), []byte("x"))
		must(os.Rename(tm.path("r", "a", "sub"), tm.path("r", "b", "sub2")))
		mustEqual(t, "moved dir content", readFile(t, tm.path("r", "b", "sub2", "x")), []byte("x"))
		if n := stat(t, tm.path("r", "a")).Nlink; n != 2 {
			t.Fatalf("old parent nlink %d, want 2", n)
		}
		if n := stat(t, tm.path("r", "b")).Nlink; n != 3 {
			t.Fatalf("new parent nlink %d, want 3", n)
		}
		// Directory over an empty directory; over a non-empty one fails.
		must(os.Mkdir(tm.path("r", "empty"), 0o755))
		// (os.Rename refuses a directory target itself; use the system call.)
		must(syscall.Rename(tm.path("r", "b", "sub2"), tm.path("r", "empty")))
		mustEqual(t, "dir over empty dir", readFile(t, tm.path("r", "empty", "x")), []byte("x"))
		must(os.Mkdir(tm.path("r", "d2"), 0o755))
		wantErrno(t, "dir over non-empty dir", syscall.Rename(tm.path("r", "d2"), tm.path("r", "empty")), syscall.ENOTEMPTY)
		wantErrno(t, "file over dir", syscall.Rename(tm.path("r", "b", "g"), tm.path("r", "d2")), syscall.EISDIR)
		// renameat2 flags.
		writeFile(t, tm.path("r", "p"), []byte("p"))
		writeFile(t, tm.path("r", "q"), []byte("q"))
		wantErrno(t, "RENAME_NOREPLACE", unix.Renameat2(unix.AT_FDCWD, tm.path("r", "p"), unix.AT_FDCWD, tm.path("r", "q"), unix.RENAME_NOREPLACE), syscall.EEXIST)
		must(unix.Renameat2(unix.AT_FDCWD, tm.path("r", "p"), unix.AT_FDCWD, tm.path("r", "q"), unix.RENAME_EXCHANGE))
		mustEqual(t, "exchanged p", readFile(t, tm.path("r", "p")), []byte("q"))
		mustEqual(t, "exchanged q", readFile(t, tm.path("r", "q")), []byte("p"))
	})

	t.Run("UnlinkWhileOpen", func(t *testing.T) {
		p := tm.path("doomed")
		data := randBytes(3, 3*cs+17)
		writeFile(t, p, data)
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("stat after unlink: %v", err)
		}
		got := make([]byte, len(data))
		if _, err := f.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "read after unlink", got, data)
		if _, err := f.WriteAt([]byte("more"), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if st.Nlink != 0 || st.Size != int64(len(data)+4) {
			t.Fatalf("fstat after unlink: nlink %d size %d", st.Nlink, st.Size)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("HardLinks", func(t *testing.T) {
		a, b := tm.path("link-a"), tm.path("link-b")
		writeFile(t, a, []byte("shared"))
		if err := os.Link(a, b); err != nil {
			t.Fatal(err)
		}
		sa, sb := stat(t, a), stat(t, b)
		if sa.Ino != sb.Ino || sa.Nlink != 2 {
			t.Fatalf("link: inodes %d/%d, nlink %d", sa.Ino, sb.Ino, sa.Nlink)
		}
		f, err := os.OpenFile(b, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("!")
		f.Close()
		mustEqual(t, "write through link", readFile(t, a), []byte("shared!"))
		if err := os.Remove(a); err != nil {
			t.Fatal(err)
		}
		if n := stat(t, b).Nlink; n != 1 {
			t.Fatalf("nlink after unlink %d, want 1", n)
		}
		mustEqual(t, "other link", readFile(t, b), []byte("shared!"))
		wantErrno(t, "link to a directory", os.Link(tm.path("r"), tm.path("rlink")), syscall.EPERM)
	})

	t.Run("Symlinks", func(t *testing.T) {
		target := "../some/where/" + string(bytes.Repeat([]byte("t"), 300))
		p := tm.path("sym")
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		got, err := os.Readlink(p)
		if err != nil || got != target {
			t.Fatalf("readlink: %q, %v", got, err)
		}
		if st := stat(t, p); st.Mode&syscall.S_IFMT != syscall.S_IFLNK || st.Size != int64(len(target)) {
			t.Fatalf("lstat: mode %o size %d", st.Mode, st.Size)
		}
		if err := os.Symlink("link-b", tm.path("sym2")); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "through symlink", readFile(t, tm.path("sym2")), []byte("shared!"))
	})

	t.Run("ChmodChownUtimens", func(t *testing.T) {
		p := tm.path("attrs")
		writeFile(t, p, []byte("a"))
		if err := syscall.Chmod(p, 0o4751); err != nil {
			t.Fatal(err)
		}
		if m := stat(t, p).Mode; m&0o7777 != 0o4751 || m&syscall.S_IFMT != syscall.S_IFREG {
			t.Fatalf("chmod: mode %o", m)
		}
		if err := os.Lchown(p, 1234, 5678); err != nil {
			t.Fatal(err)
		}
		if st := stat(t, p); st.Uid != 1234 || st.Gid != 5678 {
			t.Fatalf("chown: %d:%d", st.Uid, st.Gid)
		}
		at, mt := time.Unix(1000000000, 123456789), time.Unix(1200000000, 987654321)
		if err := os.Chtimes(p, at, mt); err != nil {
			t.Fatal(err)
		}
		st := stat(t, p)
		if st.Atim.Nano() != at.UnixNano() || st.Mtim.Nano() != mt.UnixNano() {
			t.Fatalf("utimens: atime %v mtime %v", time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix()))
		}
		// futimens on an open file after writing: the explicit time wins.
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("bb")
		if err := unix.Futimes(int(f.Fd()), []unix.Timeval{unix.NsecToTimeval(at.UnixNano()), unix.NsecToTimeval(mt.UnixNano())}); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if st := stat(t, p); st.Mtim.Sec != mt.Unix() || st.Size != 2 {
			t.Fatalf("futimes after write: mtime %d size %d", st.Mtim.Sec, st.Size)
		}
	})

	t.Run("Statfs", func(t *testing.T) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(tm.dir, &st); err != nil {
			t.Fatal(err)
		}
		if st.Namelen != 255 || st.Bsize == 0 || st.Blocks == 0 {
			t.Fatalf("statfs: %+v", st)
		}
	})

	t.Run("Fsync", func(t *testing.T) {
		f, err := os.Create(tm.path("synced"))
		if err != nil {
			t.Fatal(err)
		}
		f.Write(randBytes(9, 3*cs))
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		d, err := os.Open(tm.dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatalf("fsync of a directory: %v", err)
		}
		d.Close()
	})

	t.Run("Xattrs", func(t *testing.T) {
		p := tm.path("xa")
		writeFile(t, p, nil)
		if err := unix.Setxattr(p, "user.color", []byte("blue"), 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.empty", nil, 0); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := unix.Getxattr(p, "user.color", buf)
		if err != nil || string(buf[:n]) != "blue" {
			t.Fatalf("getxattr: %q, %v", buf[:n], err)
		}
		if n, err := unix.Getxattr(p, "user.color", nil); err != nil || n != 4 {
			t.Fatalf("getxattr size: %d, %v", n, err)
		}
		_, err = unix.Getxattr(p, "user.color", make([]byte, 2))
		wantErrno(t, "small buffer", err, syscall.ERANGE)
		n, err = unix.Listxattr(p, buf)
		if err != nil {
			t.Fatal(err)
		}
		names := bytes.Split(bytes.TrimSuffix(buf[:n], []byte{0}), []byte{0})
		sort.Slice(names, func(i, j int) bool { return bytes.Compare(names[i], names[j]) < 0 })
		if len(names) != 2 || string(names[0]) != "user.color" || string(names[1]) != "user.empty" {
			t.Fatalf("listxattr: %q", names)
		}
		wantErrno(t, "XATTR_CREATE on existing", unix.Setxattr(p, "user.color", []byte("red"), unix.XATTR_CREATE), syscall.EEXIST)
		wantErrno(t, "XATTR_REPLACE on missing", unix.Setxattr(p, "user.nope", []byte("red"), unix.XATTR_REPLACE), syscall.ENODATA)
		_, err = unix.Getxattr(p, "user.nope", buf)
		wantErrno(t, "missing attribute", err, syscall.ENODATA)
		wantErrno(t, "trusted namespace", unix.Setxattr(p, "trusted.x", []byte("1"), 0), syscall.EOPNOTSUPP)
		wantErrno(t, "security namespace", unix.Setxattr(p, "security.x", []byte("1"), 0), syscall.EOPNOTSUPP)
		wantErrno(t, "value too big", unix.Setxattr(p, "user.big", make([]byte, 65537), 0), syscall.E2BIG)
		if err := unix.Removexattr(p, "user.color"); err != nil {
			t.Fatal(err)
		}
		_, err = unix.Getxattr(p, "user.color", buf)
		wantErrno(t, "removed attribute", err, syscall.ENODATA)
		wantErrno(t, "remove missing", unix.Removexattr(p, "user.color"), syscall.ENODATA)
		if err := unix.Setxattr(p, "user.kept", []byte("across mounts"), 0); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		_, err := os.Open(tm.path("does-not-exist"))
		wantErrno(t, "open missing", err, syscall.ENOENT)
		wantErrno(t, "mkdir existing", os.Mkdir(tm.path("r"), 0o755), syscall.EEXIST)
		wantErrno(t, "rmdir non-empty", syscall.Rmdir(tm.path("r")), syscall.ENOTEMPTY)
		wantErrno(t, "unlink a directory", syscall.Unlink(tm.path("r")), syscall.EISDIR)
		wantErrno(t, "rmdir a file", syscall.Rmdir(tm.path("link-b")), syscall.ENOTDIR)
		_, err = os.OpenFile(tm.path("link-b"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		wantErrno(t, "O_EXCL on existing", err, syscall.EEXIST)
		if err := syscall.Mkfifo(tm.path("fifo"), 0o644); err != nil {
			t.Fatalf("mkfifo: %v", err)
		}
		if st := stat(t, tm.path("fifo")); st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
			t.Fatalf("fifo has mode %o", st.Mode)
		}
	})

	// Everything persists across a remount, with the same inode numbers.
	before := map[string]syscall.Stat_t{}
	var sums = map[string][]byte{}
	filepath.Walk(tm.dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || filepath.Base(p) == "big" && info.IsDir() {
			if info != nil && info.IsDir() && p != tm.dir {
				return filepath.SkipDir
			}
			return err
		}
		before[p[len(tm.dir):]] = *stat(t, p)
		if info.Mode().IsRegular() && info.Size() < 1<<20 {
			sums[p[len(tm.dir):]] = readFile(t, p)
		}
		return nil
	})
	tm.unmount()
	checkVault(t, home)
	tm = mountVault(t, home)
	for rel, st := range before {
		now := stat(t, tm.dir+rel)
		if now.Ino != st.Ino || now.Mode != st.Mode || now.Size != st.Size || now.Nlink != st.Nlink || now.Mtim != st.Mtim || now.Uid != st.Uid {
			t.Errorf("%s changed across remount:\n before %+v\n after  %+v", rel, st, *now)
		}
		if want, ok := sums[rel]; ok {
			mustEqual(t, rel+" after remount", readFile(t, tm.dir+rel), want)
		}
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(tm.path("xa"), "user.kept", buf)
	if err != nil || string(buf[:n]) != "across mounts" {
		t.Fatalf("xattr after remount: %q, %v", buf[:n], err)
	}
	ents, err := os.ReadDir(tm.path("big"))
	if err != nil || len(ents) != bigDirEntries-1 {
		t.Fatalf("big directory after remount: %d entries, %v", len(ents), err)
	}
}
