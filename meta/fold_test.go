package meta

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// startSum turns the change feed on and folds a first view (a walk), so
// that the next fold follows the changes.
func startSum(t *testing.T, x *Index) {
	t.Helper()
	if _, err := x.StartChanges(); err != nil {
		t.Fatal(err)
	}
	v, err := x.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := x.Fold(v); err != nil {
		t.Fatal(err)
	}
}

// assertSumExact takes a view and checks that it folds (no walk) to the
// sum a walk of it computes.
func assertSumExact(t *testing.T, x *Index, when string) {
	t.Helper()
	v, err := x.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	s, ok, err := x.FoldKept(v)
	if err != nil || !ok {
		t.Fatalf("%s: the view does not fold: %v, %v", when, ok, err)
	}
	want, err := x.SumRecords(v.Export)
	if err != nil {
		t.Fatal(err)
	}
	if s != want {
		t.Fatalf("%s: folded sum %x, a walk of the view gives %x", when, s[:8], want[:8])
	}
}

// TestFoldFollowsConcurrentCommits: random batches (records of every kind,
// counter steps, segment records) from several goroutines, while another
// takes change views: some folded, each of which must equal a walk of its
// view, some closed unfolded (their keys carry to the next fold). It fails
// if a commit's keys could miss the cut whose view holds its change, or an
// unfolded view's keys were lost.
func TestFoldFollowsConcurrentCommits(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "idx"), testKeys(t, 1))
	defer x.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	for range 20 { // state from before the feed
		randomBatch(t, x, rng)
		randomSegmentBatch(t, x, rng)
	}
	startSum(t, x)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }); wg.Wait() }
	defer halt() // the writers end before the test does, failed or not
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				randomBatch(t, x, rng)
				if i%3 == 0 {
					randomSegmentBatch(t, x, rng)
				}
			}
		}()
	}
	vrng := rand.New(rand.NewPCG(7, 7))
	folded, chained := 0, 0
	for folded < 40 {
		v, err := x.ChangeView()
		if err != nil {
			t.Fatal(err)
		}
		if vrng.IntN(3) == 0 {
			v.Close() // not folded
			continue
		}
		s, ok, err := x.FoldKept(v)
		if err != nil {
			t.Fatal(err)
		}
		want, err := x.SumRecords(v.Export)
		if err != nil {
			t.Fatal(err)
		}
		v.Close()
		if !ok {
			t.Fatalf("fold %d: a view after a folded one did not fold", folded)
		}
		if s != want {
			t.Fatalf("fold %d: folded sum %x, a walk of the view %x", folded, s[:8], want[:8])
		}
		folded++
		chained++
	}
	halt()
	assertSumExact(t, x, "after the writers")
	if x.FoldHeld() != 0 {
		t.Fatalf("the fold holds %d keys after folding the last view", x.FoldHeld())
	}
}

// TestFoldOverflowWalks: past FoldCap keys the fold drops them: the next
// fold walks (FoldKept says no; Fold is still exact) and seeds the fold,
// and the one after it folds again. A view cut before the drop does not
// seed it. It fails if a fold trusted the keys left after a drop.
func TestFoldOverflowWalks(t *testing.T) {
	defer func(c int) { FoldCap = c }(FoldCap)
	FoldCap = 8
	x := openTest(t, filepath.Join(t.TempDir(), "idx"), testKeys(t, 1))
	defer x.Close()
	startSum(t, x)
	put := func(from, n int) {
		t.Helper()
		for i := range n {
			b := x.NewBatch()
			b.PutInode(&Inode{Ino: uint64(100 + from + i), Mode: 0o100644, Size: uint64(from)})
			if err := b.Commit(false); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 3)
	old, err := x.ChangeView() // cut before the drop, folded after it
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	put(0, 20) // past the cap
	if n := x.FoldHeld(); n > FoldCap {
		t.Fatalf("the fold holds %d keys, the cap is %d", n, FoldCap)
	}
	put(50, 2)
	check := func(v *ChangeView, wantKept bool) {
		t.Helper()
		want, err := x.SumRecords(v.Export)
		if err != nil {
			t.Fatal(err)
		}
		_, ok, err := x.FoldKept(v)
		if err != nil || ok != wantKept {
			t.Fatalf("FoldKept: %v, %v; want %v", ok, err, wantKept)
		}
		if !ok {
			s, err := x.Fold(v)
			if err != nil || s != want {
				t.Fatalf("the walk of the view: %v, sum %x, want %x", err, s[:8], want[:8])
			}
		}
	}
	check(old, false)
	v, err := x.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	check(v, false) // its cut lost keys: a walk, which seeds
	v.Close()
	put(60, 3)
	assertSumExact(t, x, "the fold after the walk")
}

// TestFoldCutSplitsABatch: a batch committed while a view is cut lands in
// exactly one cut: the view's, if the view holds its change, else the
// next. It fails if the keys were noted outside the feed's lock.
func TestFoldCutSplitsABatch(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "idx"), testKeys(t, 1))
	defer x.Close()
	startSum(t, x)
	key := string(key8(pInode, 77))
	in := func(e []foldEntry, seq uint64) bool {
		for _, en := range e {
			if en.seq == seq {
				_, ok := en.keys[key]
				return ok
			}
		}
		return false
	}
	for i := range 30 {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := x.NewBatch()
			b.PutInode(&Inode{Ino: 77, Mode: 0o100644, Size: uint64(i + 1)})
			if err := b.Commit(false); err != nil {
				t.Error(err)
			}
		}()
		v1, err := x.ChangeView()
		if err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		v2, err := x.ChangeView()
		if err != nil {
			t.Fatal(err)
		}
		got, err := v1.GetInode(77)
		seen := err == nil && got.Size == uint64(i+1)
		x.fold.mu.Lock()
		a, b := in(x.fold.pending, v1.seq), in(x.fold.pending, v2.seq)
		x.fold.mu.Unlock()
		if a == b || a != seen {
			t.Fatalf("round %d: the view holds the change: %v; the key in its cut %v, in the next %v", i, seen, a, b)
		}
		for _, v := range []*ChangeView{v1, v2} {
			s, ok, err := x.FoldKept(v)
			want, werr := x.SumRecords(v.Export)
			if err != nil || werr != nil || !ok || s != want {
				t.Fatalf("round %d: fold %v %v %v, exact %v", i, ok, err, werr, s == want)
			}
			v.Close()
		}
	}
}

// TestFoldAfterImportAndDamage: an Import (records written outside the
// feed) makes the next fold walk; a fold over a replaced value that does
// not open skips it (no error) and a walk's sum (a base's, SeedFold) puts
// the fold right again. A view folded twice is refused.
func TestFoldAfterImportAndDamage(t *testing.T) {
	src := openTest(t, filepath.Join(t.TempDir(), "src"), testKeys(t, 1))
	defer src.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10 {
		randomBatch(t, src, rng)
	}
	x := openTest(t, filepath.Join(t.TempDir(), "idx"), testKeys(t, 1))
	defer x.Close()
	startSum(t, x)
	if err := x.Import(src.Export); err != nil {
		t.Fatal(err)
	}
	v, err := x.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := x.FoldKept(v); ok || err != nil {
		t.Fatalf("a fold after an Import: %v, %v; want a walk", ok, err)
	}
	if _, err := x.Fold(v); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Fold(v); err == nil {
		t.Fatal("a view folded twice: no error")
	}
	v.Close()
	assertSumExact(t, x, "after the import's walk")

	seg := &Segment{ID: SegmentID{4}, Kind: KindData, K: 2, N: 3, Used: 10, Class: 4096}
	b := x.NewBatch()
	b.PutSegment(seg)
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	assertSumExact(t, x, "the segment")
	if err := x.db.Set(segmentKey(seg.ID), []byte("damaged segment record"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	// A fold of a view that holds the damage (behind the feed: no key).
	v, err = x.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := x.FoldKept(v); err != nil || !ok {
		t.Fatalf("a fold with no change: %v, %v", ok, err)
	}
	v.Close()
	b = x.NewBatch()
	b.DeleteSegment(seg.ID)
	b.PutInode(&Inode{Ino: 500, Mode: 0o100644, Nlink: 1})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	v, err = x.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	folded, ok, err := x.FoldKept(v)
	if err != nil || !ok {
		t.Fatalf("a fold over a damaged old value: %v, %v", ok, err)
	}
	walked, err := x.SumRecords(v.Export)
	if err != nil {
		t.Fatal(err)
	}
	if folded == walked {
		t.Fatal("the fold subtracted the element of a record that does not open")
	}
	x.SeedFold(v, walked)
	assertSumExact(t, x, "after a base's walk")
}

// BenchmarkFold: a fold of a view after 100 changed keys, in an index of
// 10k inodes (it reads the changed keys twice, nothing else).
func BenchmarkFold(b *testing.B) {
	x, err := Open(filepath.Join(b.TempDir(), "idx"), testKeysB(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer x.Close()
	if _, err := x.StartChanges(); err != nil {
		b.Fatal(err)
	}
	for i := range 10000 {
		bt := x.NewBatch()
		bt.PutInode(&Inode{Ino: uint64(2 + i), Mode: 0o100644})
		if err := bt.Commit(false); err != nil {
			b.Fatal(err)
		}
	}
	fold := func() {
		v, err := x.ChangeView()
		if err != nil {
			b.Fatal(err)
		}
		defer v.Close()
		if _, err := x.Fold(v); err != nil {
			b.Fatal(err)
		}
	}
	fold()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		for j := range 100 {
			bt := x.NewBatch()
			bt.PutInode(&Inode{Ino: uint64(2 + j), Mode: 0o100644, Size: uint64(i)})
			if err := bt.Commit(false); err != nil {
				b.Fatal(fmt.Sprint(err))
			}
		}
		b.StartTimer()
		fold()
	}
}
