package replicate

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"

	"github.com/fincrypt/fincrypt/meta"
)

// TestReleasedSegmentNotDurable: a segment the mediator released (as it
// does for a delinquent account after its grace period) is no longer
// counted durable by the client, and its local chunks stay.
func TestReleasedSegmentNotDurable(t *testing.T) {
	p, home := planetAndVault(t)
	c := mount(t, p, home, fastConfig())
	if err := os.WriteFile(filepath.Join(c.mnt, "f"), make([]byte, 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitSynced("the file uploaded")
	var durable []meta.SegmentID
	c.rep.idx.Segments(func(s meta.Segment) error {
		if s.State == meta.SegmentDurable {
			durable = append(durable, s.ID)
		}
		return nil
	})
	if len(durable) == 0 {
		t.Fatal("no durable segment")
	}
	for _, id := range durable {
		if err := c.mc.Release(p.Context(), fnet.SegmentID(id)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		still := 0
		for _, id := range durable {
			if s, err := c.rep.idx.GetSegment(id); err == nil && (s.State == meta.SegmentDurable || s.Healthy != 0) {
				still++
			}
		}
		if still == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d released segments still durable", still)
		}
		c.rep.Kick()
		time.Sleep(100 * time.Millisecond)
	}
}
