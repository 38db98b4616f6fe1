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
