package backup

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCountMatchesThePass: the stat-only counting walk behind the ETA finds the files and
// bytes a pass keeps, with the same excludes, .fincryptignore files, caches, hard links and
// skipped kinds.
func TestCountMatchesThePass(t *testing.T) {
	repo := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src)
	writeFile(t, filepath.Join(src, "skip.tmp"), []byte("s"), 0o644)
	writeFile(t, filepath.Join(src, "proj/.fincryptignore"), []byte("build\n*.o\n"), 0o644)
	writeFile(t, filepath.Join(src, "proj/main.o"), []byte("obj"), 0o644)
	writeFile(t, filepath.Join(src, "proj/build/out"), []byte("bin"), 0o644)
	writeFile(t, filepath.Join(src, "proj/main.c"), []byte("int main;"), 0o644)
	writeFile(t, filepath.Join(src, "cache/CACHEDIR.TAG"), []byte(cacheDirTag), 0o644)
	writeFile(t, filepath.Join(src, "cache/big"), seeded(3, 1<<20), 0o644)
	for _, keep := range []bool{false, true} {
		opt := Options{Paths: []string{src}, Excludes: []string{"*.tmp"}, KeepCaches: keep}
		files, bytes, err := Count(context.Background(), opt.Paths, opt)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Run(context.Background(), repo, opt)
		if err != nil {
			t.Fatal(err)
		}
		if files != rep.Files || bytes != rep.TotalBytes {
			t.Errorf("keep caches %v: Count found %d files, %d bytes; the pass kept %d files, %d bytes", keep, files, bytes, rep.Files, rep.TotalBytes)
		}
	}
}

// TestProgressWithinAFile: a big file reports progress as its chunks are read, not only
// once it is done; the last report is the report's totals, and the counting walk's totals
// arrive.
func TestProgressWithinAFile(t *testing.T) {
	repo := newRepo(t)
	src := t.TempDir()
	big := filepath.Join(src, "big.bin")
	const size = 6 << 20
	writeFile(t, big, seeded(5, size), 0o644)
	writeFile(t, filepath.Join(src, "small"), []byte("s"), 0o644)
	var seen []Progress
	rep, err := Run(context.Background(), repo, Options{Paths: []string{src}, Progress: func(p Progress) { seen = append(seen, p) }})
	if err != nil {
		t.Fatal(err)
	}
	mid, totals := 0, false
	for i, p := range seen {
		if i > 0 && (p.Bytes < seen[i-1].Bytes || p.Files < seen[i-1].Files) {
			t.Fatalf("progress went back: %+v after %+v", p, seen[i-1])
		}
		if p.Current == big && p.Bytes > 0 && p.Bytes < size {
			mid++
		}
		if p.TotalFiles == 2 && p.TotalBytes == size+1 {
			totals = true
		}
	}
	last := seen[len(seen)-1]
	if mid < 2 || last.Files != rep.Files || last.Bytes != rep.TotalBytes || last.BytesRead != rep.BytesRead {
		t.Fatalf("%d reports within the big file (want several); last %+v, report %+v", mid, last, rep)
	}
	// The walk runs alongside, so it may finish after the last report; then the next pass.
	if !totals {
		seen = nil
		os.WriteFile(filepath.Join(src, "small"), []byte("t"), 0o644)
		if _, err := Run(context.Background(), repo, Options{Paths: []string{src}, Progress: func(p Progress) { seen = append(seen, p) }}); err != nil {
			t.Fatal(err)
		}
		t.Logf("the counting walk finished after the first pass; %d reports in the second", len(seen))
	}
}

// TestAppendingFileNeverCapturedHalfWay: a writer appends records (each longer than a
// page) while passes run: first a goroutine at its own pace, then in lockstep with the
// reads (a record after every chunk the pass reads, so every read sees the file grow). A
// pass either skips the file, saying why, or keeps a state it had between two appends
// (whole records, the length the report says); in lockstep it must skip it every time.
// Once the writer stops, the next pass keeps all of it.
func TestAppendingFileNeverCapturedHalfWay(t *testing.T) {
	repo := newRepo(t)
	src := t.TempDir()
	path := filepath.Join(src, "growing.log")
	const rec = 5003 // spans two pages
	record := func(i int) []byte {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, rec)
		binary.BigEndian.PutUint32(b, uint32(i))
		return b
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for ; n < 200; n++ {
		f.Write(record(n))
	}
	check := func(rep *Report) (skipped bool) {
		t.Helper()
		if rep.Files == 0 {
			if len(rep.Skipped) != 1 || !strings.Contains(rep.Skipped[0].Reason, "changed while it was read") {
				t.Fatalf("skipped without the reason: %+v", rep.Skipped)
			}
			return true
		}
		snap, _ := FindSnapshot(repo.Index, rep.Snapshot)
		target := t.TempDir()
		if _, err := Restore(context.Background(), repo, snap, RestoreOptions{Target: target}); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(target, path))
		if len(got)%rec != 0 || uint64(len(got)) != rep.TotalBytes {
			t.Fatalf("a pass captured the file half-way: %d bytes (%d whole records and %d bytes), the report says %d", len(got), len(got)/rec, len(got)%rec, rep.TotalBytes)
		}
		for i := 0; i < len(got)/rec; i++ {
			if !bytes.Equal(got[i*rec:(i+1)*rec], record(i)) {
				t.Fatalf("record %d of the captured file is not what was written", i)
			}
		}
		return false
	}

	// At its own pace.
	stop, done := make(chan struct{}), make(chan int)
	go func() {
		i := n
		defer func() { done <- i }()
		for ; i < 20000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := f.Write(record(i)); err != nil {
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	skipped := 0
	for i := 0; i < 3; i++ {
		rep, err := Run(context.Background(), repo, Options{Paths: []string{src}, Rereads: 1})
		if err != nil {
			t.Fatal(err)
		}
		if check(rep) {
			skipped++
		}
	}
	close(stop)
	n = <-done
	t.Logf("%d of 3 passes skipped the file growing at its own pace", skipped)

	// In lockstep: every attempt sees it grow.
	grow := func(p Progress) {
		if p.Current == path {
			f.Write(record(n))
			n++
		}
	}
	for i := 0; i < 3; i++ {
		// Changed since the last snapshot, so that the pass reads it: one
		// whose size and times equal its parent entry's is taken from the
		// parent unread, and nothing grows it. (A writer held up through
		// the last pass above left it as that pass captured it, and a
		// pass here kept it, rightly, unread.)
		f.Write(record(n))
		n++
		rep, err := Run(context.Background(), repo, Options{Paths: []string{src}, Rereads: 2, Progress: grow})
		if err != nil {
			t.Fatal(err)
		}
		if !check(rep) {
			t.Fatalf("pass %d kept a file that grew during each of its reads", i)
		}
	}

	rep, err := Run(context.Background(), repo, Options{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	if check(rep) || rep.TotalBytes != uint64(n*rec) {
		t.Fatalf("after the writer stopped: %+v, want all %d records", rep, n)
	}
}

// TestVanishingMidPassIsAWarning: files and folders removed while a pass runs (one while it
// is being read, others between the listing of their folder and their turn) are named in
// the report as vanished; the pass goes on and records everything else.
func TestVanishingMidPassIsAWarning(t *testing.T) {
	repo := newRepo(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "1-first.txt"), []byte("first"), 0o644)
	writeFile(t, filepath.Join(src, "2-big.bin"), seeded(9, 4<<20), 0o644)
	writeFile(t, filepath.Join(src, "3-gone.txt"), []byte("gone"), 0o644)
	writeFile(t, filepath.Join(src, "4-gonedir/x"), []byte("x"), 0o644)
	writeFile(t, filepath.Join(src, "5-last.txt"), []byte("last"), 0o644)
	progress := func(p Progress) {
		switch filepath.Base(p.Current) {
		case "1-first.txt":
			os.Remove(filepath.Join(src, "3-gone.txt"))
			os.RemoveAll(filepath.Join(src, "4-gonedir"))
		case "2-big.bin":
			if p.Bytes < 4<<20 {
				os.Remove(p.Current)
			}
		}
	}
	rep, err := Run(context.Background(), repo, Options{Paths: []string{src}, Progress: progress})
	if err != nil {
		t.Fatalf("a vanished file aborted the pass: %v", err)
	}
	named := map[string]string{}
	for _, s := range rep.Skipped {
		named[filepath.Base(s.Path)] = s.Reason
	}
	for _, n := range []string{"2-big.bin", "3-gone.txt", "4-gonedir"} {
		if !strings.Contains(named[n], "vanished") {
			t.Errorf("%s is not named as vanished: %+v", n, rep.Skipped)
		}
	}
	snap, _ := FindSnapshot(repo.Index, rep.Snapshot)
	target := t.TempDir()
	if _, err := Restore(context.Background(), repo, snap, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"1-first.txt": "first", "5-last.txt": "last"} {
		if b, err := os.ReadFile(filepath.Join(target, src, name)); err != nil || string(b) != want {
			t.Errorf("%s after the pass: %q %v", name, b, err)
		}
	}
}

// TestLimitedPassTotals: a watcher's pass (Options.Changed) records the same totals (files,
// folders, bytes) as a full pass of the same folder would, whether the unchanged folders'
// totals are remembered from an earlier pass or counted from their trees.
func TestLimitedPassTotals(t *testing.T) {
	for _, cold := range []bool{false, true} {
		repo := newRepo(t)
		src := t.TempDir()
		for i := 0; i < 30; i++ {
			writeFile(t, filepath.Join(src, "d"+strconv.Itoa(i%4), "e"+strconv.Itoa(i%3), "f"+strconv.Itoa(i)), seeded(uint64(i), 1000+i), 0o644)
		}
		if _, err := Run(context.Background(), repo, Options{Paths: []string{src}}); err != nil {
			t.Fatal(err)
		}
		changed := filepath.Join(src, "d1/e0/f9")
		writeFile(t, changed, []byte("changed"), 0o644)
		if cold {
			treeTotalsCache.Lock()
			clear(treeTotalsCache.m)
			treeTotalsCache.Unlock()
		}
		lim, err := Run(context.Background(), repo, Options{Paths: []string{src}, Changed: []string{changed}})
		if err != nil {
			t.Fatal(err)
		}
		full, err := Run(context.Background(), repo, Options{Paths: []string{src}})
		if err != nil {
			t.Fatal(err)
		}
		if lim.Files != 30 || lim.Files != full.Files || lim.Dirs != full.Dirs || lim.TotalBytes != full.TotalBytes || lim.BytesRead != 7 {
			t.Fatalf("cold %v: the limited pass %+v, the full pass %+v: want the same totals, 7 bytes read", cold, lim, full)
		}
		snaps, _ := Snapshots(repo.Index)
		if s := snaps[len(snaps)-2]; s.Files != full.Files || s.TotalBytes != full.TotalBytes {
			t.Fatalf("the limited pass's snapshot records %d files, %d bytes", s.Files, s.TotalBytes)
		}
	}
}

// TestExcludedChangeRecordsNoSnapshot: a watcher's pass over changes that are all excluded
// (here by a .fincryptignore file) finds its parent's tree and records no snapshot; a real
// change then records one.
func TestExcludedChangeRecordsNoSnapshot(t *testing.T) {
	repo := newRepo(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, ".fincryptignore"), []byte("build\n"), 0o644)
	writeFile(t, filepath.Join(src, "build/out.o"), []byte("1"), 0o644)
	writeFile(t, filepath.Join(src, "main.c"), []byte("int main;"), 0o644)
	first, err := Run(context.Background(), repo, Options{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(src, "build/out.o")
	writeFile(t, out, []byte("rebuilt"), 0o644)
	// Another program's file next to the folder changes the metadata of
	// the directory above it (as others' temporary files change /tmp's):
	// not the backed-up folder's.
	writeFile(t, filepath.Join(filepath.Dir(src), "elsewhere"), []byte("x"), 0o644)
	rep, err := Run(context.Background(), repo, Options{Paths: []string{src}, Changed: []string{out}})
	if err != nil {
		t.Fatal(err)
	}
	if snaps, _ := Snapshots(repo.Index); !rep.Same || rep.Snapshot != first.Snapshot || len(snaps) != 1 {
		t.Fatalf("an excluded change: %+v, %d snapshots; want none recorded", rep, len(snaps))
	}
	writeFile(t, filepath.Join(src, "main.c"), []byte("int main(void);"), 0o644)
	rep, err = Run(context.Background(), repo, Options{Paths: []string{src}, Changed: []string{filepath.Join(src, "main.c")}})
	if err != nil {
		t.Fatal(err)
	}
	if snaps, _ := Snapshots(repo.Index); rep.Same || rep.Snapshot == first.Snapshot || len(snaps) != 2 {
		t.Fatalf("a real change: %+v, %d snapshots; want a new one", rep, len(snaps))
	}
}

// TestProgressTotalsWhenCountingLoses: a pass over a small folder can end
// before the counting walk beside it (a busy machine); its last report
// still carries totals, the pass's own counts, so "10 of 10 files" is what
// a user sees at the end, not "10 files" of an unknown total.
func TestProgressTotalsWhenCountingLoses(t *testing.T) {
	old := countWalk
	t.Cleanup(func() { countWalk = old })
	countWalk = func(ctx context.Context, _ []string, _ Options) (uint64, uint64, error) {
		<-ctx.Done() // slower than any pass: ends only when the pass stops it
		return 0, 0, ctx.Err()
	}
	repo := newRepo(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "a"), seeded(1, 70<<10), 0o644)
	writeFile(t, filepath.Join(src, "d", "b"), []byte("bb"), 0o644)
	var last Progress
	rep, err := Run(context.Background(), repo, Options{Paths: []string{src}, Progress: func(p Progress) { last = p }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Files != 2 || last.TotalFiles != rep.Files || last.TotalBytes != rep.TotalBytes || last.Files != rep.Files || last.Bytes != rep.TotalBytes {
		t.Fatalf("last report %+v, pass %+v: want the pass's files and bytes as the totals", last, rep)
	}
}
