package meta

import (
	"bytes"
	"crypto/sha256"
	"math/big"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// walkedSum is the state sum of a full walk of the index's export.
func walkedSum(t *testing.T, x *Index) StateSum {
	t.Helper()
	s, err := x.SumRecords(x.Export)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// randomSegmentBatch writes, kills or deletes segment records of a few
// segments: data and snapshot ones, dead and live, health fields changed.
func randomSegmentBatch(t *testing.T, x *Index, rng *rand.Rand) {
	t.Helper()
	b := x.NewBatch()
	for range 1 + rng.IntN(3) {
		var id SegmentID
		id[0] = byte(rng.IntN(6))
		switch rng.IntN(4) {
		case 0:
			b.DeleteSegment(id)
		default:
			s := &Segment{ID: id, Kind: KindData, K: 2, N: 3, Healthy: uint8(rng.IntN(4)), Used: 10, Class: 4096, Checked: rng.Int64()}
			if id[0] >= 4 {
				s.Kind = KindSnapshot
			}
			if rng.IntN(3) == 0 {
				s.DeadSince = 1 + rng.Int64N(1000)
			}
			b.PutSegment(s)
		}
	}
	if err := b.Commit(rng.IntN(4) == 0); err != nil {
		t.Fatal(err)
	}
}

// TestStateSumIsSumModulo: Add is addition modulo 2^256 (carries across
// every word), and subtracting undoes it in any order.
func TestStateSumIsSumModulo(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 9))
	mod := new(big.Int).Lsh(big.NewInt(1), 256)
	want := new(big.Int)
	var s StateSum
	var elems []StateElem
	for range 300 {
		var e StateElem
		for i := range e {
			e[i] = byte(rng.Uint32())
		}
		if rng.IntN(3) == 0 {
			for i := 8; i < 24; i++ {
				e[i] = 0xff
			}
		}
		elems = append(elems, e)
		s.Add(e, 1)
		want.Add(want, new(big.Int).SetBytes(e[:]))
	}
	var got StateSum
	want.Mod(want, mod).FillBytes(got[:])
	if s != got {
		t.Fatalf("sum %x, want %x", s, got)
	}
	rng.Shuffle(len(elems), func(i, j int) { elems[i], elems[j] = elems[j], elems[i] })
	for _, e := range elems {
		s.Add(e, -1)
	}
	if s != (StateSum{}) {
		t.Fatalf("adding and subtracting left %x", s)
	}
}

// TestStateSumOfSegments: of a segment record, the sum takes a data
// segment's id and whether it is dead, nothing of its health nor of other
// kinds of segment.
func TestStateSumOfSegments(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "idx"), testKeys(t, 1))
	defer x.Close()
	startSum(t, x)
	put := func(s *Segment) StateSum {
		t.Helper()
		b := x.NewBatch()
		b.PutSegment(s)
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		assertSumExact(t, x, "after a segment record")
		return walkedSum(t, x)
	}
	empty := walkedSum(t, x)
	if s := put(&Segment{ID: SegmentID{9}, Kind: KindSnapshot, Used: 5}); s != empty {
		t.Fatal("a snapshot segment's record changed the sum")
	}
	live := put(&Segment{ID: SegmentID{1}, Kind: KindData, Healthy: 3, Checked: 1})
	if live == empty {
		t.Fatal("a data segment's record left the sum as it was")
	}
	if s := put(&Segment{ID: SegmentID{1}, Kind: KindData, Healthy: 1, Checked: 2, Used: 7}); s != live {
		t.Fatal("a data segment's health changed the sum")
	}
	if s := put(&Segment{ID: SegmentID{1}, Kind: KindData, DeadSince: 5}); s == live {
		t.Fatal("a data segment's death left the sum as it was")
	}
}

// TestStateSumLastRecordWins: the sum counts, of a batch's records of one
// key, the last: a key set twice, set then deleted, deleted then set, a
// segment turned from data (an element) into snapshot (none) and back, all
// in one batch each; and a batch built before the sum was started and
// committed after it counts too.
func TestStateSumLastRecordWins(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "idx"), testKeys(t, 1))
	defer x.Close()
	seg := func(id byte, kind SegmentKind, dead int64) *Segment {
		return &Segment{ID: SegmentID{id}, Kind: kind, K: 2, N: 3, Used: 10, Class: 4096, DeadSince: dead}
	}
	b := x.NewBatch()
	b.PutInode(&Inode{Ino: 5, Mode: 0o100644, Size: 1})
	b.PutSegment(seg(2, KindData, 0))
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	early := x.NewBatch() // built while the sum is off
	early.PutInode(&Inode{Ino: 9, Mode: 0o100644, Size: 1})
	early.PutInode(&Inode{Ino: 9, Mode: 0o100644, Size: 2})
	startSum(t, x)
	if err := early.Commit(false); err != nil {
		t.Fatal(err)
	}
	assertSumExact(t, x, "a batch built before the start")
	steps := []struct {
		name string
		fill func(b *Batch)
	}{
		{"set twice", func(b *Batch) {
			b.PutInode(&Inode{Ino: 5, Mode: 0o100644, Size: 2})
			b.PutInode(&Inode{Ino: 5, Mode: 0o100644, Size: 3})
		}},
		{"new key set twice", func(b *Batch) {
			b.PutInode(&Inode{Ino: 6, Mode: 0o100644, Size: 1})
			b.PutInode(&Inode{Ino: 6, Mode: 0o100644, Size: 4})
		}},
		{"set then deleted", func(b *Batch) {
			b.PutInode(&Inode{Ino: 5, Mode: 0o100644, Size: 5})
			b.DeleteInode(5)
			b.PutInode(&Inode{Ino: 7, Mode: 0o100644, Size: 1})
			b.DeleteInode(7)
		}},
		{"deleted then set", func(b *Batch) {
			b.DeleteInode(6)
			b.PutInode(&Inode{Ino: 6, Mode: 0o100644, Size: 6})
			b.DeleteInode(8)
			b.PutInode(&Inode{Ino: 8, Mode: 0o100644, Size: 1})
		}},
		{"segment data then snapshot", func(b *Batch) {
			b.PutSegment(seg(2, KindData, 7))
			b.PutSegment(seg(2, KindSnapshot, 0))
			b.PutSegment(seg(3, KindData, 0))
			b.PutSegment(seg(3, KindSnapshot, 0))
		}},
		{"segment snapshot then data", func(b *Batch) {
			b.PutSegment(seg(2, KindSnapshot, 0))
			b.PutSegment(seg(2, KindData, 9))
			b.PutSegment(seg(4, KindSnapshot, 0))
			b.PutSegment(seg(4, KindData, 0))
			b.DeleteSegment(seg(4, 0, 0).ID)
			b.PutSegment(seg(4, KindData, 3))
		}},
	}
	for _, s := range steps {
		b := x.NewBatch()
		s.fill(b)
		if err := b.Commit(false); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		assertSumExact(t, x, s.name)
	}
}

// TestRecordElemAsDocumented: a record's element is SHA-256("fincrypt state
// elem v2" 0x00 || keylen(4) || key || sealed value) (docs/FORMAT.md), so
// that a change of how it is hashed cannot change what a stored sum means
// (every other test computes both sides with recordElem).
func TestRecordElemAsDocumented(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 1))
	for _, n := range []int{1, 9, 100, 300, 5000} {
		for _, klen := range []int{1, 9, 25} {
			if klen > n {
				continue
			}
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			key, sealed := b[:klen], b[klen:]
			h := sha256.New()
			h.Write([]byte("fincrypt state elem v2\x00"))
			h.Write([]byte{byte(klen >> 24), byte(klen >> 16), byte(klen >> 8), byte(klen)})
			h.Write(key)
			h.Write(sealed)
			if got := recordElem(key, sealed); !bytes.Equal(got[:], h.Sum(nil)) {
				t.Fatalf("element of a %d-byte key and %d-byte value: %x, want %x", klen, len(sealed), got, h.Sum(nil))
			}
		}
	}
}
