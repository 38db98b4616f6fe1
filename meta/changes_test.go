package meta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/fincrypt/fincrypt/vault"
)

// exportMap reads x's Export into a map of key to sealed value.
func exportMap(t *testing.T, x *Index) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := x.Export(func(k, v []byte) error { out[string(k)] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// applyChanges applies a view's change feed to base (a copy is returned),
// checking that the keys come in order.
func applyChanges(t *testing.T, v *ChangeView, base map[string]string) (map[string]string, int) {
	t.Helper()
	out := make(map[string]string, len(base))
	for k, val := range base {
		out[k] = val
	}
	var last []byte
	n := 0
	err := v.Changes(func(k, sealed []byte, deleted bool) error {
		if last != nil && bytes.Compare(last, k) >= 0 {
			t.Fatalf("change feed key %x after %x: not in key order", k, last)
		}
		last = bytes.Clone(k)
		n++
		if deleted {
			delete(out, string(k))
		} else {
			out[string(k)] = string(sealed)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, n
}

func sameMaps(a, b map[string]string) (string, bool) {
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return k, false
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			return k, false
		}
	}
	return "", true
}

// randomBatch commits a batch of random changes of the kinds the file
// system and the engine make: inodes written and deleted, chunk references,
// locations, engine state and pending marks (which the feed must skip),
// and now and then a counter step.
func randomBatch(t *testing.T, x *Index, rng *rand.Rand) {
	t.Helper()
	b := x.NewBatch()
	for range 1 + rng.IntN(4) {
		ino := uint64(2 + rng.IntN(40))
		switch rng.IntN(6) {
		case 0:
			b.PutInode(&Inode{Ino: ino, Mode: 0o100644, Size: uint64(rng.IntN(1 << 20))})
		case 1:
			b.DeleteInode(ino)
		case 2:
			var id ChunkID
			id[0], id[1] = byte(rng.IntN(256)), byte(ino)
			b.PutChunk(ino, uint64(rng.IntN(3)), &ChunkRef{ID: id, Version: 1, Len: 10})
		case 3:
			b.DeleteChunk(ino, uint64(rng.IntN(3)))
		case 4:
			var id ChunkID
			id[0] = byte(rng.IntN(256))
			b.PutLocation(id, &Location{Offset: uint32(rng.IntN(100)), Length: 10})
		case 5:
			b.PutRepl("engine-state", []byte{byte(rng.IntN(256))})
		}
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if rng.IntN(8) == 0 {
		for range 1 + rng.IntN(3) { // NextIno steps its ceiling (a direct write) now and then
			if _, err := x.NextIno(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestChangeFeedOffUntilStarted: a new index (a vault that never takes
// network snapshots) keeps no change feed and stays format 2, so it grows no
// records for a feed nobody drops.
func TestChangeFeedOffUntilStarted(t *testing.T) {
	keys := testKeys(t, 1)
	x := openTest(t, filepath.Join(t.TempDir(), "idx"), keys)
	defer x.Close()
	randomBatch(t, x, rand.New(rand.NewPCG(1, 2)))
	if n, err := x.ChangeCount(); err != nil || n != 0 {
		t.Fatalf("%d change records in an index that does not keep the feed (%v)", n, err)
	}
	if _, err := x.ChangeView(); !errors.Is(err, ErrNoChanges) {
		t.Fatalf("ChangeView of an index without the feed: %v, want ErrNoChanges", err)
	}
	if v, err := x.get([]byte{pFormat}); err != nil || binary.BigEndian.Uint32(v) != formatFeed {
		t.Fatalf("a new index's format record: %x, %v; want %d", v, err, formatFeed)
	}
}

// TestChangeFeedReplaysToTheView drives random batches (and counter steps)
// from another goroutine while views are cut, and checks for each pair of
// successive views that the first one's export with the second one's feed
// applied is exactly the second one's export, after the first one's epoch
// was dropped: no change is lost by the cut or by the drop, whatever the
// interleaving. Then the index is closed and opened again (its open epoch
// is not stored) and the same holds.
func TestChangeFeedReplaysToTheView(t *testing.T) {
	keys := testKeys(t, 1)
	dir := filepath.Join(t.TempDir(), "idx")
	x := openTest(t, dir, keys)
	rng := rand.New(rand.NewPCG(7, 8))
	for range 20 { // before the feed: only a base can hold these
		randomBatch(t, x, rng)
	}
	if started, err := x.StartChanges(); err != nil || !started {
		t.Fatalf("StartChanges: %v, %v", started, err)
	}
	if started, err := x.StartChanges(); err != nil || started {
		t.Fatalf("StartChanges again: %v, %v; want false", started, err)
	}
	check := func(x *Index, rounds int, seed uint64) {
		prev, err := x.ChangeView()
		if err != nil {
			t.Fatal(err)
		}
		base := exportMap(t, prev.Index) // a base: the whole view
		for round := range rounds {
			var wg sync.WaitGroup
			stop := make(chan struct{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				wr := rand.New(rand.NewPCG(seed, uint64(round)))
				for i := 0; i < 200; i++ {
					select {
					case <-stop:
						if i >= 5 {
							return
						}
					default:
					}
					randomBatch(t, x, wr)
				}
			}()
			// Cut while the writer runs, then drop the previous view's
			// epoch while it still runs.
			v, err := x.ChangeView()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := x.DropChanges(prev.Epoch); err != nil {
				t.Fatal(err)
			}
			close(stop)
			wg.Wait()
			got, _ := applyChanges(t, v, base)
			want := exportMap(t, v.Index)
			if k, ok := sameMaps(got, want); !ok {
				t.Fatalf("round %d: the previous view's export with this view's feed applied differs from this view's export at key %x", round, k)
			}
			for k := range want {
				if !snapshotted([]byte(k)) {
					t.Fatalf("export holds key %x, which is not snapshot state", k)
				}
			}
			prev.Close()
			prev, base = v, want
		}
		prev.Close()
	}
	check(x, 12, 1)
	x.Close()
	y := openTest(t, dir, keys)
	defer y.Close()
	if !y.ChangesOn() {
		t.Fatal("the change feed is off after the index was opened again")
	}
	check(y, 6, 2)
	// Dropping the newest view's epoch with nothing written since leaves
	// nothing: every record is of that epoch or older.
	v, err := y.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
	if _, err := y.DropChanges(v.Epoch); err != nil {
		t.Fatal(err)
	}
	if n, err := y.ChangeCount(); err != nil || n != 0 {
		t.Fatalf("%d change records left after dropping the newest epoch with no write since (%v)", n, err)
	}
}

// TestChangeFeedKeepsLaterChanges: a key changed again after a view was cut
// keeps its record when that view's epoch is dropped (the next delta must
// carry its new value), a key changed only before loses it, and a deleted
// key comes as deleted.
func TestChangeFeedKeepsLaterChanges(t *testing.T) {
	keys := testKeys(t, 1)
	x := openTest(t, filepath.Join(t.TempDir(), "idx"), keys)
	defer x.Close()
	if _, err := x.StartChanges(); err != nil {
		t.Fatal(err)
	}
	put := func(ino uint64, size uint64) {
		b := x.NewBatch()
		b.PutInode(&Inode{Ino: ino, Mode: 0o100644, Size: size})
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	put(2, 1)
	put(3, 1)
	put(4, 1)
	v, err := x.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
	put(3, 2) // again, after the cut
	b := x.NewBatch()
	b.DeleteInode(4)
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if _, err := x.DropChanges(v.Epoch); err != nil {
		t.Fatal(err)
	}
	w, err := x.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	type ch struct {
		key     string
		deleted bool
	}
	var got []ch
	if err := w.Changes(func(k, _ []byte, deleted bool) error {
		got = append(got, ch{string(k), deleted})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []ch{{string(key8(pInode, 3)), false}, {string(key8(pInode, 4)), true}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("changes after the drop: %+v, want %+v", got, want)
	}
}

// TestWalkKnowsTheChangeFeed: a walk of an index that keeps the change feed
// (what fincrypt check, maintenance and the clean-close RefSum read) finds
// no damage in its records. Before Walk knew them, every one was "unknown
// key": check called the index damaged, and WalkRefSum counted them.
func TestWalkKnowsTheChangeFeed(t *testing.T) {
	keys := testKeys(t, 1)
	x := openTest(t, filepath.Join(t.TempDir(), "idx"), keys)
	defer x.Close()
	before, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.StartChanges(); err != nil {
		t.Fatal(err)
	}
	b := x.NewBatch()
	b.PutInode(&Inode{Ino: 9, Mode: 0o100644})
	b.PutRepl("x", []byte{1})
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if n, err := x.ChangeCount(); err != nil || n != 1 {
		t.Fatalf("%d change records (%v), want 1 (the inode's)", n, err)
	}
	if err := x.Walk(Visitor{Bad: func(key []byte, err error) { t.Fatalf("walk: record %x: %v", key, err) }}); err != nil {
		t.Fatal(err)
	}
	if after, err := x.WalkRefSum(); err != nil || after != before {
		t.Fatalf("RefSum %v after an inode and its change record, %v before (%v)", after, before, err)
	}
}

// BenchmarkCommitChangeFeed: what keeping the change feed costs the write
// path. Batches like a file create (an inode, a directory entry, a chunk
// reference) committed to an index without the feed (a local vault) and to
// one with it (a network vault), alternating, three rounds of 2000 batches
// each: the CPU ratio with/without (feed-cpu-ratio).
func BenchmarkCommitChangeFeed(b *testing.B) {
	keys, err := vaultKeys()
	if err != nil {
		b.Fatal(err)
	}
	var cpu [2][]float64
	for range b.N {
		var idx [2]*Index
		for k := range idx {
			x, err := Open(filepath.Join(b.TempDir(), "idx"), keys, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer x.Close()
			if k == 1 {
				if _, err := x.StartChanges(); err != nil {
					b.Fatal(err)
				}
			}
			idx[k] = x
		}
		for round := range 3 {
			for k, x := range idx {
				c0 := processCPU(b)
				for i := range 2000 {
					ino := uint64(100 + round*2000 + i)
					bt := x.NewBatch()
					bt.PutInode(&Inode{Ino: ino, Mode: 0o100644, Size: 4096, Nlink: 1})
					bt.PutDirent(&Dirent{Parent: RootIno, Name: "file-" + strconv.FormatUint(ino, 10), Ino: ino, Type: 0o100000})
					var id ChunkID
					binary.BigEndian.PutUint64(id[:], ino)
					bt.PutChunk(ino, 0, &ChunkRef{ID: id, Version: 1, Len: 4096})
					if err := bt.Commit(false); err != nil {
						b.Fatal(err)
					}
				}
				cpu[k] = append(cpu[k], (processCPU(b) - c0).Seconds())
			}
		}
	}
	slices.Sort(cpu[0])
	slices.Sort(cpu[1])
	off, on := cpu[0][len(cpu[0])/2], cpu[1][len(cpu[1])/2]
	b.Logf("2000 create-like batches: %.1f ms without the feed (%.1f-%.1f), %.1f ms with it (%.1f-%.1f)",
		off*1000, cpu[0][0]*1000, cpu[0][len(cpu[0])-1]*1000, on*1000, cpu[1][0]*1000, cpu[1][len(cpu[1])-1]*1000)
	b.ReportMetric(on/off, "feed-cpu-ratio")
}

// processCPU is the CPU (user + system) this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func vaultKeys() (*vault.Keys, error) {
	return vault.DeriveKeys(bytes.Repeat([]byte{3}, vault.KeySize))
}

// feedSteps iterates the change feed's key range of x's live store and
// returns the internal entries Pebble stepped over (live records, deleted
// ones and their tombstones) and the records it yielded.
func feedSteps(t *testing.T, x *Index) (steps, records int) {
	t.Helper()
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pChange}, UpperBound: []byte{pChange + 1}})
	if err != nil {
		t.Fatal(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		records++
	}
	st := it.Stats()
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return st.ForwardStepCount[pebble.InternalIterCall] + st.ForwardSeekCount[pebble.InternalIterCall], records
}

// TestDroppedChangesCostNoScan: once a snapshot's changes are dropped, a
// scan of the feed (every delta's export, every drop) steps over what is
// left, not over every record ever dropped. With a point deletion per
// record, a vault's first 100,000 files left 400,000 tombstones that each
// delta's export stepped over until a compaction reached them (0.2 s of
// CPU a delta at 100,000 files, seen through a mount on devnet).
func TestDroppedChangesCostNoScan(t *testing.T) {
	keys := testKeys(t, 1)
	x := openTest(t, filepath.Join(t.TempDir(), "idx"), keys)
	defer x.Close()
	if _, err := x.StartChanges(); err != nil {
		t.Fatal(err)
	}
	const files = 5000
	for start := 0; start < files; start += 500 {
		b := x.NewBatch()
		for i := start; i < start+500; i++ {
			b.PutInode(&Inode{Ino: uint64(2 + i), Mode: 0o100644, Size: 1})
		}
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	v, err := x.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
	// Keys changed again after the cut stay in the feed, the drop's runs
	// split around them.
	kept := []uint64{2, 1000, 1001, 2500, files + 10} // the last one new
	b := x.NewBatch()
	for _, ino := range kept {
		b.PutInode(&Inode{Ino: ino, Mode: 0o100644, Size: 2})
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	n, err := x.DropChanges(v.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	if n != files-len(kept)+1 { // all but the first four kept
		t.Fatalf("dropped %d records, want %d", n, files-len(kept)+1)
	}
	// On disk, as a delta a while after the drop finds it.
	if err := x.db.Flush(); err != nil {
		t.Fatal(err)
	}
	steps, records := feedSteps(t, x)
	if records != len(kept) {
		t.Fatalf("%d records left in the feed, want %d", records, len(kept))
	}
	if steps > 4*len(kept) {
		t.Fatalf("a scan of the feed's %d records stepped over %d entries: the %d dropped ones are still in its way", records, steps, n)
	}
	w, err := x.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var got []uint64
	if err := w.Changes(func(k, _ []byte, deleted bool) error {
		if deleted || k[0] != pInode {
			t.Fatalf("change %x (deleted %v), want inodes only", k, deleted)
		}
		got = append(got, beUint64(k[1:]))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, kept) {
		t.Fatalf("changes after the drop: %v, want %v", got, kept)
	}
}

// BenchmarkDeltaAfterDrop: the feed's work for one change (the delta's scan
// of the feed and the drop after it) in an index whose first 100,000 files
// (FINCRYPT_BENCH_1M: 1,000,000) were dropped from the feed by the snapshot
// that followed them, once the drop is on disk. Three rounds, medians.
func BenchmarkDeltaAfterDrop(b *testing.B) {
	keys, err := vaultKeys()
	if err != nil {
		b.Fatal(err)
	}
	files := 100_000
	if os.Getenv("FINCRYPT_BENCH_1M") != "" {
		files = 1_000_000
	}
	var scan, drop []float64
	for range b.N {
		x, err := Open(filepath.Join(b.TempDir(), "idx"), keys, Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer x.Close()
		if _, err := x.StartChanges(); err != nil {
			b.Fatal(err)
		}
		for start := 0; start < files; start += 2000 {
			bt := x.NewBatch()
			for i := start; i < start+2000; i++ {
				ino := uint64(100 + i)
				bt.PutInode(&Inode{Ino: ino, Mode: 0o100644, Size: 4096, Nlink: 1})
				bt.PutDirent(&Dirent{Parent: RootIno, Name: "file-" + strconv.FormatUint(ino, 10), Ino: ino, Type: 0o100000})
				var id ChunkID
				binary.BigEndian.PutUint64(id[:], ino)
				bt.PutChunk(ino, 0, &ChunkRef{ID: id, Version: 1, Len: 4096})
			}
			if err := bt.Commit(false); err != nil {
				b.Fatal(err)
			}
		}
		cut := func() *ChangeView {
			v, err := x.ChangeView()
			if err != nil {
				b.Fatal(err)
			}
			return v
		}
		v := cut()
		v.Close()
		if _, err := x.DropChanges(v.Epoch); err != nil {
			b.Fatal(err)
		}
		if err := x.db.Flush(); err != nil {
			b.Fatal(err)
		}
		for round := range 3 {
			bt := x.NewBatch()
			bt.PutInode(&Inode{Ino: uint64(10_000_000 + round), Mode: 0o100644, Nlink: 1})
			if err := bt.Commit(false); err != nil {
				b.Fatal(err)
			}
			v := cut()
			c0 := processCPU(b)
			n := 0
			if err := v.Changes(func(_, _ []byte, _ bool) error { n++; return nil }); err != nil {
				b.Fatal(err)
			}
			c1 := processCPU(b)
			v.Close()
			if _, err := x.DropChanges(v.Epoch); err != nil {
				b.Fatal(err)
			}
			c2 := processCPU(b)
			if n != 1 {
				b.Fatalf("%d changes, want 1", n)
			}
			scan = append(scan, (c1-c0).Seconds()*1000)
			drop = append(drop, (c2-c1).Seconds()*1000)
		}
	}
	slices.Sort(scan)
	slices.Sort(drop)
	b.Logf("%d files dropped: the next delta's scan %.2f ms (%.2f-%.2f), its drop %.2f ms (%.2f-%.2f)",
		files, scan[len(scan)/2], scan[0], scan[len(scan)-1], drop[len(drop)/2], drop[0], drop[len(drop)-1])
	b.ReportMetric(scan[len(scan)/2], "scan-ms")
	b.ReportMetric(drop[len(drop)/2], "drop-ms")
}
