package meta

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
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

// TestWalkParallelRefSum: the RefSum a parallel walk sums as it visits
// equals WalkRefSum's, over chunk references, blobs, pins and records that
// do not open (one chunk reference, one in another kind's range), with the
// caller's callbacks still called for each; and the walk reads each record
// once.
func TestWalkParallelRefSum(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 7))
	defer x.Close()
	b := x.NewBatch()
	for i := uint64(0); i < 50; i++ {
		id := ChunkID{byte(i), 1}
		b.PutInode(&Inode{Ino: 10 + i, Mode: 0o100644, Nlink: 1})
		b.PutChunk(10+i, i%3, &ChunkRef{ID: id, Version: i, Len: uint32(i)})
		if i%5 == 0 {
			b.PutBlob(ChunkID{byte(i), 2}, uint32(i))
			b.PutPin(ChunkID{byte(i), 3}, Pin{Ino: 10 + i, Index: 0, Version: i, Len: 1})
		}
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	for _, key := range [][]byte{key16(pChunk, 99, 0), key8(pInode, 98)} {
		if err := x.db.Set(key, []byte("not sealed"), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	want, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	if want.N != 50+10+10+2 {
		t.Fatalf("WalkRefSum counts %d elements, want 72", want.N)
	}
	before := x.RecordsRead()
	var mu sync.Mutex
	var chunks, blobs, pins, bad int
	got, err := x.WalkParallelRefSum(Visitor{
		Chunk: func(uint64, uint64, ChunkRef) { mu.Lock(); chunks++; mu.Unlock() },
		Blob:  func(ChunkID, uint32) { mu.Lock(); blobs++; mu.Unlock() },
		Pin:   func(ChunkID, Pin) { mu.Lock(); pins++; mu.Unlock() },
		Bad:   func([]byte, error) { mu.Lock(); bad++; mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("parallel walk's RefSum %d %x, WalkRefSum %d %x", got.N, got.Sum, want.N, want.Sum)
	}
	if chunks != 50 || blobs != 10 || pins != 10 || bad != 2 {
		t.Fatalf("callbacks: %d chunks, %d blobs, %d pins, %d bad; want 50, 10, 10, 2", chunks, blobs, pins, bad)
	}
	read := x.RecordsRead() - before
	x.Walk(Visitor{})
	if all := x.RecordsRead() - before - read; read != all {
		t.Fatalf("the parallel walk read %d records, the index holds %d", read, all)
	}
	// Without callbacks, the sum is the same.
	if got, err := x.WalkParallelRefSum(Visitor{}); err != nil || got != want {
		t.Fatalf("parallel walk without callbacks: %d %x, %v; want %d %x", got.N, got.Sum, err, want.N, want.Sum)
	}
}
