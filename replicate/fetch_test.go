package replicate

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/mediator/testplanet"
	"github.com/fincrypt/fincrypt/meta"
)

// TestReadHedgesAroundAHungNode: a node that holds one of the pieces a
// read asks first hangs (its connection stays open, nothing comes back).
// The read asks another node after HedgeAfter and succeeds; without the
// hedge it would wait for the piece timeout (ten minutes here) or for
// QUIC's idle timeout (a minute), longer than the test allows.
func TestReadHedgesAroundAHungNode(t *testing.T) {
	p, home := planetWithVault(t, testplanet.Config{StorageNodes: 5, Relays: true})
	cfg := fastConfig()
	cfg.PieceTimeout = 10 * time.Minute
	cfg.HedgeAfter = 300 * time.Millisecond
	c := mount(t, p, home, cfg)
	data := make([]byte, 200<<10)
	rand.Read(data)
	name := filepath.Join(c.mnt, "f")
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitSynced("the file")
	var seg meta.Segment
	for _, s := range segmentPieces(t, c.rep.idx) {
		if s.Kind == meta.KindData {
			seg = s
		}
	}
	if len(seg.Pieces) == 0 {
		t.Fatal("no data segment")
	}

	// A first read from the network opens the connections to the nodes
	// the fetcher asks first (pieces 0 and 1).
	c.dropCaches(t)
	if got, err := os.ReadFile(name); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("first read from the network: %v", err)
	}
	c.dropCaches(t)
	hung := p.NodeIndex(seg.Pieces[0].Node)
	p.Freeze(hung, true)
	defer p.Freeze(hung, false)

	done := make(chan error, 1)
	go func() {
		got, err := os.ReadFile(name)
		if err == nil && !bytes.Equal(got, data) {
			err = errors.New("content differs from what was written")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read with node %d hung: %v", hung, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("read with node %d hung did not finish in 30s: the fetcher waited for the hung node", hung)
	}
}

// TestEvenlySlowPiecesNotHedged: every piece download takes 400 ms more (a
// loaded machine or a slow link, alike for every node), longer than
// HedgeAfter (250 ms). Once the fetches know pieces take that long, they
// ask no third node: a backup would only add its bytes to the load that
// slows them all. Only the fetches started before any piece completed may
// hedge (each at most N-K times). Without the pace every fetch asked a
// third node at 250 ms: at least one more piece download per segment. The
// read still comes back whole. (The margin is wide on purpose: with 150 ms
// pieces against a 100 ms hedge, a -race run on two loaded cores took
// some pieces past twice the typical time, and hedged them.)
func TestEvenlySlowPiecesNotHedged(t *testing.T) {
	p, home := quietPlanet(t)
	old := MaxSegment
	MaxSegment = SizeClasses[1] // 272 KiB: a few MiB make many segments
	t.Cleanup(func() { MaxSegment = old })
	cfg := fastConfig()
	cfg.HedgeAfter = 250 * time.Millisecond
	c := mount(t, p, home, cfg)
	data := make([]byte, 3<<20+12345)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(c.mnt, "slow"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitSyncedFor(t, "the file", 4*time.Minute)
	c.dropCaches(t)
	c.rep.dropSegmentCache()
	k := int64(p.Scheme().K)
	slow := func(int) { time.Sleep(400 * time.Millisecond) }
	c.rep.pieceHook.Store(&slow)
	defer c.rep.pieceHook.Store(nil)
	fetched, gets := c.rep.segFetches.Load(), c.rep.stages.pieceGets.Load()
	failed := counterValue(t, c.rep.fetches.errors)
	got, err := os.ReadFile(filepath.Join(c.mnt, "slow"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), not the %d written", len(got), err, len(data))
	}
	c.rep.prefetches.Wait()
	n, g := c.rep.segFetches.Load()-fetched, c.rep.stages.pieceGets.Load()-gets
	bad := int64(counterValue(t, c.rep.fetches.errors) - failed)
	if n < 10 {
		t.Fatalf("%d segment downloads: the test wants many", n)
	}
	// The reader's first fetch and the read-ahead's two started before
	// any piece completed (each may back up every other piece: N-K); a
	// download that failed was backed up.
	early := int64(1+prefetchAhead) * (int64(p.Scheme().N) - k)
	if extra := g - k*n; extra > early+bad*k+n/6 || extra >= n+bad*k {
		t.Fatalf("%d piece downloads for %d segment downloads of %d pieces (%d failed): %d backups of evenly slow nodes", g, n, k, bad, extra)
	}
}
