package chunkstore

// Tests written against the mutants of store.go from line 427 (syncing
// chunk files, listing, Bytes, Info, OpenExisting), upgrade.go and
// sysfs.go that outlived the chunk store's own tests (issue 21, eighth
// session; docs/TESTING.md lists each with its mutant).

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/meta"
)

// putFiles puts n chunks (copies: see fillStore) into s without syncing.
func putFiles(t *testing.T, s *Store, rng *rand.Rand, n int) map[meta.ChunkID][]byte {
	t.Helper()
	m := map[meta.ChunkID][]byte{}
	for range n {
		id := NewID()
		b := randBytes(rng, 1+rng.IntN(600))
		if err := s.Put(id, bytes.Clone(b)); err != nil {
			t.Fatal(err)
		}
		m[id] = b
	}
	return m
}

// reopenFiles opens the format 1 store at faultDir on mem (after a crash).
func reopenFiles(t *testing.T, mem *vfs.MemFS) *Store {
	t.Helper()
	s, err := OpenFSFormat(faultDir, mem, FormatFiles)
	if err != nil {
		t.Fatal(err)
	}
	if s.Format() != FormatFiles {
		t.Fatalf("reopened store has format %d, want 1", s.Format())
	}
	return s
}

func isChunkFile(name string) bool {
	return strings.HasPrefix(name, faultDir+"/") && len(filepath.Base(name)) == 2*len(meta.ChunkID{})
}

// TestFilesSyncFailureIsRedone: in a store of chunk files (format 1, a
// store not yet upgraded), a Sync or SyncIDs whose fsyncs fail returns the
// error, and the chunks it failed to make durable are synced by the next
// Sync that works: after a power cut then every chunk reads back. Both
// ways of syncing are run: a file at a time, and the whole file system
// (syncfs) above syncfsThreshold chunks. Mutants: store.go:443 and :430
// (`restore()` dropped: the failed chunks forgotten), :442 and :429 (the
// error dropped: a failed sync acknowledged), syncPaths' `err != nil`
// (`:515`). Found on the way: SyncIDs forgot the chunks of a failed sync
// (the next Sync skipped them); fixed.
func TestFilesSyncFailureIsRedone(t *testing.T) {
	for _, n := range []int{5, syncfsThreshold + 20} {
		for _, how := range []string{"Sync", "SyncIDs"} {
			t.Run(fmt.Sprintf("%s of %d", how, n), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(n), 8))
				mem := newMem(t)
				ffs := &faultFS{FS: mem}
				s, err := OpenFSFormat(faultDir, ffs, FormatFiles)
				if err != nil {
					t.Fatal(err)
				}
				m := putFiles(t, s, rng, n)
				ffs.syncsFail(func(name string) bool { return strings.HasPrefix(name, faultDir) })
				var serr error
				if how == "Sync" {
					serr = s.Sync()
				} else {
					serr = s.SyncIDs(slices.Collect(func(yield func(meta.ChunkID) bool) {
						for id := range m {
							if !yield(id) {
								return
							}
						}
					}))
				}
				if !errors.Is(serr, unix.EIO) {
					t.Fatalf("%s with failing fsyncs: %v, want EIO", how, serr)
				}
				ffs.syncsFail(nil)
				if err := s.Sync(); err != nil {
					t.Fatal(err)
				}
				s2 := reopenFiles(t, crash(mem))
				for id, want := range m {
					got, err := s2.Get(id, nil)
					if err != nil || !bytes.Equal(got, want) {
						t.Fatalf("after a failed %s, a Sync that worked and a power cut, chunk %s reads %d bytes (want %d): %v", how, id, len(got), len(want), err)
					}
				}
			})
		}
	}
}

// TestFilesSyncOfDeletedChunk: a chunk deleted between its Put and the
// sync is skipped, not an error (the cache evicts while the mount syncs),
// and the chunks around it are still made durable. Mutant: syncPaths'
// `!errors.Is(err, fs.ErrNotExist)` negated (the sync fails on the
// deleted chunk or never reports a real error).
func TestFilesSyncOfDeletedChunk(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 9))
	mem := newMem(t)
	s, err := OpenFSFormat(faultDir, mem, FormatFiles)
	if err != nil {
		t.Fatal(err)
	}
	m := putFiles(t, s, rng, 6)
	ids := slices.Collect(func(yield func(meta.ChunkID) bool) {
		for id := range m {
			if !yield(id) {
				return
			}
		}
	})
	// Removed behind the store's back, as a concurrent eviction's file
	// removal lands between SyncIDs taking the ids and fsyncing them.
	gone := ids[0]
	if err := mem.Remove(s.Path(gone)); err != nil {
		t.Fatal(err)
	}
	delete(m, gone)
	if err := s.SyncIDs(ids); err != nil {
		t.Fatalf("SyncIDs with a chunk deleted meanwhile: %v", err)
	}
	s2 := reopenFiles(t, crash(mem))
	for id, want := range m {
		if got, err := s2.Get(id, nil); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("chunk %s synced by SyncIDs lost in a power cut: %v", id, err)
		}
	}
	if _, err := s2.Get(gone, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the chunk removed before the sync: %v, want ErrNotFound", err)
	}
}

// TestListNamesEveryStray: List gives every chunk once and names every
// other file (bad), whatever it looks like: a directory where the owner
// file would be, a packs directory in a store of chunk files, a top-level
// entry that is no two-digit directory, and in a chunk directory a name
// that is not hex, hex of the wrong length, a directory, and a chunk in
// the wrong directory. The owner and format files are not strays. An
// error from fn stops the listing and is returned. Mutants: listFiles'
// conditions (`t.name == OwnerFile || ...`, `t.regular`, `t.dir && s.packs
// != nil`, `!t.dir || len(t.name) != 2`, the four checks of a chunk name)
// and the error returns.
func TestListNamesEveryStray(t *testing.T) {
	for _, format := range []int{FormatFiles, FormatPacks} {
		t.Run(fmt.Sprintf("format%d", format), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			s, err := OpenFormat(dir, FormatFiles)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(4, uint64(format)))
			m := putFiles(t, s, rng, 30)
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			if format == FormatPacks {
				// Half-way through an upgrade: some chunks in packs, the
				// rest still in files; both are listed.
				upgradeCutAt(t, s, 10)
				if s, err = Open(dir); err != nil {
					t.Fatal(err)
				}
				if !s.loose || s.packs == nil || len(s.packs.ids()) == 0 {
					t.Fatal("the store cut during its upgrade holds no packs or no chunk files: the test cannot tell")
				}
				defer s.Close()
			}
			var one meta.ChunkID
			for id := range m {
				one = id
				break
			}
			h := one.String()
			other := fmt.Sprintf("%02x", (int(one[0])+1)%256)
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(os.WriteFile(filepath.Join(dir, OwnerFile), []byte("vault"), 0o600))
			wantBad := []string{
				filepath.Join(dir, "stray"),
				filepath.Join(dir, "abc"),
				filepath.Join(dir, "zz"),
				filepath.Join(dir, h[:2], "not-hex"),
				filepath.Join(dir, h[:2], h[:len(h)-2]),
				filepath.Join(dir, h[:2], h+"00"),
				filepath.Join(dir, h[:2], h[:2]+strings.Repeat("0", len(h)-2)),
				filepath.Join(dir, other, h),
			}
			must(os.WriteFile(wantBad[0], nil, 0o600))
			must(os.Mkdir(wantBad[1], 0o700))
			must(os.WriteFile(wantBad[2], nil, 0o600)) // a file with a directory's name
			for _, p := range wantBad[3:6] {
				must(os.WriteFile(p, nil, 0o600))
			}
			must(os.Mkdir(wantBad[6], 0o700)) // a directory with a chunk's name
			must(os.WriteFile(wantBad[7], nil, 0o600))
			if format == FormatFiles {
				// No packs in a store of chunk files: a packs directory
				// is a stray; so is a directory named like the owner file.
				must(os.Mkdir(filepath.Join(dir, packsDir), 0o700))
				must(os.Remove(filepath.Join(dir, OwnerFile)))
				must(os.Mkdir(filepath.Join(dir, OwnerFile), 0o700))
				wantBad = append(wantBad, filepath.Join(dir, packsDir), filepath.Join(dir, OwnerFile))
			}
			seen := map[meta.ChunkID]int{}
			var bad []string
			err = s.List(func(id meta.ChunkID) error { seen[id]++; return nil }, func(p string) { bad = append(bad, p) })
			if err != nil {
				t.Fatal(err)
			}
			for id := range m {
				if seen[id] != 1 {
					t.Errorf("chunk %s listed %d times, want once", id, seen[id])
				}
			}
			if len(seen) != len(m) {
				t.Errorf("%d chunks listed, want %d", len(seen), len(m))
			}
			slices.Sort(bad)
			slices.Sort(wantBad)
			if !slices.Equal(bad, wantBad) {
				t.Errorf("strays listed:\n%s\nwant:\n%s", strings.Join(bad, "\n"), strings.Join(wantBad, "\n"))
			}
			// fn's error stops the listing, in the packs and in the files.
			stop := errors.New("enough")
			for _, after := range []int{1, len(m)} {
				calls := 0
				err := s.List(func(meta.ChunkID) error {
					calls++
					if calls == after {
						return stop
					}
					return nil
				}, nil)
				if !errors.Is(err, stop) || calls != after {
					t.Errorf("List whose fn fails at chunk %d: %v after %d calls", after, err, calls)
				}
			}
		})
	}
}

// TestBytesAndInfoDuringUpgrade: while chunk files are left (an upgrade
// cut half-way), Bytes says it does not know (it counts only packs), and
// Info finds a chunk in a pack or in its file; once the upgrade is done
// Bytes knows the sum, and Info of a chunk that is nowhere says so.
// Mutants: Bytes' `s.packs == nil || s.loose` (either half dropped or
// negated), Info's `!s.loose` negated (a chunk file not found, or a
// missing chunk stat'ed as a file), openPacks' `e.dir && len(e.name) == 2`.
func TestBytesAndInfoDuringUpgrade(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := OpenFormat(dir, FormatFiles)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Bytes(); ok {
		t.Fatal("a store of chunk files claims to know its byte count")
	}
	rng := rand.New(rand.NewPCG(5, 5))
	m := putFiles(t, s, rng, 20)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	upgradeCutAt(t, s, 8)
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !s.loose {
		t.Fatal("a store with chunk files left opened as if it had none")
	}
	if _, ok := s.Bytes(); ok {
		t.Fatal("a store with chunk files left claims to know its byte count")
	}
	var inFile, inPack int
	var sum int64
	for id, b := range m {
		n, _, err := s.Info(id)
		if err != nil || n != int64(len(b)) {
			t.Fatalf("Info of chunk %s (in a pack: %v): %d, %v; want %d", id, s.packs.lookup(id) != nil, n, err, len(b))
		}
		if s.packs.lookup(id) != nil {
			inPack++
		} else {
			inFile++
		}
		sum += int64(len(b))
	}
	if inFile == 0 || inPack == 0 {
		t.Fatalf("%d chunks in packs, %d in files: want some of each", inPack, inFile)
	}
	if _, _, err := s.Info(NewID()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Info of a chunk that is nowhere: %v", err)
	}
	if err := s.Upgrade(nil); err != nil {
		t.Fatal(err)
	}
	if got, ok := s.Bytes(); !ok || got != sum {
		t.Fatalf("after the upgrade Bytes is %d (known %v), want %d", got, ok, sum)
	}
	s.Close()
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.loose {
		t.Fatal("an upgraded store opened as if chunk files were left")
	}
	if got, ok := s.Bytes(); !ok || got != sum {
		t.Fatalf("the upgraded store reopened: Bytes %d (known %v), want %d", got, ok, sum)
	}
	if _, _, err := s.Info(NewID()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Info of a missing chunk in a store of packs: %v", err)
	}
}

// TestOpenExisting: the offline open (fincrypt check) refuses a path that
// is missing or not a directory, reads a store of either format without
// creating anything, and, for packs, opens them read-only. Mutants:
// OpenExisting's error checks and `!isDir`, `s.format == FormatPacks`, the
// read-only open of the packs.
func TestOpenExisting(t *testing.T) {
	base := t.TempDir()
	if _, err := OpenExisting(filepath.Join(base, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("OpenExisting of a missing directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(base, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("OpenExisting created the store it was asked to check")
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenExisting(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("OpenExisting of a file: %v", err)
	}
	for _, format := range []int{FormatFiles, FormatPacks} {
		dir := filepath.Join(base, fmt.Sprint(format))
		s, err := OpenFormat(dir, format)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(6, uint64(format)))
		m := putFiles(t, s, rng, 10)
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		s.Close()
		ro, err := OpenExisting(dir)
		if err != nil {
			t.Fatal(err)
		}
		if ro.Format() != format || (format == FormatPacks) != (ro.packs != nil) {
			t.Fatalf("format %d store opened offline as format %d (packs %v)", format, ro.Format(), ro.packs != nil)
		}
		for id, want := range m {
			if got, err := ro.Get(id, nil); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("format %d, offline read of %s: %v", format, id, err)
			}
		}
		if format == FormatPacks {
			if err := ro.Put(NewID(), []byte("x")); err == nil {
				t.Fatal("a store opened offline took a chunk")
			}
		}
		if err := ro.Upgrade(nil); err == nil {
			t.Fatal("a store opened offline was upgraded")
		}
		ro.Close()
	}
}

// TestUpgradeProgressAndLeftovers: Upgrade reports its progress once per
// chunk, up to the total; it refuses to finish while a chunk directory
// holds a file that is not a chunk (it would lose it), with every chunk
// still readable; once that file is gone a rerun finishes, and a third
// run of an upgraded store does nothing. Mutants: upgrade.go's
// `progress(i+1, len(ids))`, `t.dir && len(t.name) == 2`, the removal's
// error check, `s.loose = false`, `if !s.loose` (the early return).
func TestUpgradeProgressAndLeftovers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := OpenFormat(dir, FormatFiles)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	m := putFiles(t, s, rng, 25)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	var one meta.ChunkID
	for id := range m {
		one = id
		break
	}
	leftover := filepath.Join(filepath.Dir(s.Path(one)), "notes.txt")
	if err := os.WriteFile(leftover, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	var calls [][2]int
	err = s.Upgrade(func(done, total int) { calls = append(calls, [2]int{done, total}) })
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("upgrade with a stray file in a chunk directory: %v, want a refusal", err)
	}
	if len(calls) != len(m) {
		t.Fatalf("progress called %d times for %d chunks", len(calls), len(m))
	}
	for i, c := range calls {
		if c != [2]int{i + 1, len(m)} {
			t.Fatalf("progress call %d: %v, want [%d %d]", i, c, i+1, len(m))
		}
	}
	if b, err := os.ReadFile(leftover); err != nil || string(b) != "mine" {
		t.Fatalf("the stray file after the refused upgrade: %q, %v", b, err)
	}
	checkAll(t, s, m)
	if err := os.Remove(leftover); err != nil {
		t.Fatal(err)
	}
	calls = nil
	if err := s.Upgrade(func(done, total int) { calls = append(calls, [2]int{done, total}) }); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 0 {
		t.Fatalf("the rerun moved %d chunks, want none (all were in packs)", len(calls))
	}
	if s.loose {
		t.Fatal("a finished upgrade left the store reading chunk files")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if len(e.Name()) == 2 {
			t.Fatalf("chunk directory %s left after the upgrade", e.Name())
		}
	}
	// Done: another run moves nothing, and Bytes knows the sum.
	if err := s.Upgrade(func(int, int) { t.Fatal("an upgraded store upgraded again") }); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, m)
	s.Close()
}

// TestSetAside: recover's set-aside moves a chunk out of the store to
// <dst>/<2 hex>/<id>, holding the same bytes, from a pack or from a chunk
// file, and the chunk is then gone from the store (after a reopen too).
// Mutants: SetAside's `s.packs != nil && lookup != nil` (a chunk in a pack
// renamed as a file that is not there, or a file read from packs), the
// error returns, the Delete.
func TestSetAside(t *testing.T) {
	for _, format := range []int{FormatFiles, FormatPacks} {
		t.Run(fmt.Sprintf("format%d", format), func(t *testing.T) {
			base := t.TempDir()
			dir, dst := filepath.Join(base, "store"), filepath.Join(base, "aside")
			s, err := OpenFormat(dir, format)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(8, uint64(format)))
			m := putFiles(t, s, rng, 6)
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			var moved []meta.ChunkID
			for id, want := range m {
				if len(moved) == 3 {
					break
				}
				out, err := s.SetAside(id, dst)
				if err != nil {
					t.Fatal(err)
				}
				h := id.String()
				if out != filepath.Join(dst, h[:2], h) {
					t.Fatalf("set aside to %s, want %s", out, filepath.Join(dst, h[:2], h))
				}
				if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("the chunk set aside holds %d bytes (want %d): %v", len(got), len(want), err)
				}
				if _, err := s.Get(id, nil); !errors.Is(err, ErrNotFound) {
					t.Fatalf("a chunk set aside still reads from the store: %v", err)
				}
				moved = append(moved, id)
			}
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s2, err := OpenFormat(dir, format)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			for _, id := range moved {
				if _, _, err := s2.Info(id); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("a chunk set aside is back in the store after a reopen: %v", err)
				}
				delete(m, id)
			}
			checkAll(t, s2, m)
			if _, err := s2.SetAside(NewID(), dst); err == nil {
				t.Fatal("setting aside a chunk the store does not hold succeeded")
			}
		})
	}
}

// TestVectored: a vectored read or write goes on after short transfers
// and interruptions (EINTR) until every byte of every buffer is moved,
// across buffer boundaries and empty buffers; a transfer of nothing is
// the short error; another error is returned. Mutants: vectored's
// `want > 0`, `n == 0`, `err == unix.EINTR`, `off += n`, `want -= n`,
// the inner loop's `min`, `k:`, `len(bufs[0]) == 0`.
func TestVectored(t *testing.T) {
	src := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	for _, steps := range [][]int{{100}, {1, 1, 1, 100}, {3, -1, 7, 0}, {9, 4, -1, 2, 5, 100}} {
		var disk [64]byte
		calls, i := 0, 0
		op := func(fd int, bufs [][]byte, off int64) (int, error) {
			calls++
			if i >= len(steps) {
				return 0, nil
			}
			step := steps[i]
			i++
			if step < 0 {
				return 0, unix.EINTR
			}
			n := 0
			for _, b := range bufs {
				k := min(step-n, len(b))
				copy(disk[off+int64(n):], b[:k])
				n += k
			}
			return n, nil
		}
		bufs := [][]byte{src[:5], nil, src[5:6], src[6:20], {}, src[20:]}
		err := vectored(op, 0, bufs, 10, io.ErrShortWrite)
		short := slices.Contains(steps, 0)
		if short {
			if err != io.ErrShortWrite {
				t.Fatalf("steps %v: %v, want the short error", steps, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("steps %v: %v", steps, err)
		}
		if !bytes.Equal(disk[10:10+len(src)], src) {
			t.Fatalf("steps %v: wrote %q, want %q", steps, disk[10:10+len(src)], src)
		}
	}
	boom := errors.New("boom")
	if err := vectored(func(int, [][]byte, int64) (int, error) { return 0, boom }, 0, [][]byte{src}, 0, io.ErrShortWrite); err != boom {
		t.Fatalf("a failing op: %v", err)
	}
	if err := vectored(func(int, [][]byte, int64) (int, error) { t.Fatal("op called for nothing"); return 0, nil }, 0, [][]byte{nil, {}}, 0, io.ErrShortWrite); err != nil {
		t.Fatal(err)
	}
}

// TestPunchRange: the blocks given back are the whole 4 KiB blocks inside
// [off, off+n), none outside it. Mutants: punchRange's arithmetic.
func TestPunchRange(t *testing.T) {
	for _, c := range []struct{ off, n, start, l int64 }{
		{0, 4096, 0, 4096},
		{0, 4095, 0, 0},
		{1, 4096, 4096, 0},
		{1, 8191, 4096, 4096},
		{4095, 8194, 4096, 8192},
		{4096, 4096, 4096, 4096},
		{100, 20000, 4096, 12288},
	} {
		start, l := punchRange(c.off, c.n)
		if l > 0 && (start < c.off || start+l > c.off+c.n || start%punchBlock != 0 || l%punchBlock != 0) {
			t.Fatalf("punchRange(%d, %d) = %d, %d: outside the range or not whole blocks", c.off, c.n, start, l)
		}
		if max(l, 0) != max(c.l, 0) || (l > 0 && start != c.start) {
			t.Fatalf("punchRange(%d, %d) = %d, %d; want %d, %d", c.off, c.n, start, l, c.start, c.l)
		}
	}
}

// TestOSFSRead: osFS.read appends a file's bytes to dst, whether dst has
// room for them or not, and leaves what dst held; a missing file is
// fs.ErrNotExist. Mutants: read's `cap(dst)-len(dst) < n` and the slices.
func TestOSFSRead(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	body := bytes.Repeat([]byte("chunk!"), 700)
	if err := os.WriteFile(p, body, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, room := range []int{0, 1, len(body) - 1, len(body), len(body) + 9} {
		dst := append(make([]byte, 0, 3+room), "abc"...)
		got, mtime, err := osFS{}.read(p, dst)
		if err != nil || !bytes.Equal(got, append([]byte("abc"), body...)) || mtime.IsZero() {
			t.Fatalf("read with %d bytes of room: %d bytes, mtime %v, %v", room, len(got), mtime, err)
		}
	}
	if _, _, err := (osFS{}).read(filepath.Join(dir, "none"), nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read of a missing file: %v", err)
	}
}

// TestVFSFSBasics: the in-memory file system the power-loss tests run the
// store on behaves as the operating system's does where the store relies
// on it: create and openPack refuse an existing file, mkdir takes an
// existing directory, read appends, and syncAll makes every file and
// directory under it durable (a power cut after it loses nothing).
// Mutants: vfsFS's `err == nil && st.IsDir()`, the create and openPack
// existence checks, syncAll's recursion and error returns.
func TestVFSFSBasics(t *testing.T) {
	mem := newMem(t)
	v := vfsFS{mem}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(v.mkdir("/vault/d"))
	must(v.mkdir("/vault/d"))
	must(v.mkdirAll("/vault/d/e/f"))
	if ok, err := v.isDir("/vault/d/e"); !ok || err != nil {
		t.Fatalf("isDir of a directory: %v, %v", ok, err)
	}
	files := map[string]string{"/vault/d/a": "one", "/vault/d/e/b": "two", "/vault/d/e/f/c": "three"}
	for p, b := range files {
		must(v.create(p, []byte(b)))
		if err := v.create(p, []byte("again")); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("create over %s: %v, want ErrExist", p, err)
		}
	}
	if ok, err := v.isDir("/vault/d/a"); ok || err != nil {
		t.Fatalf("isDir of a file: %v, %v", ok, err)
	}
	if _, err := v.openPack("/vault/d/a", true, true); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("openPack creating over a file: %v, want ErrExist", err)
	}
	got, _, err := v.read("/vault/d/e/b", []byte("x:"))
	if err != nil || string(got) != "x:two" {
		t.Fatalf("read: %q, %v", got, err)
	}
	must(v.syncAll("/vault")) // d's own entry is in /vault
	after := crash(mem)
	for p, want := range files {
		f, err := after.Open(p)
		if err != nil {
			t.Fatalf("%s lost in a power cut after syncAll: %v", p, err)
		}
		b, _ := io.ReadAll(f)
		f.Close()
		if string(b) != want {
			t.Fatalf("%s after syncAll and a power cut: %q, want %q", p, b, want)
		}
	}
	if err := v.syncAll("/vault/missing"); err == nil {
		t.Fatal("syncAll of a missing directory succeeded")
	}
}

// upgradeCutAt runs s's upgrade one chunk a batch and cuts it, as a crash
// would, once moved chunks are in packs; s is closed, half upgraded.
func upgradeCutAt(t *testing.T, s *Store, moved int) {
	t.Helper()
	upgradeBatchTest(t, 1)
	stop := errors.New("stop")
	upgradeHook = func(n int) {
		if n == moved {
			panic(stop)
		}
	}
	defer func() { upgradeHook = nil }()
	func() {
		defer func() {
			if r := recover(); r != stop {
				panic(r)
			}
		}()
		s.Upgrade(nil)
	}()
	s.Close()
}
