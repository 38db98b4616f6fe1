package storagenode

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// failOpenFS fails the opening of chosen files with a chosen error (a
// process out of file descriptors, a disk that timed out once).
type failOpenFS struct {
	vfs.FS
	mu   sync.Mutex
	fail map[string]error
}

func (f *failOpenFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f.mu.Lock()
	err := f.fail[name]
	f.mu.Unlock()
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return f.FS.Open(name, opts...)
}

// A piece the scrubber cannot read for a reason that is not damage (too
// many open files, an I/O timeout) is kept: not dropped, not quarantined,
// not reported. The pass goes on to the next pieces and a later pass
// checks it again.
func TestScrubKeepsPieceOnReadError(t *testing.T) {
	dir := t.TempDir()
	fsys := &failOpenFS{FS: vfs.Default, fail: map[string]error{}}
	s, err := OpenDiskStore(dir, DiskStoreOptions{Capacity: 1 << 30, Logger: quiet, FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []challenge.PieceID
	for i, n := range []int{3000, 4000, 5000} {
		data, id := randPiece(t, uint64(60+i), n)
		if err := s.Put(context.Background(), id, int64(n), fnet.AccountID{1}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, e := range []error{syscall.EMFILE, syscall.EIO} {
		fsys.mu.Lock()
		fsys.fail[s.piecePath(ids[1])] = e
		fsys.mu.Unlock()
		m := &fakeMediator{}
		sc, _ := testScrubber(s, m)
		res, err := sc.Pass(context.Background())
		if err != nil || res.Checked != 3 || res.Damaged != 0 {
			t.Fatalf("%v: pass %+v, %v; want 3 checked, none damaged", e, res, err)
		}
		if _, err := s.Stat(ids[1]); err != nil {
			t.Fatalf("%v: a piece that could not be opened was dropped: %v", e, err)
		}
		if _, err := os.Stat(s.piecePath(ids[1])); err != nil {
			t.Fatalf("%v: its file moved: %v", e, err)
		}
		if ds, _ := s.Damaged(10); len(ds) != 0 {
			t.Fatalf("%v: %d pieces to report as damaged, want none", e, len(ds))
		}
		if _, n := s.Usage(); n != 3 {
			t.Fatalf("%v: %d pieces counted, want 3", e, n)
		}
	}
	fsys.mu.Lock()
	delete(fsys.fail, s.piecePath(ids[1]))
	fsys.mu.Unlock()
	sc, _ := testScrubber(s, &fakeMediator{})
	if res, err := sc.Pass(context.Background()); err != nil || res.Checked != 3 || res.Damaged != 0 {
		t.Fatalf("pass once readable: %+v %v", res, err)
	}
}

// putDamage records damage for n made-up pieces (ids 0..n-1 in their
// last two bytes), as dropDamaged does.
func putDamage(t *testing.T, s *DiskStore, n int) []challenge.PieceID {
	t.Helper()
	b := s.db.NewBatch()
	defer b.Close()
	var ids []challenge.PieceID
	for i := range n {
		var id challenge.PieceID
		binary.BigEndian.PutUint16(id[30:], uint16(i))
		v := []byte{damageVersion}
		v = binary.BigEndian.AppendUint64(v, uint64(time.Unix(1000, 0).UnixNano()))
		v = binary.BigEndian.AppendUint64(v, uint64(100+i))
		b.Set(damageKey(id), v, nil)
		ids = append(ids, id)
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	return ids
}

// Damaged returns at most the limit asked for, in id order; Report sends
// the damage in messages of at most fnet.MaxDamagePieces until every
// piece is reported once, and then forgets it.
func TestScrubDamageLimitAndReportBatches(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20)
	defer s.Close()
	n := fnet.MaxDamagePieces + 5
	ids := putDamage(t, s, n)
	for _, limit := range []int{1, 3, n} {
		ds, err := s.Damaged(limit)
		if err != nil || len(ds) != limit {
			t.Fatalf("Damaged(%d): %d entries, %v", limit, len(ds), err)
		}
		for i, d := range ds {
			if d.ID != ids[i] || d.Size != int64(100+i) || !d.Found.Equal(time.Unix(1000, 0)) {
				t.Fatalf("Damaged(%d)[%d] = %+v, want piece %d of %d bytes", limit, i, d, i, 100+i)
			}
		}
	}
	m := &fakeMediator{}
	sc, _ := testScrubber(s, m)
	if got, err := sc.Report(context.Background()); err != nil || got != n {
		t.Fatalf("report: %d, %v; want %d", got, err, n)
	}
	if len(m.reports) != 2 || len(m.reports[0]) != fnet.MaxDamagePieces || len(m.reports[1]) != 5 {
		sizes := []int{}
		for _, r := range m.reports {
			sizes = append(sizes, len(r))
		}
		t.Fatalf("reports of %v pieces, want [%d 5]", sizes, fnet.MaxDamagePieces)
	}
	if got := m.reported(); len(got) != n || got[0] != ids[0] || got[n-1] != ids[n-1] {
		t.Fatalf("reported %d pieces, want %d once each", len(got), n)
	}
	if ds, _ := s.Damaged(n); len(ds) != 0 {
		t.Fatalf("%d damage entries left after the mediator took them", len(ds))
	}
}

// A rate of 0 (or less) disables scrubbing: a pass is refused and reads
// nothing. A rate below the burst reads at most the rate at once.
func TestScrubRateZeroDisables(t *testing.T) {
	s, _ := scrubStore(t, t.TempDir(), 1000)
	defer s.Close()
	for _, rate := range []int64{0, -1} {
		sc := newScrubber(quiet, s, &fakeMediator{}, rate, time.Hour, time.Millisecond, time.Millisecond)
		if sc.limit != nil {
			// A limiter of rate 0 grants nothing: a pass would never end.
			t.Fatalf("rate %d: scrubbing enabled, with a burst of %d", rate, sc.burst)
		}
		if res, err := sc.Pass(context.Background()); err == nil || res.Checked != 0 {
			t.Fatalf("rate %d: pass %+v, %v; want scrubbing disabled", rate, res, err)
		}
	}
	for rate, burst := range map[int64]int{1: 1, 1000: 1000, scrubBurst: scrubBurst, 1 << 30: scrubBurst} {
		if sc := newScrubber(quiet, s, &fakeMediator{}, rate, time.Hour, time.Millisecond, time.Millisecond); sc.limit == nil || sc.burst != burst {
			t.Fatalf("rate %d: burst %d (limit %v), want %d", rate, sc.burst, sc.limit, burst)
		}
	}
}

// The highest scrub rate accepted is 1 TiB/s exactly.
func TestParseScrubRateBounds(t *testing.T) {
	if got, err := ParseScrubRate("1TiB/s"); err != nil || got != 1<<40 {
		t.Fatalf("1TiB/s: %d %v", got, err)
	}
	if got, err := ParseScrubRate("1099511627777"); err == nil {
		t.Fatalf("1 TiB/s and a byte accepted as %d", got)
	}
}

// Run scrubs pass after pass, each starting no sooner than the interval
// after the one before started; a disabled scrubber reads nothing and
// still returns when its context ends.
func TestScrubRunRepeatsAtTheInterval(t *testing.T) {
	dir := t.TempDir()
	s, _ := scrubStore(t, dir, 1000, 2000)
	defer s.Close()
	const interval = time.Second
	sc, l := testScrubber(s, &fakeMediator{})
	sc.interval = interval
	var mu sync.Mutex
	var starts []time.Time
	sc.afterPiece = func(challenge.PieceID) {
		cur, err := s.loadScrubCursor()
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		if len(starts) == 0 || !starts[len(starts)-1].Equal(cur.Start) {
			starts = append(starts, cur.Start)
		}
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(starts)
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("%d passes started in 30 s at an interval of %v", n, interval)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(starts); i++ {
		if d := starts[i].Sub(starts[i-1]); d < interval {
			t.Fatalf("pass %d started %v after the one before, want at least %v", i, d, interval)
		}
	}
	if sum, _ := l.total(); sum < 2*(PieceFileSize(1000)+PieceFileSize(2000)) {
		t.Fatalf("%d bytes read in %d passes", sum, len(starts))
	}

	// Disabled: Run waits for its context, reading nothing.
	off := newScrubber(quiet, s, &fakeMediator{}, 0, time.Millisecond, time.Millisecond, time.Millisecond)
	var checked int
	off.afterPiece = func(challenge.PieceID) { checked++ }
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := off.Run(ctx); err != nil || checked != 0 {
		t.Fatalf("disabled scrubber: %v, %d pieces checked", err, checked)
	}
	if ctx.Err() == nil {
		t.Fatal("a disabled scrubber's Run returned before its context ended")
	}
}
