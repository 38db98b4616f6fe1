package replicate

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestManySegmentsInFlightNodeFails uploads many small segments four at a
// time and stops a storage node while they are in flight. Whatever failed
// is retried: in the end every chunk is located exactly once (no segment
// holds a chunk another one is credited with, none is left holding nothing),
// every placement was either recorded or released (no upload intent left,
// nothing in flight), and everything reads back from the network.
func TestManySegmentsInFlightNodeFails(t *testing.T) {
	// Small segments, so that a few MiB make many of them.
	p, c := smallSegmentsMount(t, 4, 10*time.Second)

	// Stop node 0 once the fourth segment upload has begun (from the
	// engine's own hook, so it happens with others in flight).
	stopped := make(chan struct{})
	var starts uploadStarts
	starts.hook(c, func(n int) {
		if n == 4 {
			go func() {
				p.StopNode(0)
				close(stopped)
			}()
		}
	})

	rng := rand.New(rand.NewSource(11))
	files := map[string][]byte{}
	for i := range 24 {
		data := make([]byte, 100<<10+rng.Intn(64<<10))
		rng.Read(data)
		name := fmt.Sprintf("d%d/f%02d", i%3, i)
		files[name] = data
		path := filepath.Join(c.mnt, name)
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c.rep.Kick()
	select {
	case <-stopped:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the upload hook ran %d times, the node was never stopped", starts.count())
	}
	c.waitSyncedFor(t, "uploads with a node stopped", 2*time.Minute)

	// Accounting: every referenced chunk has a location in a recorded data
	// segment, and each data segment's located bytes are exactly its
	// content (a chunk packed twice would leave a segment short).
	idx := c.rep.idx
	segs := map[meta.SegmentID]meta.Segment{}
	for _, s := range segmentPieces(t, idx) {
		segs[s.ID] = s
	}
	located := map[meta.SegmentID]uint64{}
	refs := 0
	if err := idx.Walk(meta.Visitor{Chunk: func(_, _ uint64, ref meta.ChunkRef) {
		refs++
		loc, err := idx.GetLocation(ref.ID)
		if err != nil {
			t.Errorf("chunk %s: no location: %v", ref.ID, err)
			return
		}
		s, ok := segs[loc.Segment]
		if !ok || s.Kind != meta.KindData {
			t.Errorf("chunk %s: located in segment %s, which is not a recorded data segment", ref.ID, loc.Segment)
			return
		}
		located[loc.Segment] += uint64(loc.Length)
		if p.Segment(fnet.SegmentID(loc.Segment)) == nil {
			t.Errorf("chunk %s: segment %s unknown to the mediator", ref.ID, loc.Segment)
		}
	}}); err != nil {
		t.Fatal(err)
	}
	data := 0
	for id, s := range segs {
		if s.Kind != meta.KindData {
			continue
		}
		data++
		if located[id] != uint64(s.Used) {
			t.Errorf("segment %s: %d bytes of content, %d located in it", id, s.Used, located[id])
		}
	}
	if refs < len(files) || data < 8 {
		t.Fatalf("%d chunks in %d data segments: the test did not make many segments", refs, data)
	}
	c.noUploadLeft(t)

	// Nothing lost: everything reads back from the network.
	c.dropCaches(t)
	checkTree(t, c.mnt, files)
}
