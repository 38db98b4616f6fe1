package meta

import (
	"testing"

	"github.com/fincrypt/fincrypt/vault"
)

// Tests written against the mutants gremlins left alive in this package
// (docs/TESTING.md); each was run by hand against the mutant it names.

// TestBlobPendingSize: a blob no segment holds joins the pending feed with
// its sealed size (plaintext plus vault.Overhead), owner-less; a located
// blob does not, and DeleteBlob takes it off (kills `plainLen+Overhead` →
// `plainLen-Overhead` in PutBlob).
func TestBlobPendingSize(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 1))
	b := x.NewBatch()
	b.PutBlob(ChunkID{1}, 100)
	b.PutLocation(ChunkID{2}, &Location{Segment: SegmentID{9}, Length: 228})
	b.PutBlob(ChunkID{2}, 200)
	b.PutBlob(ChunkID{3}, 300)
	b.DeleteBlob(ChunkID{3})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	var got []Pending
	if err := x.PendingChunks(func(p Pending) error { got = append(got, p); return nil }); err != nil {
		t.Fatal(err)
	}
	want := Pending{ID: ChunkID{1}, Size: 100 + vault.Overhead}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("pending feed %+v, want [%+v]", got, want)
	}
	walk, err := x.FeedFromWalk()
	if err != nil || len(walk) != 1 || walk[ChunkID{1}] != want {
		t.Fatalf("feed from the walk %+v, %v; want %+v alone", walk, err, want)
	}
}
