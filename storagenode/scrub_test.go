package storagenode

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// recordingLimiter grants every request at once and records it.
type recordingLimiter struct {
	mu    sync.Mutex
	calls []int
}

func (l *recordingLimiter) WaitN(ctx context.Context, n int) error {
	l.mu.Lock()
	l.calls = append(l.calls, n)
	l.mu.Unlock()
	return ctx.Err()
}

func (l *recordingLimiter) total() (sum int64, most int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.calls {
		sum += int64(n)
		most = max(most, n)
	}
	return sum, most
}

// fakeMediator answers damage reports; the first fail calls fail.
type fakeMediator struct {
	mu      sync.Mutex
	fail    int
	calls   int
	reports [][]challenge.PieceID
}

func (m *fakeMediator) Call(ctx context.Context, req fnet.Message) (fnet.Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if m.fail > 0 {
		m.fail--
		return nil, fnet.ErrNotRegistered
	}
	r := req.(*fnet.DamageReport)
	m.reports = append(m.reports, r.Pieces)
	return &fnet.DamageReply{Accepted: uint32(len(r.Pieces))}, nil
}

func (m *fakeMediator) reported() []challenge.PieceID {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []challenge.PieceID
	for _, r := range m.reports {
		out = append(out, r...)
	}
	return out
}

// scrubStore is a store holding pieces of the given sizes, and their ids.
func scrubStore(t *testing.T, dir string, sizes ...int) (*DiskStore, []challenge.PieceID) {
	t.Helper()
	s := open(t, dir, 64<<20)
	var ids []challenge.PieceID
	for i, n := range sizes {
		data, id := randPiece(t, uint64(100+i), n)
		if err := s.Put(context.Background(), id, int64(n), fnet.AccountID{1}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return s, ids
}

func testScrubber(s *DiskStore, m caller) (*Scrubber, *recordingLimiter) {
	sc := newScrubber(quiet, s, m, 1<<20, time.Hour, time.Millisecond, 10*time.Millisecond)
	l := &recordingLimiter{}
	sc.limit = l
	return sc, l
}

func flipAt(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x04
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestScrubFindsDamage(t *testing.T) {
	const size = 5*challenge.LeafSize + 77 // 6 leaves, tree of 6+3+2+1 nodes
	treeStart := int64(pieceHeaderSize + size)
	cases := []struct {
		name string
		off  int64 // in the piece file
	}{
		{"header size field", 20},
		{"header checksum", 57},
		{"bytes, first leaf", pieceHeaderSize + 3},
		{"bytes, last partial leaf", pieceHeaderSize + size - 1},
		{"stored leaf hash", treeStart + 2*challenge.HashSize + 9},
		{"stored inner node", treeStart + 7*challenge.HashSize},
		{"stored root", PieceFileSize(size) - 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, ids := scrubStore(t, dir, challenge.LeafSize, size, 3*challenge.LeafSize)
			defer s.Close()
			victim := ids[1]
			path := s.piecePath(victim)
			flipAt(t, path, tc.off)
			usedBefore, _ := s.Usage()

			m := &fakeMediator{}
			sc, _ := testScrubber(s, m)
			res, err := sc.Pass(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if res.Checked != 3 || res.Damaged != 1 {
				t.Fatalf("pass: %+v, want 3 checked, 1 damaged", res)
			}
			if _, err := s.Stat(victim); !errors.Is(err, ErrNotFound) {
				t.Fatalf("damaged piece still indexed: %v", err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("damaged piece file still served: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dir, quarantineDir, filepath.Base(path))); err != nil {
				t.Fatalf("not in quarantine: %v", err)
			}
			if used, n := s.Usage(); used != usedBefore-size || n != 2 {
				t.Fatalf("usage %d bytes %d pieces, want %d and 2", used, n, usedBefore-size)
			}
			for _, id := range []challenge.PieceID{ids[0], ids[2]} {
				if _, err := s.Stat(id); err != nil {
					t.Fatalf("healthy piece dropped: %v", err)
				}
			}
			ds, err := s.Damaged(10)
			if err != nil || len(ds) != 1 || ds[0].ID != victim || ds[0].Size != size {
				t.Fatalf("damage to report: %+v %v", ds, err)
			}
			// Reported, then forgotten.
			if n, err := sc.Report(context.Background()); err != nil || n != 1 {
				t.Fatalf("report: %d %v", n, err)
			}
			if got := m.reported(); len(got) != 1 || got[0] != victim {
				t.Fatalf("reported %v, want %s", got, victim)
			}
			if ds, _ := s.Damaged(10); len(ds) != 0 {
				t.Fatalf("damage kept after the mediator acknowledged it: %+v", ds)
			}
		})
	}
}

func TestScrubHealthyFindsNothing(t *testing.T) {
	s, ids := scrubStore(t, t.TempDir(), 1, challenge.LeafSize, 9*challenge.LeafSize+1, 40000)
	defer s.Close()
	m := &fakeMediator{}
	sc, l := testScrubber(s, m)
	for pass := range 2 {
		res, err := sc.Pass(context.Background())
		if err != nil || res.Checked != len(ids) || res.Damaged != 0 {
			t.Fatalf("pass %d: %+v %v", pass, res, err)
		}
	}
	if _, n := s.Usage(); n != int64(len(ids)) {
		t.Fatalf("%d pieces left of %d", n, len(ids))
	}
	if ds, _ := s.Damaged(10); len(ds) != 0 {
		t.Fatalf("damage found on a healthy store: %+v", ds)
	}
	if n, err := sc.Report(context.Background()); n != 0 || err != nil || m.calls != 0 {
		t.Fatalf("reported %d (%d calls): %v", n, m.calls, err)
	}
	if sum, _ := l.total(); sum == 0 {
		t.Fatal("the passes read nothing")
	}
}

// Every byte read is paid for with a token first, in requests no larger
// than the burst, and nothing more is asked for than the files hold.
func TestScrubRateLimitInBytes(t *testing.T) {
	sizes := []int{1, 3 * challenge.LeafSize, 600 << 10, 70000}
	s, _ := scrubStore(t, t.TempDir(), sizes...)
	defer s.Close()
	const rate = 100 << 10 // burst = rate, below the 1 MiB buffer of checkPieceFile
	sc := newScrubber(quiet, s, &fakeMediator{}, rate, time.Hour, time.Millisecond, time.Millisecond)
	l := &recordingLimiter{}
	sc.limit = l
	res, err := sc.Pass(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, n := range sizes {
		want += PieceFileSize(int64(n))
	}
	sum, most := l.total()
	if sum != want || res.Bytes != want {
		t.Fatalf("tokens for %d bytes, read %d, files hold %d", sum, res.Bytes, want)
	}
	if most > rate {
		t.Fatalf("a request for %d bytes exceeds the burst of %d", most, rate)
	}
	if len(l.calls) < int(want/rate) {
		t.Fatalf("%d limiter calls for %d bytes at a burst of %d", len(l.calls), want, rate)
	}
}

// The token bucket makes a reader wait exactly as long as its bytes take
// at the rate (on a fake clock).
func TestTokenBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	var slept []time.Duration
	b := newTokenBucket(1000, 100)
	b.now = func() time.Time { return now }
	b.sleep = func(ctx context.Context, d time.Duration) error {
		slept = append(slept, d)
		now = now.Add(d)
		return nil
	}
	ctx := context.Background()
	for range 11 { // 1100 bytes: the first 100 from the full bucket, 1000 at 1000 B/s
		if err := b.WaitN(ctx, 100); err != nil {
			t.Fatal(err)
		}
	}
	var total time.Duration
	for _, d := range slept {
		total += d
	}
	if total != time.Second || len(slept) != 10 {
		t.Fatalf("slept %v in %d waits, want 1s in 10", total, len(slept))
	}
	// Idle time refills the bucket up to the burst only.
	now = now.Add(time.Hour)
	slept = nil
	b.WaitN(ctx, 100)
	b.WaitN(ctx, 50)
	if len(slept) != 1 || slept[0] != 50*time.Millisecond {
		t.Fatalf("after idling: slept %v, want [50ms]", slept)
	}
	if err := b.WaitN(ctx, 101); err == nil {
		t.Fatal("a request above the burst was granted")
	}
}

func TestScrubResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	s, ids := scrubStore(t, dir, 100, 200, 300, 400, 500)
	sc, _ := testScrubber(s, &fakeMediator{})
	start := time.Unix(5000, 0)
	sc.now = func() time.Time { return start }
	ctx, cancel := context.WithCancel(context.Background())
	var seen []challenge.PieceID
	sc.afterPiece = func(id challenge.PieceID) {
		seen = append(seen, id)
		if len(seen) == 2 {
			cancel()
		}
	}
	res, err := sc.Pass(ctx)
	if !errors.Is(err, context.Canceled) || res.Checked != 2 {
		t.Fatalf("interrupted pass: %+v %v", res, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir, 64<<20)
	defer s.Close()
	sc, _ = testScrubber(s, &fakeMediator{})
	sc.now = func() time.Time { return start.Add(time.Minute) }
	sc.afterPiece = func(id challenge.PieceID) { seen = append(seen, id) }
	res, err = sc.Pass(context.Background())
	if err != nil || res.Checked != 3 || !res.Start.Equal(start) {
		t.Fatalf("resumed pass: %+v %v (want 3 checked, started %v)", res, err, start)
	}
	// Every piece was checked exactly once over the two runs.
	if len(seen) != len(ids) {
		t.Fatalf("checked %d pieces, want %d", len(seen), len(ids))
	}
	for i := 1; i < len(seen); i++ {
		if bytes.Compare(seen[i-1][:], seen[i][:]) >= 0 {
			t.Fatalf("pieces checked out of order or twice: %v", seen)
		}
	}
	// The pass ended: the next one starts afresh.
	res, err = sc.Pass(context.Background())
	if err != nil || res.Checked != len(ids) || !res.Start.Equal(start.Add(time.Minute)) {
		t.Fatalf("next pass: %+v %v", res, err)
	}
}

// Run waits the interval after a pass started before the next, and its
// reporter retries until the mediator takes the report; damage not yet
// reported survives a restart.
func TestScrubRunReportsWithRetries(t *testing.T) {
	dir := t.TempDir()
	s, ids := scrubStore(t, dir, 1000, 2000)
	flipAt(t, s.piecePath(ids[0]), pieceHeaderSize+10)
	// A first pass, with a mediator that never answers: the damage stays.
	sc, _ := testScrubber(s, &fakeMediator{fail: 1 << 30})
	if res, err := sc.Pass(context.Background()); err != nil || res.Damaged != 1 {
		t.Fatalf("pass: %+v %v", res, err)
	}
	if _, err := sc.Report(context.Background()); !errors.Is(err, fnet.ErrNotRegistered) {
		t.Fatalf("report to an unreachable mediator: %v", err)
	}
	s.Close()

	s = open(t, dir, 64<<20)
	defer s.Close()
	m := &fakeMediator{fail: 3}
	sc, l := testScrubber(s, m)
	sc.interval = time.Hour // the last pass started just now: no pass in this test
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got := m.reported(); len(got) == 1 && got[0] == ids[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("damage not reported: %d calls", m.calls)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m.calls != 4 {
		t.Fatalf("%d calls, want 3 failures and 1 success", m.calls)
	}
	if sum, _ := l.total(); sum != 0 {
		t.Fatalf("a pass ran %d bytes before the interval was up", sum)
	}
	if ds, _ := s.Damaged(10); len(ds) != 0 {
		t.Fatalf("damage kept after the report: %+v", ds)
	}
}

func TestParseScrubRate(t *testing.T) {
	for in, want := range map[string]int64{
		"16MiB/s": 16 << 20, "16MiB": 16 << 20, "1 GB / s": 1e9, "4096/s": 4096, "0": -1, "0/s": -1, "512k/sec": 512 << 10,
	} {
		if got, err := ParseScrubRate(in); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fast", "16MiB/h", "-1", "2PiB/s", "/s"} {
		if got, err := ParseScrubRate(in); err == nil {
			t.Errorf("%q accepted as %d", in, got)
		}
	}
}

// A damaged piece stored again (whole) before its report went out is not
// reported: the report would make the mediator count the new copy lost.
func TestScrubDamageForgottenWhenStoredAgain(t *testing.T) {
	s, ids := scrubStore(t, t.TempDir(), 5000, 6000)
	defer s.Close()
	flipAt(t, s.piecePath(ids[0]), pieceHeaderSize+1)
	sc, _ := testScrubber(s, &fakeMediator{})
	if res, err := sc.Pass(context.Background()); err != nil || res.Damaged != 1 {
		t.Fatalf("pass: %+v %v", res, err)
	}
	data, id := randPiece(t, 100, 5000) // the same bytes scrubStore stored
	if id != ids[0] {
		t.Fatal("test data changed")
	}
	if err := s.Put(context.Background(), id, int64(len(data)), fnet.AccountID{1}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if ds, _ := s.Damaged(10); len(ds) != 0 {
		t.Fatalf("damage of a piece stored again is still to be reported: %+v", ds)
	}
	if res, err := sc.Pass(context.Background()); err != nil || res.Damaged != 0 || res.Checked != 2 {
		t.Fatalf("pass over the stored-again piece: %+v %v", res, err)
	}
}
