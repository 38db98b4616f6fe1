package meta

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// TestRefSumTracked: the RefSum an index tracks through commits equals the
// one a walk computes, over random batches of chunk references, blobs and pins
// (put, overwritten, deleted, several times in one batch) committed by four
// writers at once on overlapping keys, with and without sync; Import stops
// the tracking.
func TestRefSumTracked(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		x := openTest(t, t.TempDir(), testKeys(t, byte(seed)))
		start, err := x.WalkRefSum()
		if err != nil {
			t.Fatal(err)
		}
		x.TrackRefs(start)
		var wg sync.WaitGroup
		for w := uint64(0); w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(seed, w))
				for round := 0; round < 60; round++ {
					b := x.NewBatch()
					for op := 0; op < 1+r.IntN(6); op++ {
						ino, idx := 2+r.Uint64N(6), r.Uint64N(4)
						var id ChunkID
						id[0], id[1] = byte(r.IntN(12)), byte(w)
						switch r.IntN(5) {
						case 0, 1:
							b.PutChunk(ino, idx, &ChunkRef{ID: id, Version: r.Uint64N(3), Len: 10})
						case 2:
							b.DeleteChunk(ino, idx)
						case 3: // pins, as versions take and forget them
							id[1] = 0
							p := Pin{Ino: ino, Index: idx, Version: r.Uint64N(3), Len: 10}
							if r.IntN(2) == 0 {
								b.PutPin(id, p)
							} else {
								b.DeletePin(id, p)
							}
						default:
							id[1] = 0 // blobs shared by the writers
							if r.IntN(2) == 0 {
								b.PutBlob(id, uint32(r.IntN(3)))
							} else {
								b.DeleteBlob(id)
							}
						}
					}
					if err := b.Commit(r.IntN(4) == 0); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		got, ok := x.TrackedRefs()
		want, err := x.WalkRefSum()
		if err != nil {
			t.Fatal(err)
		}
		if !ok || got != want {
			t.Fatalf("seed %d: tracked RefSum %d %x (tracking %v), a walk gives %d %x", seed, got.N, got.Sum, ok, want.N, want.Sum)
		}
		if want.N == 0 {
			t.Fatalf("seed %d: the batches left no reference: the test tests nothing", seed)
		}
		x.Close()
	}
	// Import writes records the tracker cannot follow: it stops.
	x := openTest(t, t.TempDir(), testKeys(t, 9))
	defer x.Close()
	x.TrackRefs(RefSum{})
	if err := x.Import(func(func(key, sealed []byte) error) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, ok := x.TrackedRefs(); ok {
		t.Fatal("the index still tracks its RefSum after Import")
	}
}
