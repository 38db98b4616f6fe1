package replicate

import (
	"bytes"
	"testing"

	"github.com/fincrypt/fincrypt/meta"
)

// TestLiveHashFollowsTheFold: with the change feed kept, protection's hash
// of the live index comes from the fold: once a view was folded it reads no
// record by a scan however large the index, and it is the hash a walk
// gives; the first one of a process (nothing folded) walks once and seeds
// the fold, so that the snapshot's fold after it reads none either. It
// fails if the live hash walks the index when the fold could give it, or
// if the folded hash is not a walk's.
func TestLiveHashFollowsTheFold(t *testing.T) {
	r := offlineReplicator(t, nil)
	if _, err := r.idx.StartChanges(); err != nil {
		t.Fatal(err)
	}
	for start := 0; start < 2000; start += 500 {
		commit(t, r.idx, func(b *meta.Batch) {
			for i := start; i < start+500; i++ {
				b.PutInode(&meta.Inode{Ino: uint64(100 + i), Mode: 0o100644, Size: uint64(i)})
			}
		})
	}
	kf, err := r.readKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	hashAndCount := func(what string) int64 {
		t.Helper()
		r0 := r.idx.RecordsRead()
		h, err := r.liveHash(kf)
		if err != nil {
			t.Fatal(err)
		}
		n := r.idx.RecordsRead() - r0
		want, err := stateHashWalk(r.idx, kf, r.idx.Export)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(h, want) {
			t.Fatalf("%s: the live hash %x, a walk gives %x", what, h[:8], want[:8])
		}
		return n
	}
	if n := hashAndCount("first"); n < 2000 {
		t.Fatalf("the first live hash of the process read %d records: it cannot have walked", n)
	}
	for i := range 3 {
		commit(t, r.idx, func(b *meta.Batch) {
			b.PutInode(&meta.Inode{Ino: uint64(100 + i), Mode: 0o100600, Size: 1})
			b.DeleteInode(uint64(1000 + i))
		})
		if n := hashAndCount("after a change"); n != 0 {
			t.Fatalf("a live hash after %d changes read %d records by scans: a walk", i+1, n)
		}
	}
	// The snapshot's view folds from the live hash's.
	v, err := r.idx.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, ok, err := r.idx.FoldKept(v); err != nil || !ok {
		t.Fatalf("the view after a live hash does not fold: %v, %v", ok, err)
	}
}
