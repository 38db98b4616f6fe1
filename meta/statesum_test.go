package meta

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/big"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
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

// assertSumExact checks that the sum the index keeps, in memory and in its
// record, is the one a full walk computes.
func assertSumExact(t *testing.T, x *Index, when string) {
	t.Helper()
	want := walkedSum(t, x)
	rec, err := x.StateSum()
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	x.st.mu.Lock()
	mem := x.st.sum
	x.st.mu.Unlock()
	if rec != want || mem != want {
		t.Fatalf("%s: state sum record %x, in memory %x; a walk gives %x", when, rec[:8], mem[:8], want[:8])
	}
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

func startSum(t *testing.T, x *Index) {
	t.Helper()
	if _, err := x.StartChanges(); err != nil {
		t.Fatal(err)
	}
	if started, err := x.StartStateSum(); err != nil || !started {
		t.Fatalf("StartStateSum: %v, %v", started, err)
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

// TestStateSumFollowsCommits: the sum an index keeps equals a full walk's
// after random batches (sets, overwrites, deletes, counter steps, segment
// records of every kind), with two goroutines committing batches over the
// same keys at once; after close and reopen; and after records existed
// before the sum was started (its first walk).
func TestStateSumFollowsCommits(t *testing.T) {
	keys := testKeys(t, 1)
	dir := filepath.Join(t.TempDir(), "idx")
	x := openTest(t, dir, keys)
	rng := rand.New(rand.NewPCG(5, 6))
	for range 20 { // state from before the sum
		randomBatch(t, x, rng)
		randomSegmentBatch(t, x, rng)
	}
	if _, err := x.StateSum(); !errors.Is(err, ErrNoStateSum) {
		t.Fatalf("StateSum before StartStateSum: %v, want ErrNoStateSum", err)
	}
	if _, err := x.StartStateSum(); err == nil {
		t.Fatal("StartStateSum without the change feed: no error")
	}
	startSum(t, x)
	assertSumExact(t, x, "after start")
	if v, err := x.get([]byte{pFormat}); err != nil || binary.BigEndian.Uint32(v) != formatStateSum {
		t.Fatalf("format record after StartStateSum: %x, %v", v, err)
	}
	for round := range 10 {
		var wg sync.WaitGroup
		for g := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(round), uint64(g)))
				for range 30 {
					randomBatch(t, x, rng)
					randomSegmentBatch(t, x, rng)
				}
			}()
		}
		wg.Wait()
		assertSumExact(t, x, "after concurrent batches")
	}
	x.Close()
	x = openTest(t, dir, keys)
	defer x.Close()
	assertSumExact(t, x, "after reopening")
	if started, err := x.StartStateSum(); err != nil || started {
		t.Fatalf("StartStateSum of a format 4 index: %v, %v; want false, nil", started, err)
	}
	for range 20 {
		randomBatch(t, x, rng)
	}
	assertSumExact(t, x, "after batches since reopening")
}

// TestStateSumSurvivesCrash: the sum is in the batch of the change it
// follows, so a crash that loses unsynced commits (a kill between commit
// and sync) loses both or neither.
func TestStateSumSurvivesCrash(t *testing.T) {
	keys := testKeys(t, 2)
	for seed := uint64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		mem := vfs.NewCrashableMem()
		x, err := Open("idx", keys, Options{FS: mem})
		if err != nil {
			t.Fatal(err)
		}
		startSum(t, x)
		crashAt := 10 + rng.IntN(40)
		for step := range 60 {
			randomBatch(t, x, rng)
			randomSegmentBatch(t, x, rng)
			if step == crashAt {
				clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rand.New(rand.NewPCG(seed, 2))})
				x.Close()
				mem = clone
				if x, err = Open("idx", keys, Options{FS: mem}); err != nil {
					t.Fatal(err)
				}
				assertSumExact(t, x, "after a crash")
			}
		}
		assertSumExact(t, x, "at the end")
		x.Close()
	}
}

// TestStateSumImportAndReset: Import refuses an index that keeps the sum
// (it holds records already), and an imported index's sum, once started, is
// its source's; ResetStateSum moves the live sum by the difference between
// a walk and what the view said, and counts it.
func TestStateSumImportAndReset(t *testing.T) {
	keys := testKeys(t, 1)
	src := openTest(t, filepath.Join(t.TempDir(), "src"), keys)
	defer src.Close()
	rng := rand.New(rand.NewPCG(8, 8))
	for range 30 {
		randomBatch(t, src, rng)
		randomSegmentBatch(t, src, rng)
	}
	kept := openTest(t, filepath.Join(t.TempDir(), "kept"), keys)
	defer kept.Close()
	startSum(t, kept)
	if err := kept.Import(src.Export); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("Import into an index that keeps a state sum: %v, want ErrNotEmpty", err)
	}
	dst := openTest(t, filepath.Join(t.TempDir(), "dst"), keys)
	defer dst.Close()
	if err := dst.Import(src.Export); err != nil {
		t.Fatal(err)
	}
	startSum(t, dst)
	assertSumExact(t, dst, "after Import")
	if s := walkedSum(t, dst); s != walkedSum(t, src) {
		t.Fatal("the imported index's sum is not its source's")
	}

	good := walkedSum(t, dst)
	// A sum gone wrong (as a missed change would leave it): reset from a
	// walk of a view.
	dst.st.mu.Lock()
	dst.st.sum[5] ^= 1
	wrong := dst.st.sum
	dst.st.mu.Unlock()
	if changed, err := dst.ResetStateSum(good, good); err != nil || changed || dst.StateSumResets() != 0 {
		t.Fatalf("a reset with equal sums: %v, %v, %d resets", changed, err, dst.StateSumResets())
	}
	randomBatch(t, dst, rng) // the live index moves on after the view
	if changed, err := dst.ResetStateSum(wrong, good); err != nil || !changed {
		t.Fatalf("reset: %v, %v", changed, err)
	}
	if n := dst.StateSumResets(); n != 1 {
		t.Fatalf("%d resets counted, want 1", n)
	}
	assertSumExact(t, dst, "after the reset")
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

// TestStateSumRecordDamaged: the sum is derived state. A sum record that
// does not open, or is gone, does not stop the index from opening (for
// writing or read-only: `fincrypt check`); the sum is off until
// StartStateSum (the next snapshot) computes it again, exactly. It fails if
// Open refused such an index (the mount and check could not open a vault
// whose every record is intact).
func TestStateSumRecordDamaged(t *testing.T) {
	keys := testKeys(t, 1)
	dir := filepath.Join(t.TempDir(), "idx")
	x := openTest(t, dir, keys)
	startSum(t, x)
	rng := rand.New(rand.NewPCG(9, 9))
	for range 10 {
		randomBatch(t, x, rng)
	}
	want := walkedSum(t, x)
	x.Close()
	k := append([]byte{pRepl}, stateSumName...)
	for _, damage := range []string{"garbage", "gone"} {
		db, err := pebble.Open(dir, &pebble.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if damage == "gone" {
			err = db.Delete(k, pebble.Sync)
		} else {
			err = db.Set(k, []byte("not a sealed sum at all, not 32 bytes"), pebble.Sync)
		}
		if err == nil {
			err = db.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		ro, err := Open(dir, keys, Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("read-only open with the sum record %s: %v", damage, err)
		}
		ro.Close()
		x = openTest(t, dir, keys)
		if x.StateSumOn() {
			t.Fatalf("sum record %s: the sum is on", damage)
		}
		// Commits go on (without the sum), then the next snapshot starts it.
		randomBatch(t, x, rng)
		if started, err := x.StartStateSum(); err != nil || !started {
			t.Fatalf("sum record %s: StartStateSum: %v, %v", damage, started, err)
		}
		assertSumExact(t, x, "started again after the record was "+damage)
		if walkedSum(t, x) == want {
			t.Fatal("the batch after the damage changed nothing")
		}
		want = walkedSum(t, x)
		x.Close()
	}
}

// TestDamagedSegmentRecordStaysReplaceable: a segment record that does not
// open (its element unknown) can still be deleted or replaced, with the
// rest of its batch; the sum is then off until a reset (a base) brings it
// back. It fails if the commit path refused the batch (a repair could never
// replace the record, and the batch's other changes would be lost).
func TestDamagedSegmentRecordStaysReplaceable(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "idx"), testKeys(t, 1))
	defer x.Close()
	startSum(t, x)
	seg := &Segment{ID: SegmentID{4}, Kind: KindData, K: 2, N: 3, Used: 10, Class: 4096}
	for i, replace := range []func(b *Batch){
		func(b *Batch) { b.DeleteSegment(seg.ID) },
		func(b *Batch) { b.PutSegment(seg) },
	} {
		if err := x.db.Set(segmentKey(seg.ID), []byte("damaged segment record"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		b := x.NewBatch()
		replace(b)
		b.PutInode(&Inode{Ino: uint64(100 + i), Mode: 0o100644, Nlink: 1})
		if err := b.Commit(true); err != nil {
			t.Fatalf("replacing a damaged segment record (%d): %v", i, err)
		}
		if _, err := x.GetInode(uint64(100 + i)); err != nil {
			t.Fatalf("the batch's other change (%d): %v", i, err)
		}
		kept, err := x.StateSum()
		if err != nil {
			t.Fatal(err)
		}
		if walked := walkedSum(t, x); walked != kept {
			if changed, err := x.ResetStateSum(kept, walked); err != nil || !changed {
				t.Fatalf("reset: %v %v", changed, err)
			}
		}
		assertSumExact(t, x, "after the reset")
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
