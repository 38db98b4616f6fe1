package replicate

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
)

// TestUploadTakesNewChunksWhileUploading: chunks written while a round
// uploads go out in that round as soon as a slot frees up, without waiting
// for the round's slowest upload (here one held back on purpose) to end. A
// storage node then stops with uploads in flight: everything still
// becomes durable, every chunk is located, no placement is left
// unrecorded, and all of it reads back from the network.
func TestUploadTakesNewChunksWhileUploading(t *testing.T) {
	// Small segments: two 100 KiB files fill one.
	p, c := smallSegmentsMount(t, 2, 20*time.Second)
	c.rep.streamFor = 5 * time.Minute // a loaded machine must not end the round first

	// The first segment upload waits (holding its slot) until released.
	first, release := make(chan struct{}), make(chan struct{})
	var starts uploadStarts
	starts.hook(c, func(n int) {
		if n == 1 {
			close(first)
			select {
			case <-release:
			case <-time.After(3 * time.Minute):
			}
		}
	})
	started := starts.count

	rng := rand.New(rand.NewSource(5))
	files := map[string][]byte{}
	write := func(from, to int) {
		for i := from; i < to; i++ {
			data := make([]byte, 100<<10)
			rng.Read(data)
			name := fmt.Sprintf("f%02d", i)
			files[name] = data
			if err := os.WriteFile(filepath.Join(c.mnt, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(0, 4) // at most two segments for the round's first plan
	c.rep.Kick()
	select {
	case <-first:
	case <-time.After(2 * time.Minute):
		t.Fatal("no segment upload started")
	}
	write(4, 12) // four more segments' worth, written while the round uploads

	// The first plan held at most two segments, and its first is held
	// back: a third upload can only be the round taking the new chunks.
	deadline := time.Now().Add(2 * time.Minute)
	for started() < 3 {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("%d segment uploads started while the first was held back (%d refills): chunks written during the round waited for its slowest upload",
				started(), c.rep.refills.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c.rep.refills.Load() == 0 {
		t.Fatal("a third upload started without a refill")
	}
	p.StopNode(0)
	close(release)
	c.waitSyncedFor(t, "uploads with a node stopped", 3*time.Minute)

	idx := c.rep.idx
	for name := range files {
		ino, err := idx.Lookup(meta.RootIno, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ref, ok, err := idx.GetChunk(ino.Ino, 0)
		if err != nil || !ok {
			t.Fatalf("%s: no chunk: %v", name, err)
		}
		if _, err := idx.GetLocation(ref.ID); err != nil {
			t.Fatalf("%s: chunk %s has no location: %v", name, ref.ID, err)
		}
	}
	c.noUploadLeft(t)
	// The segments stored without the stopped node are repaired before
	// they can be evicted (dropCaches waits for that).
	c.dropCaches(t)
	checkTree(t, c.mnt, files)
}
