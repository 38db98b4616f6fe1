package replicate

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/mediator/testplanet"
	"github.com/fincrypt/fincrypt/meta"
)

// TestPowerLossSegmentRecords runs the index on a file system that loses
// what was not synced and uploads one segment, cutting the power twice:
// as the mediator is asked to commit it (the intent recorded before must
// be there, or a segment committed then could never be released by the
// next start) and right after the upload returned (the segment and its
// chunks' locations must be there, and the intent gone).
func TestPowerLossSegmentRecords(t *testing.T) {
	mem := vfs.NewCrashableMem()
	e := newEngineIdx(t, testplanet.Config{StorageNodes: 5}, nil, meta.Options{FS: mem})
	rng := rand.New(rand.NewPCG(11, 12))
	ids, _ := e.addChunks(t, rng, 1<<20, 1<<20)
	p := e.planFor(t, ids)
	var (
		mu       sync.Mutex
		atCommit *vfs.MemFS
	)
	e.r.faults.SetHook(func(work string) {
		if work != "upload commit" {
			return
		}
		// Each attempt's own: the last is the one that succeeded.
		mu.Lock()
		atCommit = mem.CrashClone(vfs.CrashCloneCfg{})
		mu.Unlock()
	})
	e.upload(t, p)
	e.r.faults.SetHook(nil)
	afterReturn := mem.CrashClone(vfs.CrashCloneCfg{})
	loc, err := e.idx.GetLocation(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	seg := loc.Segment
	open := func(fs vfs.FS) *meta.Index {
		t.Helper()
		x, err := meta.Open(e.v.IndexDir(), e.v.Keys, meta.Options{FS: fs})
		if err != nil {
			t.Fatalf("the index does not open after the power cut: %v", err)
		}
		t.Cleanup(func() { x.Close() })
		return x
	}

	mu.Lock()
	cut := atCommit
	mu.Unlock()
	if cut == nil {
		t.Fatal("the upload never reached the mediator's commit")
	}
	if _, err := open(cut).GetRepl(intentName(seg)); err != nil {
		t.Fatalf("segment %s: the intent recorded before the mediator's commit, after a power cut at the commit: %v", seg, err)
	}

	x := open(afterReturn)
	if _, err := x.GetSegment(seg); err != nil {
		t.Fatalf("segment recorded by an upload that returned, after the power cut: %v", err)
	}
	for _, id := range ids {
		if l, err := x.GetLocation(id); err != nil || l.Segment != seg {
			t.Fatalf("chunk %s, uploaded in segment %s, after the power cut: %+v, %v", id, seg, l, err)
		}
	}
	if _, err := x.GetRepl(intentName(seg)); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("segment %s recorded, after the power cut its intent is still there: %v", seg, err)
	}
}
