package meta

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
)

// TestInodeCache: an inode a batch wrote reads back without a point read;
// a view still reads its snapshot; a deleted inode is not found; an older
// batch whose cache update comes after a newer one's does not replace it;
// and once the cache is emptied (full), no batch from before is taken.
func TestInodeCache(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 1))
	put := func(in Inode) {
		t.Helper()
		b := x.NewBatch()
		b.PutInode(&in)
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	put(Inode{Ino: 5, Mode: 0o40755, Nlink: 2, Mtime: 1})
	view, closeView := x.View()
	defer closeView()
	put(Inode{Ino: 5, Mode: 0o40755, Nlink: 3, Mtime: 2})
	p0 := x.PointsRead()
	in, err := x.GetInode(5)
	if err != nil || in.Mtime != 2 || in.Nlink != 3 {
		t.Fatalf("GetInode after a commit: %+v, %v; want mtime 2, nlink 3", in, err)
	}
	if n := x.PointsRead() - p0; n != 0 {
		t.Errorf("%d point reads for an inode this index just wrote, want 0", n)
	}
	if in, err := view.GetInode(5); err != nil || in.Mtime != 1 {
		t.Errorf("a view taken before the commit: %+v, %v; want mtime 1", in, err)
	}

	b := x.NewBatch()
	b.DeleteInode(5)
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if _, err := x.GetInode(5); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetInode of a deleted inode: %v, want ErrNotFound", err)
	}

	// A symlink whose target is too long to keep: its write leaves no
	// entry, and none of the short target written before it.
	put(Inode{Ino: 6, Mode: 0o120777, Nlink: 1, Target: []byte("short")})
	long := bytes.Repeat([]byte("x"), inodeCacheTarget+1)
	put(Inode{Ino: 6, Mode: 0o120777, Nlink: 1, Target: long})
	if in, err := x.GetInode(6); err != nil || !bytes.Equal(in.Target, long) {
		t.Fatalf("GetInode of a symlink given a long target: %q, %v; want the long target", in.Target, err)
	}
	if _, ok := x.icache.get(6); ok {
		t.Errorf("the cache keeps a symlink with a target of %d bytes", len(long))
	}

	// Two batches whose cache updates come in the other order.
	c := x.icache
	c.wrote(1000, []inodeWrite{{in: Inode{Ino: 7, Mtime: 20}}})
	c.wrote(999, []inodeWrite{{in: Inode{Ino: 7, Mtime: 10}}})
	if in, ok := c.get(7); !ok || in.Mtime != 20 {
		t.Errorf("after a newer and then an older batch: %+v, %v; want the newer (mtime 20)", in, ok)
	}
	c.wrote(998, []inodeWrite{{in: Inode{Ino: 7}, gone: true}})
	if in, ok := c.get(7); !ok || in.Mtime != 20 {
		t.Errorf("an older batch's delete replaced a newer write: %+v, %v", in, ok)
	}

	// Full: emptied, and what older batches wrote is refused after.
	for i := range uint64(inodeCacheMax + 1) {
		c.wrote(2000+i, []inodeWrite{{in: Inode{Ino: 100 + i}}})
	}
	c.wrote(1500, []inodeWrite{{in: Inode{Ino: 8, Mtime: 1}}})
	if in, ok := c.get(8); ok {
		t.Errorf("a batch from before the cache was emptied was taken: %+v", in)
	}
	c.wrote(1<<40, []inodeWrite{{in: Inode{Ino: 9, Mtime: 3}}})
	if in, ok := c.get(9); !ok || in.Mtime != 3 {
		t.Errorf("a batch after the cache was emptied: %+v, %v; want it cached", in, ok)
	}
}
