package fs

import (
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// fakeDisk is a file system whose free space a test sets, counting the
// statfs calls the guard makes.
type fakeDisk struct {
	free  uint64
	calls int
}

func (d *fakeDisk) statfs(_ string, st *syscall.Statfs_t) error {
	d.calls++
	st.Bsize = 4096
	st.Bavail = d.free / 4096
	st.Blocks = 1 << 30 >> 12 // 1 GiB
	return nil
}

// newTestGuard is a guard on d with a clock the test moves and a ballast
// that counts as present (so none is made).
func newTestGuard(t *testing.T, d *fakeDisk, now *time.Time) *spaceGuard {
	g := &spaceGuard{dir: t.TempDir(), ballast: filepath.Join(t.TempDir(), BallastName), reserve: 16 << 20, bsize: 8 << 20,
		log: slog.New(slog.DiscardHandler), statfs: d.statfs, now: func() time.Time { return *now }}
	g.has.Store(true)
	return g
}

// TestSpaceGuardCachesLook: far from the reserve, one statfs serves the
// operations of the next spaceStale as long as what they may add keeps the
// free space above twice the reserve; past that, or near a full disk,
// every operation looks again, and the line is where it always was.
func TestSpaceGuardCachesLook(t *testing.T) {
	now := time.Unix(1000, 0)
	d := &fakeDisk{free: 1 << 30}
	g := newTestGuard(t, d, &now)

	// Far from the line: one look for many small operations.
	for i := 0; i < 100; i++ {
		if e := g.room(4096); e != 0 {
			t.Fatalf("op %d: %v with 1 GiB free", i, e)
		}
	}
	if d.calls != 1 {
		t.Fatalf("%d statfs calls for 100 operations within %v, want 1", d.calls, spaceStale)
	}
	// The look goes stale with time.
	now = now.Add(spaceStale + time.Millisecond)
	g.room(0)
	if d.calls != 2 {
		t.Fatalf("%d statfs calls after the look went stale, want 2", d.calls)
	}
	// What the operations admitted may add counts against the look: 1 GiB
	// free, a reserve of 16 MiB, so about 1 GiB - 32 MiB of writes are
	// admitted on one look, and the next needs another.
	calls := d.calls
	admitted := uint64(0)
	for d.calls == calls {
		if e := g.room(1 << 20); e != 0 {
			t.Fatal(e)
		}
		admitted += 1<<20 + metaCharge
	}
	if lim := uint64(1<<30) - 2*g.reserve; admitted > lim+2<<20 || admitted < lim-2<<20 {
		t.Fatalf("one look admitted %d bytes, want about %d", admitted, lim)
	}

	// Near the line, every operation looks.
	d.free = 2*g.reserve + 1<<20
	now = now.Add(time.Second)
	calls = d.calls
	for i := 0; i < 10; i++ {
		if e := g.room(1 << 20); e != 0 {
			t.Fatalf("op %d: %v with %d free, reserve %d", i, e, d.free, g.reserve)
		}
	}
	if d.calls-calls != 10 {
		t.Fatalf("%d statfs calls for 10 writes near the reserve, want 10", d.calls-calls)
	}
	// Below the reserve: ENOSPC at once, however fresh the last look.
	d.free = g.reserve - 1
	if e := g.room(0); e != syscall.ENOSPC {
		t.Fatalf("room below the reserve: %v, want ENOSPC", e)
	}
	// A disk another program filled within spaceStale of a look far from
	// the line is seen at the next look after it.
	d.free = 1 << 30
	now = now.Add(time.Second)
	if e := g.room(0); e != 0 {
		t.Fatal(e)
	}
	d.free = 0
	now = now.Add(spaceStale + time.Millisecond)
	if e := g.room(0); e != syscall.ENOSPC {
		t.Fatalf("room %v after the look went stale on a full disk, want ENOSPC", e)
	}
	// freeing looks only when it could matter too.
	d.free = 1 << 30
	now = now.Add(time.Second)
	g.room(0)
	calls = d.calls
	g.freeing()
	if d.calls != calls {
		t.Fatal("freeing looked again right after a look far from the line")
	}
}

// TestWriteCharge: a write is charged every chunk it touches, whole.
func TestWriteCharge(t *testing.T) {
	const cs = 1 << 20
	for _, c := range []struct{ off, n, want uint64 }{
		{0, 0, 0}, {0, 1, cs}, {0, cs, cs}, {1, cs, 2 * cs}, {cs - 1, 2, 2 * cs}, {5 * cs, 3 * cs, 3 * cs}, {100, 4096, cs},
	} {
		if got := writeCharge(c.off, c.n, cs); got != c.want {
			t.Errorf("writeCharge(%d, %d) = %d, want %d", c.off, c.n, got, c.want)
		}
	}
}
