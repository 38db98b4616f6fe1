package meta

import (
	"math/rand/v2"
	"testing"
)

func liveByWalk(t *testing.T, x *Index) map[SegmentID]uint64 {
	t.Helper()
	live, err := x.LiveByWalk()
	if err != nil {
		t.Fatal(err)
	}
	return live
}

// TestLiveFeedExact drives random batches (writes, overwrites, truncates,
// uploads, pins and forgotten pins, blobs and dropped blobs, releases of
// dead locations) and checks after each that the live-bytes feed, applied
// to a count, gives what a walk counts for every segment. A repack (which
// the feed does not follow: its consumer recounts) resets the count from a
// walk. Past its bound the feed reports that it dropped changes.
func TestLiveFeedExact(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		liveRun(t, seed)
	}
	x := openTest(t, t.TempDir(), testKeys(t, 5))
	x.TrackLive(1)
	b := x.NewBatch()
	for i := range 3 {
		id := ChunkID{byte(i + 1)}
		b.PutChunk(2, uint64(i), &ChunkRef{ID: id, Len: 10})
		b.PutLocation(id, &Location{Segment: SegmentID{9}, Length: 38})
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if c, complete := x.TakeLive(); complete || len(c) != 0 {
		t.Fatalf("three changes past a bound of one: %d kept, complete %v", len(c), complete)
	}
	if _, complete := x.TakeLive(); !complete {
		t.Fatal("the feed still reports an overflow after it was taken")
	}
}

func liveRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 21))
	x := openTest(t, t.TempDir(), testKeys(t, 4))
	x.TrackLive(1 << 20)
	newID := func() ChunkID {
		var id ChunkID
		for i := range id {
			id[i] = byte(rng.IntN(256))
		}
		return id
	}
	count := map[SegmentID]uint64{}
	const files = 8
	for step := 0; step < 120; step++ {
		b := x.NewBatch()
		recount := false
		located := map[ChunkID]bool{} // in this batch (the engine locates a chunk once)
		for range 1 + rng.IntN(4) {
			ino := uint64(2 + rng.IntN(files))
			switch op := rng.IntN(12); {
			case op < 4:
				b.PutChunk(ino, uint64(rng.IntN(4)), &ChunkRef{ID: newID(), Version: 1, Len: uint32(1 + rng.IntN(4096))})
			case op == 4:
				from := uint64(rng.IntN(4))
				x.Chunks(ino, from, func(idx uint64, _ ChunkRef) error { b.DeleteChunk(ino, idx); return nil })
			case op < 7: // upload some pending chunks
				var seg SegmentID
				copy(seg[:], newID().String())
				x.PendingChunks(func(p Pending) error {
					if rng.IntN(2) == 0 && !located[p.ID] {
						located[p.ID] = true
						b.PutLocation(p.ID, &Location{Segment: seg, Length: p.Size})
					}
					return nil
				})
			case op == 7: // a version pins a file's chunks, or forget drops them
				x.Chunks(ino, 0, func(idx uint64, ref ChunkRef) error {
					b.PutPin(ref.ID, Pin{Ino: ino, Index: idx, Version: ref.Version, Len: ref.Len})
					return nil
				})
			case op == 8:
				x.Pins(func(id ChunkID, p Pin) error {
					if rng.IntN(2) == 0 {
						b.DeletePin(id, p)
					}
					return nil
				})
			case op == 9: // a backup blob, or one dropped
				if rng.IntN(2) == 0 {
					b.PutBlob(newID(), uint32(rng.IntN(1000)))
				} else if rng.IntN(3) == 0 {
					// a backup saves again a blob it dropped earlier
					x.Locations(func(id ChunkID, l Location) error {
						if !liveRefs(t, x)[id] && rng.IntN(2) == 0 {
							b.PutBlob(id, l.Length-28)
						}
						return nil
					})
				} else {
					x.Blobs(func(id ChunkID, _ uint32) error {
						if rng.IntN(2) == 0 {
							b.DeleteBlob(id)
						}
						return nil
					})
				}
			case op == 10: // repack
				x.Chunks(ino, 0, func(idx uint64, ref ChunkRef) error {
					if ok, _ := x.has(locationKey(ref.ID)); ok {
						b.DeleteLocation(ref.ID)
						b.MarkPending(ref.ID, ino, idx, ref.Len+28)
						recount = true
					}
					return nil
				})
			default: // release dead locations
				live := liveRefs(t, x)
				x.Locations(func(id ChunkID, _ Location) error {
					if !live[id] && rng.IntN(2) == 0 {
						b.DeleteLocation(id)
					}
					return nil
				})
			}
		}
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		changes, complete := x.TakeLive()
		if !complete {
			t.Fatal("the feed dropped changes under its bound")
		}
		for _, c := range changes {
			if c.Live {
				count[c.Segment] += uint64(c.Bytes)
			} else {
				if count[c.Segment] < uint64(c.Bytes) {
					t.Fatalf("seed %d step %d: %d bytes died in segment %s, which counts %d live", seed, step, c.Bytes, c.Segment, count[c.Segment])
				}
				count[c.Segment] -= uint64(c.Bytes)
			}
		}
		want := liveByWalk(t, x)
		if recount {
			count = want
			continue
		}
		for seg, n := range want {
			if count[seg] != n {
				t.Fatalf("seed %d step %d: the feed counts %d live bytes in segment %s, a walk %d", seed, step, count[seg], seg, n)
			}
		}
		for seg, n := range count {
			if n != want[seg] {
				t.Fatalf("seed %d step %d: the feed counts %d live bytes in segment %s, a walk %d", seed, step, n, seg, want[seg])
			}
		}
	}
	x.Close()
}

func liveRefs(t *testing.T, x *Index) map[ChunkID]bool {
	t.Helper()
	refs, err := x.Referenced()
	if err != nil {
		t.Fatal(err)
	}
	return refs
}
