package meta

import (
	"crypto/sha256"
	"math/big"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestRefSumIsSumModulo: a RefSum's Sum is the sum modulo 2^256 of its
// elements' hashes (carries across every 64-bit word included) and N their
// count; subtracting an element undoes adding it, in any order, and plus
// adds two sums.
func TestRefSumIsSumModulo(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 21))
	mod := new(big.Int).Lsh(big.NewInt(1), 256)
	elem := func() refElem {
		var e refElem
		for i := range e {
			e[i] = byte(rng.Uint32())
		}
		if rng.IntN(3) == 0 { // all ones in a word: every carry taken
			for i := range 16 {
				e[i] = 0xff
			}
		}
		return e
	}
	var s, half RefSum
	want := new(big.Int)
	var elems []refElem
	for i := range 200 {
		e := elem()
		elems = append(elems, e)
		s.add(e, 1)
		want.Add(want, new(big.Int).SetBytes(e[:]))
		if i < 100 {
			half.add(e, 1)
		}
	}
	want.Mod(want, mod)
	var got [sha256.Size]byte
	want.FillBytes(got[:])
	if s.Sum != got || s.N != 200 {
		t.Fatalf("sum of 200 elements %x/%d, want %x/200", s.Sum, s.N, got)
	}
	var rest RefSum
	for _, e := range elems[100:] {
		rest.add(e, 1)
	}
	if p := half.plus(rest); p != s {
		t.Fatalf("plus: %x/%d, want %x/%d", p.Sum, p.N, s.Sum, s.N)
	}
	rng.Shuffle(len(elems), func(i, j int) { elems[i], elems[j] = elems[j], elems[i] })
	for _, e := range elems {
		s.add(e, -1)
	}
	if s != (RefSum{}) {
		t.Fatalf("adding and subtracting 200 elements left %x/%d", s.Sum, s.N)
	}
	// A difference (negative count) added with plus.
	var d RefSum
	d.add(elems[0], -1)
	var one RefSum
	one.add(elems[0], 1)
	if p := one.plus(d); p != (RefSum{}) {
		t.Fatalf("an element plus its removal: %x/%d", p.Sum, p.N)
	}
}

// TestTrackedRefSumOverDamagedRecords: a tracked RefSum stays the walk's
// when a batch replaces or deletes a blob or pin record that does not
// decrypt or does not decode (counted as a bad record until then), and when
// it replaces sound ones with other values.
func TestTrackedRefSumOverDamagedRecords(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 8))
	defer x.Close()
	b := x.NewBatch()
	b.PutBlob(ChunkID{1}, 10)
	b.PutPin(ChunkID{2}, Pin{Ino: 5, Index: 1, Version: 1, Len: 4})
	b.PutChunk(5, 0, &ChunkRef{ID: ChunkID{3}, Version: 1, Len: 4})
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	raw := func(key, val []byte) {
		t.Helper()
		if err := x.db.Set(key, val, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	sealed := func(key, plain []byte) []byte { return x.keys.Meta.Seal(nil, plain, key) }
	raw(blobKey(ChunkID{4}), []byte("not sealed, a blob"))
	raw(blobKey(ChunkID{5}), sealed(blobKey(ChunkID{5}), []byte{9}))
	raw(pinKey(ChunkID{6}), []byte("not sealed, a pin"))
	raw(pinKey(ChunkID{7}), sealed(pinKey(ChunkID{7}), []byte{9}))
	start, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	x.TrackRefs(start)
	check := func(what string) {
		t.Helper()
		walked, err := x.WalkRefSum()
		if err != nil {
			t.Fatal(err)
		}
		tracked, ok := x.TrackedRefs()
		if !ok || tracked != walked {
			t.Fatalf("%s: tracked %x/%d (%v), the walk %x/%d", what, tracked.Sum, tracked.N, ok, walked.Sum, walked.N)
		}
	}
	steps := []struct {
		what string
		fn   func(b *Batch)
	}{
		{"a blob that does not open replaced", func(b *Batch) { b.PutBlob(ChunkID{4}, 11) }},
		{"a blob that does not decode replaced", func(b *Batch) { b.PutBlob(ChunkID{5}, 12) }},
		{"a pin that does not open replaced", func(b *Batch) { b.PutPin(ChunkID{6}, Pin{Ino: 6, Version: 2, Len: 1}) }},
		{"a pin that does not decode deleted", func(b *Batch) { b.DeletePin(ChunkID{7}, Pin{Ino: 7}) }},
		{"a sound blob replaced", func(b *Batch) { b.PutBlob(ChunkID{1}, 13) }},
		{"a sound pin replaced", func(b *Batch) { b.PutPin(ChunkID{2}, Pin{Ino: 5, Index: 1, Version: 3, Len: 4}) }},
		{"a chunk reference replaced", func(b *Batch) { b.PutChunk(5, 0, &ChunkRef{ID: ChunkID{8}, Version: 1, Len: 4}) }},
		{"a chunk reference deleted", func(b *Batch) { b.DeleteChunk(5, 0) }},
	}
	for _, st := range steps {
		b := x.NewBatch()
		st.fn(b)
		if err := b.Commit(false); err != nil {
			t.Fatalf("%s: %v", st.what, err)
		}
		check(st.what)
	}
}
