package meta

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// foldOnce takes a view and folds it (a walk if the fold holds nothing),
// returning the fold's sum, a walk's, and the records the fold read by
// scans (a walk reads every record).
func foldOnce(t testing.TB, x *Index) (folded, walked StateSum, scanned int64) {
	t.Helper()
	v, err := x.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	r0 := x.RecordsRead()
	if folded, err = x.Fold(v); err != nil {
		t.Fatal(err)
	}
	scanned = x.RecordsRead() - r0
	if walked, err = x.SumRecords(v.Export); err != nil {
		t.Fatal(err)
	}
	return folded, walked, scanned
}

var cleanTag = []byte("clean-close-mark")

// TestFoldResumesAfterCleanClose: an index closed with CommitFoldSum and
// reopened with its tag folds its first view without a walk (no record
// read by a scan), to the sum a walk gives; so does the live sum. It fails
// if the first fold of a process walks, or if the kept sum is not the
// index's.
func TestFoldResumesAfterCleanClose(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "idx")
	keys := testKeys(t, 1)
	x := openTest(t, dir, keys)
	rng := rand.New(rand.NewPCG(21, 22))
	for range 50 {
		randomBatch(t, x, rng)
		randomSegmentBatch(t, x, rng)
	}
	startSum(t, x)
	for range 30 { // changes after the last folded view: the close folds them
		randomBatch(t, x, rng)
	}
	b := x.NewBatch()
	b.PutRepl("mark", cleanTag)
	if saved, err := x.CommitFoldSum(b, cleanTag); err != nil || !saved {
		t.Fatalf("CommitFoldSum: %v, %v", saved, err)
	}
	x.Close()

	x = openTest(t, dir, keys)
	if !x.ResumeFold(cleanTag) {
		t.Fatal("ResumeFold refused the sum its clean close kept")
	}
	for range 20 {
		randomBatch(t, x, rng)
		randomSegmentBatch(t, x, rng)
	}
	live, ok, err := x.LiveSum()
	if err != nil || !ok {
		t.Fatalf("LiveSum after a resume: %v, %v", ok, err)
	}
	if want, err := x.SumRecords(x.Export); err != nil || live != want {
		t.Fatalf("live sum %x, a walk gives %x (%v)", live[:8], want[:8], err)
	}
	folded, walked, scanned := foldOnce(t, x)
	if scanned != 0 {
		t.Fatalf("the first fold after a clean close scanned %d records (a walk)", scanned)
	}
	if folded != walked {
		t.Fatalf("first fold after the resume: %x, a walk gives %x", folded[:8], walked[:8])
	}
	x.Close()

	// Resumed once: the record is gone, whatever this process did.
	x = openTest(t, dir, keys)
	defer x.Close()
	if x.ResumeFold(cleanTag) {
		t.Fatal("a kept sum resumed twice")
	}
}

// TestFoldResumeRefused: the kept sum is not trusted with another tag (an
// older fincrypt's clean close wrote a new mark), after a batch of this
// process, or when the close could not fold; the first fold then walks and
// matches a walk.
func TestFoldResumeRefused(t *testing.T) {
	keys := testKeys(t, 1)
	closed := func(t *testing.T, fold bool) string {
		dir := filepath.Join(t.TempDir(), "idx")
		x := openTest(t, dir, keys)
		rng := rand.New(rand.NewPCG(31, 32))
		for range 30 {
			randomBatch(t, x, rng)
		}
		if fold {
			startSum(t, x)
		} else if _, err := x.StartChanges(); err != nil {
			t.Fatal(err)
		}
		randomBatch(t, x, rng)
		b := x.NewBatch()
		b.PutRepl("mark", cleanTag)
		saved, err := x.CommitFoldSum(b, cleanTag)
		if err != nil || saved != fold {
			t.Fatalf("CommitFoldSum: saved %v (want %v), %v", saved, fold, err)
		}
		x.Close()
		return dir
	}
	walks := func(t *testing.T, x *Index) {
		t.Helper()
		folded, walked, scanned := foldOnce(t, x)
		if scanned == 0 || folded != walked {
			t.Fatalf("first fold: scanned %d, %x against a walk's %x", scanned, folded[:8], walked[:8])
		}
	}
	t.Run("another tag", func(t *testing.T) {
		x := openTest(t, closed(t, true), keys)
		defer x.Close()
		if x.ResumeFold([]byte("another-mark-16b")) {
			t.Fatal("resumed with another tag")
		}
		walks(t, x)
	})
	t.Run("a batch first", func(t *testing.T) {
		x := openTest(t, closed(t, true), keys)
		defer x.Close()
		b := x.NewBatch()
		b.PutInode(&Inode{Ino: 3, Mode: 0o100644, Size: 77})
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		if x.ResumeFold(cleanTag) {
			t.Fatal("resumed after a batch of this process")
		}
		walks(t, x)
	})
	t.Run("closed unfolded", func(t *testing.T) {
		x := openTest(t, closed(t, false), keys)
		defer x.Close()
		if x.ResumeFold(cleanTag) {
			t.Fatal("resumed a sum the close could not fold")
		}
		walks(t, x)
	})
}

// TestFoldSumAcrossCrashes: an index on a crashable file system, closed
// with a kept sum, reopened and resumed, changed (some commits synced, some
// not) and crashed (a random part of what was not synced lost), several
// times: every first fold after a reopen equals a walk, and one that
// follows a crash walks (the record was deleted by the resume).
func TestFoldSumAcrossCrashes(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 41))
			keys := testKeys(t, 1)
			mem := vfs.NewCrashableMem()
			open := func() *Index {
				x, err := Open("idx", keys, Options{FS: mem})
				if err != nil {
					t.Fatal(err)
				}
				return x
			}
			x := open()
			startSum(t, x)
			clean := false
			for round := range 8 {
				for range 1 + rng.IntN(20) {
					randomBatch(t, x, rng)
					if rng.IntN(4) == 0 {
						randomSegmentBatch(t, x, rng)
					}
				}
				if rng.IntN(2) == 0 {
					b := x.NewBatch()
					b.PutRepl("mark", cleanTag)
					if saved, err := x.CommitFoldSum(b, cleanTag); err != nil || !saved {
						t.Fatalf("round %d: CommitFoldSum: %v, %v", round, saved, err)
					}
					x.Close()
					clean = true
				} else {
					// A crash: the next open finds what the log kept.
					clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rand.New(rand.NewPCG(seed, uint64(round)))})
					x.Close()
					mem = clone
					clean = false
				}
				x = open()
				resumed := x.ResumeFold(cleanTag)
				if resumed != clean {
					t.Fatalf("round %d: resumed %v after a close that was clean: %v", round, resumed, clean)
				}
				folded, walked, scanned := foldOnce(t, x)
				if folded != walked {
					t.Fatalf("round %d (clean %v): first fold %x, a walk gives %x", round, clean, folded[:8], walked[:8])
				}
				if resumed != (scanned == 0) {
					t.Fatalf("round %d: resumed %v, the first fold scanned %d records", round, resumed, scanned)
				}
			}
			x.Close()
		})
	}
}

// BenchmarkFirstFold: the first fold of a process (what the first delta
// after a mount, or protection's first live hash, waits for) in an index of
// FOLD_BENCH_RECORDS records (default 100,000: a quarter files, each an
// inode, a directory entry, a chunk reference and a location), after the
// process opened the index and committed one new file. Each iteration
// opens the index twice, alternated: once without the kept sum (walk: as
// every mount did before it was kept), once resuming it (resumed); both
// close with CommitFoldSum. Reported per fold: walk-ms, resumed-ms, the
// records each read by scans, and resume-call-ms (ResumeFold itself: a
// read and a synced delete of the record).
func BenchmarkFirstFold(b *testing.B) {
	records := 100_000
	if s := os.Getenv("FOLD_BENCH_RECORDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		records = n
	}
	dir := filepath.Join(b.TempDir(), "idx")
	keys := testKeysB(b)
	x, err := Open(dir, keys, Options{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := x.StartChanges(); err != nil {
		b.Fatal(err)
	}
	seg := SegmentID{0xda}
	file := func(bt *Batch, i int) {
		ino := uint64(100 + i)
		var id ChunkID
		binary.BigEndian.PutUint64(id[:], ino)
		bt.PutLocation(id, &Location{Segment: seg, Offset: uint32(i) * 4124, Length: 4124})
		bt.PutInode(&Inode{Ino: ino, Mode: 0o100644, Size: 4096, Nlink: 1})
		bt.PutDirent(&Dirent{Parent: RootIno, Name: fmt.Sprintf("file-%07d", i), Ino: ino, Type: 0o100000})
		bt.PutChunk(ino, 0, &ChunkRef{ID: id, Version: 1, Len: 4096})
	}
	files := records / 4
	for start := 0; start < files; start += 2000 {
		bt := x.NewBatch()
		for i := start; i < min(start+2000, files); i++ {
			file(bt, i)
		}
		if err := bt.Commit(false); err != nil {
			b.Fatal(err)
		}
	}
	// A first snapshot: folded (a walk), and its changes dropped.
	v, err := x.ChangeView()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := x.Fold(v); err != nil {
		b.Fatal(err)
	}
	if _, err := x.DropChanges(v.Epoch); err != nil {
		b.Fatal(err)
	}
	v.Close()
	tag := bytes.Repeat([]byte{7}, foldTagSize)
	closeKept := func(x *Index) {
		bt := x.NewBatch()
		bt.PutRepl("mark", tag)
		if saved, err := x.CommitFoldSum(bt, tag); err != nil || !saved {
			b.Fatalf("CommitFoldSum: %v, %v", saved, err)
		}
		if err := x.Close(); err != nil {
			b.Fatal(err)
		}
	}
	closeKept(x)
	next := files
	var resumeCost time.Duration // ResumeFold itself (a synced delete)
	first := func(resume bool) (time.Duration, int64) {
		x, err := Open(dir, keys, Options{})
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if resume && !x.ResumeFold(tag) {
			b.Fatal("the kept sum did not resume")
		}
		if resume {
			resumeCost += time.Since(t0)
		}
		bt := x.NewBatch()
		file(bt, next)
		next++
		if err := bt.Commit(false); err != nil {
			b.Fatal(err)
		}
		v, err := x.ChangeView()
		if err != nil {
			b.Fatal(err)
		}
		r0 := x.RecordsRead()
		t0 = time.Now()
		if _, err := x.Fold(v); err != nil {
			b.Fatal(err)
		}
		d := time.Since(t0)
		n := x.RecordsRead() - r0
		v.Close()
		closeKept(x)
		return d, n
	}
	var walk, resumed time.Duration
	var walkRead, resumedRead int64
	b.ResetTimer()
	for range b.N {
		d, n := first(false)
		walk, walkRead = walk+d, walkRead+n
		d, n = first(true)
		resumed, resumedRead = resumed+d, resumedRead+n
	}
	b.ReportMetric(float64(walk.Microseconds())/1000/float64(b.N), "walk-ms")
	b.ReportMetric(float64(resumed.Microseconds())/1000/float64(b.N), "resumed-ms")
	b.ReportMetric(float64(resumeCost.Microseconds())/1000/float64(b.N), "resume-call-ms")
	b.ReportMetric(float64(walkRead)/float64(b.N), "walk-records")
	b.ReportMetric(float64(resumedRead)/float64(b.N), "resumed-records")
}
