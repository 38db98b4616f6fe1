package chunkstore

// Tests written against the mutants of pack.go 734-908 (flush, compaction)
// that outlived the chunk store's tests (issue 21, ninth session).

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/meta"
)

// compactable: a pack is rewritten when less than half of it is live, or
// when it is smaller than an eighth of the pack target; exactly half live
// or exactly an eighth is not enough.
func TestCompactableBounds(t *testing.T) {
	target := packTarget
	for _, tc := range []struct {
		live, size int64
		bad, want  bool
	}{
		{live: target / 2, size: target, want: false},
		{live: target/2 - 1, size: target, want: true},
		{live: target / 8, size: target / 8, want: false},
		{live: target/8 - 1, size: target/8 - 1, want: true},
		{live: 0, size: target, bad: true, want: false},
		{live: 0, size: 1, bad: true, want: false},
	} {
		if got := compactable(&pack{live: tc.live, size: tc.size, bad: tc.bad}); got != tc.want {
			t.Errorf("pack of %d bytes, %d live, bad %v: compactable %v, want %v", tc.size, tc.live, tc.bad, got, tc.want)
		}
	}
}

// A deletion is carried into the active pack only while a pack it may
// apply to remains: once the pack holding the deleted chunk is gone (or
// the deletion is of a chunk in its own pack), a compaction drops it
// instead of copying it from pack to pack for good.
func TestCompactionDropsDeletionsOfGonePacks(t *testing.T) {
	mem := newMem(t)
	const dir = "/vault/store"
	s, put, seqOf := smallPackStore(t, mem, dir, 10, 11)
	// The first pack, all deleted later; the second, its first chunks
	// deleted too, holding the deletions of both.
	first := []meta.ChunkID{put(1000)}
	var second []meta.ChunkID
	for {
		id := put(1000)
		if seqOf(id) != seqOf(first[0]) {
			second = append(second, id)
			break
		}
		first = append(first, id)
	}
	firstSeq := seqOf(first[0])
	second = append(second, put(1000), put(1000))
	keep := put(500)
	if seqOf(keep) != seqOf(second[0]) {
		t.Fatal("the chunk kept is not in the second pack")
	}
	for _, id := range append(append([]meta.ChunkID(nil), first...), second...) {
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	secondSeq := seqOf(keep)
	for {
		if id := put(1000); seqOf(id) > secondSeq+1 {
			break
		}
	}
	carried := 0
	compactHook = func(stage string) {
		if stage == "deletion carried" {
			carried++
		}
	}
	defer func() { compactHook = nil }()
	if err := s.Sync(); err != nil { // compacts
		t.Fatal(err)
	}
	s.packs.mu.RLock()
	_, firstLeft := s.packs.packs[firstSeq]
	_, secondLeft := s.packs.packs[secondSeq]
	s.packs.mu.RUnlock()
	if firstLeft || secondLeft {
		t.Fatalf("first pack left %v, second %v: want both compacted", firstLeft, secondLeft)
	}
	if carried != 0 {
		t.Fatalf("%d deletions carried, whose packs are gone", carried)
	}
	s.Close()
	s2, err := OpenFS(dir, mem)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for _, id := range append(first, second...) {
		if _, err := s2.Get(id, nil); err == nil {
			t.Fatalf("deleted chunk %s back after the compaction", id)
		}
	}
	if _, err := s2.Get(keep, nil); err != nil {
		t.Fatalf("live chunk lost: %v", err)
	}
}

// removeFS fails the removal of pack files with EIO, or finds them
// already gone (removed by someone else), as mode says.
type removeFS struct {
	vfs.FS
	mode atomic.Int32 // 0: remove; 1: EIO; 2: already gone
}

func (r *removeFS) Remove(name string) error {
	if strings.Contains(name, "/"+packsDir+"/") {
		switch r.mode.Load() {
		case 1:
			return &fs.PathError{Op: "remove", Path: name, Err: syscall.EIO}
		case 2:
			if err := r.FS.Remove(name); err != nil {
				return err
			}
		}
	}
	return r.FS.Remove(name)
}

// A compaction whose removal of the old pack fails says so (the sync that
// ran it returns the error); one that finds the old pack already gone has
// nothing to say. Either way every live chunk reads back.
func TestCompactionRemoveErrors(t *testing.T) {
	for _, tc := range []struct {
		mode    int32
		wantErr bool
	}{{1, true}, {2, false}} {
		smallPacks(t, 8<<10)
		rfs := &removeFS{FS: newMem(t)}
		const dir = "/vault/store"
		s, err := OpenFSFormat(dir, rfs, FormatPacks)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(12, uint64(tc.mode)))
		put := func(n int) meta.ChunkID {
			id := NewID()
			if err := s.Put(id, randBytes(rng, n)); err != nil {
				t.Fatal(err)
			}
			return id
		}
		var first []meta.ChunkID
		var keep []meta.ChunkID
		firstSeq := uint64(0)
		for {
			id := put(1000)
			seq := s.packs.lookup(id).p.seq
			if firstSeq == 0 {
				firstSeq = seq
			}
			if seq != firstSeq {
				keep = append(keep, id)
				break
			}
			first = append(first, id)
		}
		keep = append(keep, first[0])
		for _, id := range first[1:] {
			if err := s.Delete(id); err != nil {
				t.Fatal(err)
			}
		}
		rfs.mode.Store(tc.mode)
		err = s.Sync() // compacts the first pack
		rfs.mode.Store(0)
		if tc.wantErr && !errors.Is(err, syscall.EIO) {
			t.Fatalf("sync whose compaction could not remove the old pack: %v, want EIO", err)
		}
		if !tc.wantErr && err != nil {
			t.Fatalf("sync whose compaction found the old pack already gone: %v", err)
		}
		s.packs.mu.RLock()
		_, left := s.packs.packs[firstSeq]
		s.packs.mu.RUnlock()
		if left {
			t.Fatalf("mode %d: the first pack was not compacted", tc.mode)
		}
		for _, id := range keep {
			if _, err := s.Get(id, nil); err != nil {
				t.Fatalf("mode %d: live chunk lost: %v", tc.mode, err)
			}
		}
		s.Close()
	}
}

// A compacted pack's file is closed as well as removed: no descriptor of
// the process is left on a removed pack (one leaked per compaction would
// run a long-lived mount out of descriptors).
func TestCompactionClosesTheOldPack(t *testing.T) {
	smallPacks(t, 8<<10)
	dir := t.TempDir()
	s, err := OpenFormat(dir, FormatPacks)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(14, 15))
	var ids []meta.ChunkID
	for range 40 {
		id := NewID()
		if err := s.Put(id, randBytes(rng, 1000)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids[:35] {
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil { // compacts
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir) && strings.HasSuffix(target, " (deleted)") {
			t.Fatalf("descriptor %s still open on a removed pack: %s", fd.Name(), target)
		}
	}
	for _, id := range ids[35:] {
		if _, err := s.Get(id, nil); err != nil {
			t.Fatalf("live chunk lost: %v", err)
		}
	}
}
