package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestExists: `fincrypt check` and the mount guard ask whether a vault has
// an index before opening one: no directory, an empty directory and a
// directory without Pebble's files are "no index", a written one is.
func TestExists(t *testing.T) {
	mem := vfs.NewMem()
	if ok, err := Exists("/idx", mem); ok || err != nil {
		t.Fatalf("no directory: %v, %v", ok, err)
	}
	if err := mem.MkdirAll("/idx", 0o700); err != nil {
		t.Fatal(err)
	}
	if ok, err := Exists("/idx", mem); ok || err != nil {
		t.Fatalf("empty directory: %v, %v", ok, err)
	}
	x, err := Open("/idx", testKeys(t, 1), Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	x.Close()
	if ok, err := Exists("/idx", mem); !ok || err != nil {
		t.Fatalf("written index: %v, %v", ok, err)
	}
	// The nil file system is the real one.
	dir := filepath.Join(t.TempDir(), "index")
	if ok, err := Exists(dir, nil); ok || err != nil {
		t.Fatalf("no directory on disk: %v, %v", ok, err)
	}
	openTest(t, dir, testKeys(t, 1)).Close()
	if ok, err := Exists(dir, nil); !ok || err != nil {
		t.Fatalf("written index on disk: %v, %v", ok, err)
	}
}

// TestOpenReadOnly: a read-only open (`fincrypt check`, a snapshot
// browse) never creates an index where there is none, and refuses an
// index without a format record instead of writing one.
func TestOpenReadOnly(t *testing.T) {
	mem := vfs.NewMem()
	keys := testKeys(t, 1)
	if _, err := Open("/idx", keys, Options{FS: mem, ReadOnly: true}); err == nil {
		t.Fatal("read-only open of a missing index succeeded")
	}
	if ok, _ := Exists("/idx", mem); ok {
		t.Fatal("a read-only open created an index")
	}
	// An index with records but no format record: Pebble opened by hand.
	db, err := pebble.Open("/raw", &pebble.Options{FS: mem, Logger: pebbleLogger{slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	db.Set([]byte("x"), []byte("y"), pebble.Sync)
	db.Close()
	if _, err := Open("/raw", keys, Options{FS: mem, ReadOnly: true}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read-only open without a format record: %v, want ErrCorrupt", err)
	}
	x, err := Open("/idx", keys, Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	b := x.NewBatch()
	b.PutInode(&Inode{Ino: 5, Nlink: 1})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	x.Close()
	ro, err := Open("/idx", keys, Options{FS: mem, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if n, err := ro.GetInode(5); err != nil || n.Nlink != 1 {
		t.Fatalf("read-only read: %+v, %v", n, err)
	}
	if !ro.FeedReady() {
		t.Fatal("a format 2 index opened read-only has no feed")
	}
}

// TestFormatRecord: an index from a newer fincrypt, or whose format record
// is the wrong size, is refused with a clear error, not read as if it were
// this version's.
func TestFormatRecord(t *testing.T) {
	keys := testKeys(t, 1)
	for _, c := range []struct {
		name string
		val  []byte
		want string
	}{
		{"a newer format", binary.BigEndian.AppendUint32(nil, FormatVersion+1), fmt.Sprintf("index format %d", FormatVersion+1)},
		{"format zero", binary.BigEndian.AppendUint32(nil, 0), "index format 0"},
		{"a 3-byte record", []byte{0, 0, 2}, "3 bytes"},
		{"an 8-byte record", binary.BigEndian.AppendUint64(nil, FormatVersion), "8 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem := vfs.NewMem()
			x, err := Open("/idx", keys, Options{FS: mem})
			if err != nil {
				t.Fatal(err)
			}
			key := []byte{pFormat}
			if err := x.db.Set(key, keys.Meta.Seal(nil, c.val, key), pebble.Sync); err != nil {
				t.Fatal(err)
			}
			x.Close()
			for _, ro := range []bool{false, true} {
				_, err := Open("/idx", keys, Options{FS: mem, ReadOnly: ro})
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("read-only %v: %v, want an error saying %q", ro, err, c.want)
				}
			}
		})
	}
}

// TestCommitSyncSurvivesPowerLoss: a batch committed with sync survives a
// power cut that loses everything not synced, and so do the writes of
// unsynced batches followed by an empty synced commit (the barrier an
// fsync of a file uses).
func TestCommitSyncSurvivesPowerLoss(t *testing.T) {
	x, reboot := crashableIndex(t)
	put := func(ino uint64, sync bool) {
		b := x.NewBatch()
		b.PutInode(&Inode{Ino: ino, Nlink: 1})
		if err := b.Commit(sync); err != nil {
			t.Fatal(err)
		}
	}
	survives := func(ino uint64, what string) {
		t.Helper()
		if _, err := reboot().GetInode(ino); err != nil {
			t.Errorf("inode %d, %s, after a power cut: %v", ino, what, err)
		}
	}
	put(10, true)
	survives(10, "committed with sync")
	put(11, false)
	if err := x.NewBatch().Commit(true); err != nil {
		t.Fatal(err)
	}
	survives(11, "committed without sync, then an empty synced commit")
}

// crashableIndex opens an index over a file system that loses what was
// not synced. reboot opens what a power cut at that moment leaves.
func crashableIndex(t *testing.T) (x *Index, reboot func() *Index) {
	keys := testKeys(t, 1)
	mem := vfs.NewCrashableMem()
	x, err := Open("/idx", keys, Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x, func() *Index {
		t.Helper()
		y, err := Open("/idx", keys, Options{FS: mem.CrashClone(vfs.CrashCloneCfg{})})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { y.Close() })
		return y
	}
}

// TestCheckTables: `fincrypt check` finds an index table that is missing
// or whose size differs from what the manifest records (a torn copy, a
// truncated file), and passes a whole index.
func TestCheckTables(t *testing.T) {
	keys := testKeys(t, 1)
	setup := func(t *testing.T) (*vfs.MemFS, *Index, string) {
		mem := vfs.NewMem()
		x, err := Open("/idx", keys, Options{FS: mem})
		if err != nil {
			t.Fatal(err)
		}
		for round := range 2 { // two tables
			b := x.NewBatch()
			for i := range 50 {
				b.PutInode(&Inode{Ino: uint64(round*100 + i + 2), Nlink: 1, Target: []byte("some bytes")})
			}
			if err := b.Commit(false); err != nil {
				t.Fatal(err)
			}
			if err := x.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		if err := x.CheckTables(); err != nil {
			t.Fatalf("a whole index: %v", err)
		}
		names, _ := mem.List("/idx")
		for _, n := range names {
			if strings.HasSuffix(n, ".sst") {
				return mem, x, "/idx/" + n
			}
		}
		t.Fatal("no table after a flush")
		return nil, nil, ""
	}
	// rewrite replaces a table file's bytes, as a torn copy would.
	rewrite := func(t *testing.T, mem *vfs.MemFS, sst string, edit func([]byte) []byte) {
		f, err := mem.Open(sst)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		b := make([]byte, st.Size())
		if _, err := f.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
		w, err := mem.Create(sst, vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(edit(b)); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	t.Run("truncated", func(t *testing.T) {
		mem, x, sst := setup(t)
		defer x.Close()
		rewrite(t, mem, sst, func(b []byte) []byte { return b[:len(b)-1] })
		if err := x.CheckTables(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a table one byte short: %v, want ErrCorrupt", err)
		}
	})
	t.Run("grown", func(t *testing.T) {
		mem, x, sst := setup(t)
		defer x.Close()
		rewrite(t, mem, sst, func(b []byte) []byte { return append(b, 0) })
		if err := x.CheckTables(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a table one byte long: %v, want ErrCorrupt", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		mem, x, sst := setup(t)
		defer x.Close()
		if err := mem.Remove(sst); err != nil {
			t.Fatal(err)
		}
		if err := x.CheckTables(); err == nil || !strings.Contains(err.Error(), filepath.Base(sst)) {
			t.Fatalf("a missing table: %v", err)
		}
	})
}

// TestRecordBounds: the decoders take records of exactly their minimum
// size and refuse one byte less, so a truncated record reads as corrupt,
// never as a shorter valid one.
func TestRecordBounds(t *testing.T) {
	in := Inode{Ino: 4, Mode: 0o100644, Nlink: 1, Size: 9}
	b := in.encode()
	if len(b) != inodeFixed {
		t.Fatalf("inode record without target: %d bytes, want %d", len(b), inodeFixed)
	}
	if n, err := decodeInode(4, b); err != nil || n.Size != 9 || n.Target != nil {
		t.Fatalf("inode of exactly the fixed size: %+v, %v", n, err)
	}
	if _, err := decodeInode(4, b[:inodeFixed-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("inode one byte short: %v", err)
	}
	b[0] = inodeRecV1 + 1
	if _, err := decodeInode(4, b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("inode of an unknown version: %v", err)
	}
	d := (&Dirent{Name: "x", Ino: 3, Type: 0o100000}).encode()
	if got, err := decodeDirent(1, d); err != nil || got.Name != "x" || got.Ino != 3 {
		t.Fatalf("dirent with a one-byte name: %+v, %v", got, err)
	}
	if _, err := decodeDirent(1, d[:12]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("dirent with an empty name: %v", err)
	}
	x := encodeXattr("user.k", nil)
	if n, v, err := decodeXattr(x); err != nil || n != "user.k" || len(v) != 0 {
		t.Fatalf("xattr with an empty value: %q %q %v", n, v, err)
	}
	if _, _, err := decodeXattr(x[:len(x)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("xattr whose name runs past the record: %v", err)
	}
	if _, _, err := decodeXattr(x[:1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("xattr of one byte: %v", err)
	}
	r := (&ChunkRef{ID: ChunkID{1}, Version: 2, Len: 3}).encode()
	for _, n := range []int{len(r) - 1, len(r) + 1} {
		if _, err := decodeChunkRef(append(r[:len(r):len(r)], 0)[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("chunk reference of %d bytes: %v", n, err)
		}
	}
}
