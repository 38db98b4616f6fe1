package replicate

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestReleaseAndRepack deletes most of a segment's data: the engine repacks
// the live rest into a new segment, and once the old one has been dead for
// the release delay (and a newer snapshot exists) releases it at the
// mediator, so stored bytes track live bytes.
func TestReleaseAndRepack(t *testing.T) {
	p, home := planetAndVault(t)
	cfg := fastConfig()
	cfg.ReleaseDelay = time.Second
	// The two files share one segment only if it is not flushed between
	// them. A partly filled segment goes out after FlushAfter, when a
	// snapshot is due (SnapshotInterval after a change) and while the
	// mount's first snapshot is wanted: a loaded machine once spent longer
	// than the tests' 200 and 300 ms between the two writes. So the test
	// waits for the first snapshot, and the partly filled segment waits
	// for the syncs the test asks for.
	cfg.FlushAfter, cfg.SnapshotInterval = time.Hour, time.Hour
	c := mount(t, p, home, cfg)
	for deadline := time.Now().Add(40 * time.Second); ; {
		st, err := QueryStatus(home)
		if err != nil {
			t.Fatal(err)
		}
		if st.LastSnapshot != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no first snapshot after 40s: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	big := make([]byte, 400<<10)
	small := []byte("the part that stays alive")
	for i := range big {
		big[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(c.mnt, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.mnt, "small"), small, 0o644); err != nil {
		t.Fatal(err)
	}
	// A file's last chunk is committed when the kernel releases it, which
	// may come after close returns: sync once both files' chunks wait.
	for deadline := time.Now().Add(40 * time.Second); ; {
		st, err := QueryStatus(home)
		if err != nil {
			t.Fatal(err)
		}
		if st.PendingFiles == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the two files' chunks not pending after 40s: %+v", st)
		}
		c.rep.Kick()
		time.Sleep(50 * time.Millisecond)
	}
	c.rep.RequestSync()
	c.waitSynced("two files")
	var first []meta.SegmentID
	for _, s := range segmentPieces(t, c.rep.idx) {
		if s.Kind == meta.KindData {
			first = append(first, s.ID)
		}
	}
	if len(first) != 1 {
		t.Fatalf("%d data segments for two small files, want 1 (they share one)", len(first))
	}
	if err := os.Remove(filepath.Join(c.mnt, "big")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(40 * time.Second)
	for {
		c.rep.RequestSync() // a newer snapshot lets the dead segment go
		_, err := c.rep.idx.GetSegment(first[0])
		if err != nil {
			_, merr := c.mc.Segment(p.Context(), fnet.SegmentID(first[0]))
			if !errors.Is(merr, fnet.ErrNotFound) {
				t.Fatalf("segment gone from the index, but the mediator says %v", merr)
			}
			break // released: gone from the index and from the mediator
		}
		if time.Now().After(deadline) {
			st, _ := QueryStatus(home)
			t.Fatalf("segment %s not released after 40s: %+v", first[0], st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.rep.RequestSync()
	st := c.waitSynced("after the repack")
	if st.SegmentsDurable != 1 || st.StoredBytes != uint64(SizeClasses[0]) {
		t.Fatalf("after release: %d durable segments, %d bytes stored; want 1 of the smallest class", st.SegmentsDurable, st.StoredBytes)
	}
	c.dropCaches(t)
	got, err := os.ReadFile(filepath.Join(c.mnt, "small"))
	if err != nil || string(got) != string(small) {
		t.Fatalf("small after repack: %q, %v", got, err)
	}
}

// TestInterruptedUploadReleased: a segment the mediator committed but the
// client never recorded (a crash in between) is released at the next start.
func TestInterruptedUploadReleased(t *testing.T) {
	p, home := planetAndVault(t)
	c := mount(t, p, home, fastConfig())
	seg, err := c.mc.Store(p.Context(), DefaultScheme, make([]byte, 1000))
	if err != nil {
		t.Fatal(err)
	}
	b := c.rep.idx.NewBatch()
	b.PutRepl(intentName(meta.SegmentID(seg)), nil)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	c.unmount()
	c = mount(t, p, home, fastConfig())
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := c.mc.Segment(p.Context(), seg)
		if errors.Is(err, fnet.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan segment still at the mediator: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		n := 0
		c.rep.idx.ReplRecords("up/", func(string, []byte) error { n++; return nil })
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d upload intents left", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
