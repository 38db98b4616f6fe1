package chunkstore

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/meta"
)

// dirtyPages returns the pages of file p in [off, off+n) that are dirty in
// the page cache (written, their writeback not started), by cachestat(2).
func dirtyPages(t *testing.T, p string, off, n int64) uint64 {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Cachestat_t
	err = unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{Off: uint64(off), Len: uint64(n)}, &st, 0)
	if errors.Is(err, unix.ENOSYS) {
		t.Skip("cachestat(2) needs Linux 6.5: cannot see the page cache's dirty pages")
	}
	if err != nil {
		t.Fatal(err)
	}
	return st.Dirty
}

// TestLargeWritesStartWriteback: a store that takes a large write starts
// the disk writing the pack as it fills (every writebackStep bytes), so a
// later sync waits only for the last few MiB. Without it the pages stay
// dirty until the kernel's flusher finds them old (30 s by default) or a
// sync writes them all at once.
func TestLargeWritesStartWriteback(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	var sfs unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(dir), &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Type == unix.TMPFS_MAGIC || sfs.Type == unix.RAMFS_MAGIC {
		t.Skipf("%s is in memory: nothing is written back", filepath.Dir(dir))
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	const chunk = 1 << 20
	n := int(3*writebackStep/chunk) + 1 // three steps and a bit: one pack
	for range n {
		if err := s.Put(NewID(), randBytes(rng, chunk)); err != nil {
			t.Fatal(err)
		}
	}
	packs := packFiles(t, dir)
	if len(packs) != 1 {
		t.Fatalf("%d packs, want 1", len(packs))
	}
	// The first two steps were handed to the disk; the kernel may take a
	// while under load, but well under the flusher's 30 s.
	started := 2 * writebackStep
	deadline := time.Now().Add(20 * time.Second)
	for {
		d := dirtyPages(t, packs[0], 0, started)
		if d == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pages of the first %d MiB still dirty after 20 s: their writeback was not started", d, started>>20)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Nothing was promised durable: the store still syncs all of it.
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if d := dirtyPages(t, packs[0], 0, 0); d != 0 {
		t.Fatalf("%d pages dirty after Sync", d)
	}
}

// TestGetFillsABufferOfTheChunksSize: a chunk read into a buffer with room
// for the chunk alone lands in that buffer (the record's header is read
// apart), so a reader with a pooled buffer of a sealed chunk's size
// neither allocates nor moves the chunk after reading it.
func TestGetFillsABufferOfTheChunksSize(t *testing.T) {
	for _, name := range []string{"os", "mem"} {
		t.Run(name, func(t *testing.T) {
			var s *Store
			var err error
			if name == "os" {
				s, err = Open(filepath.Join(t.TempDir(), "store"))
			} else {
				mem := newMem(t)
				s, err = OpenFS("/vault/store", mem)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			rng := rand.New(rand.NewPCG(3, 4))
			ids := make([]meta.ChunkID, 3)
			datas := make([][]byte, 3)
			for i := range ids {
				ids[i], datas[i] = NewID(), randBytes(rng, 1<<20+28)
				if err := s.Put(ids[i], datas[i]); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, 0, 1<<20+28)
			for i, id := range ids {
				out, err := s.Get(id, buf[:0])
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out, datas[i]) {
					t.Fatalf("chunk %d read back differs", i)
				}
				if &out[:1][0] != &buf[:1][0] {
					t.Fatalf("chunk %d: read into a new buffer, not the caller's of cap %d", i, cap(buf))
				}
			}
			// Appending after bytes already in dst keeps them.
			pre := append(make([]byte, 0, 5+len(datas[0])), "head:"...)
			out, err := s.Get(ids[0], pre)
			if err != nil {
				t.Fatal(err)
			}
			if string(out[:5]) != "head:" || !bytes.Equal(out[5:], datas[0]) {
				t.Fatal("Get did not append after dst's bytes")
			}
		})
	}
}
