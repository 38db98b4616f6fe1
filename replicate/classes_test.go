package replicate

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// TestFullSegmentsHardlyPadded: for every chunk size a vault may have, a
// segment packed full of sealed chunks leaves under 0.1% of its size class
// to padding (the largest class once left a whole MiB of every full
// segment of 1 MiB chunks to it), and a single sealed chunk fits a class.
func TestFullSegmentsHardlyPadded(t *testing.T) {
	for i := 1; i < len(SizeClasses); i++ {
		if SizeClasses[i] <= SizeClasses[i-1] {
			t.Fatalf("size classes %v not increasing", SizeClasses)
		}
	}
	for cs := 4 << 10; cs <= 16<<20; cs *= 2 {
		sealed := cs + vault.Overhead
		if classFor(sealed) == 0 {
			t.Fatalf("a sealed %d-byte chunk fits no class", cs)
		}
		n := MaxSegment / sealed
		used := n * sealed
		class := classFor(used)
		if class != MaxSegment {
			t.Fatalf("%d sealed %d-byte chunks (%d bytes) in class %d, want the largest", n, cs, used, class)
		}
		if pad := class - used; pad*1000 >= class {
			t.Errorf("a full segment of %d-byte chunks: %d sealed chunks, %d of %d bytes padding", cs, n, pad, class)
		}
	}
}

// TestOldLargestClassReadsBack: segments stored while the largest size
// class was 16 MiB x 17/16 (before it became 16 MiB + 16 KiB) keep the
// class their index records name and read back intact once the classes
// have changed.
//
// Its three segments' pieces are 8.5 MiB: with the fast config's 3 s piece
// timeout (11 s with the allowance for the size) and challenges every
// second, -race at a load of 25 timed the uploads out ("put ...: deadline
// exceeded"), 65 times in three minutes, until placements found two nodes
// that qualified ("not enough healthy storage nodes ... 2 qualify"), and
// the test failed waiting for the sync. The pieces get the timeouts of a
// loaded machine (20 s, still below the default 30 s) and the nodes the
// quiet planet's challenges: the wait ends when the file is synced.
func TestOldLargestClassReadsBack(t *testing.T) {
	p, home := quietPlanet(t)
	cfg := fastConfig()
	cfg.PieceTimeout, cfg.CallTimeout = 20*time.Second, 20*time.Second
	oldClasses, oldMax := SizeClasses, MaxSegment
	t.Cleanup(func() { SizeClasses, MaxSegment = oldClasses, oldMax })
	const before = 16 << 20 * 17 / 16
	SizeClasses = append(append([]int(nil), oldClasses[:len(oldClasses)-1]...), before)
	MaxSegment = before
	c := mount(t, p, home, cfg)
	data := make([]byte, 40<<20+4321)
	rand.New(rand.NewSource(7)).Read(data)
	if err := os.WriteFile(filepath.Join(c.mnt, "old"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitSynced("file stored with the old classes")
	c.unmount() // no goroutine of the engine reads the classes as they change
	SizeClasses, MaxSegment = oldClasses, oldMax
	c = mount(t, p, home, cfg)
	old := 0
	for _, s := range segmentPieces(t, c.rep.idx) {
		if s.Kind == meta.KindData && s.Class == before {
			old++
		}
	}
	if old == 0 {
		t.Fatalf("no data segment of the old largest class %d was stored", before)
	}
	c.dropCaches(t)
	c.rep.dropSegmentCache()
	got, err := os.ReadFile(filepath.Join(c.mnt, "old"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes that differ from the %d written with the old classes", len(got), len(data))
	}
}
