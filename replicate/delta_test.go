package replicate

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
)

// pointerChain opens the chain the fake mediator's pointer names.
func pointerChain(t testing.TB, e *engine, p *fnet.SnapshotPointer) *snapChain {
	t.Helper()
	b, err := e.r.snap.Open(nil, p.Sealed, snapshotAD("list", p.Account, p.Seq))
	if err != nil {
		t.Fatal(err)
	}
	c, err := decodeChain(b, p.Seq)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// liveHash is the state hash of e's index as it is now.
func liveHash(t *testing.T, e *engine) []byte {
	t.Helper()
	kf, err := e.r.readKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	h, err := stateHashWalk(e.idx, kf, e.idx.Export)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// all returns the records rs.walk passes.
func (rs *restored) all(t *testing.T) []record {
	t.Helper()
	var out []record
	if err := rs.walk(func(k, v []byte) error { out = append(out, record{k, v}); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// restoredHash restores the account into an empty home (`fincrypt
// restore`) and returns the state hash of the index it wrote, read back
// from that index's records (not the one Restore computed).
func restoredHash(t *testing.T, e *engine, f *fakeNet) ([]byte, error) {
	sum, _, _, err := restoreState(t, f, false)
	return sum, err
}

// restoreState is restoredHash with RestoreOptions.AcceptMismatch as
// accept; it also returns Restore's result and the restored index's
// recorded R snapshot_hash (nil if none: not taken as covered).
func restoreState(t *testing.T, f *fakeNet, accept bool) (sum []byte, res *RestoreResult, covered []byte, err error) {
	t.Helper()
	idx, kf, res, err := restoreAccount(t, f, accept)
	if err != nil {
		return nil, nil, nil, err
	}
	if covered, err = idx.GetRepl("snapshot_hash"); err != nil && !errors.Is(err, meta.ErrNotFound) {
		t.Fatal(err)
	}
	sum, err = stateHashWalk(idx, kf, idx.Export)
	return sum, res, covered, err
}

// TestSnapshotChainRestores: after a base, each change (a new file, a
// delete, a rename, a counter step) is stored as a delta that holds only
// what changed, the pointer names the base and the deltas in order, every
// segment of the chain stays alive through maintenance, and a restore into
// an empty home brings back exactly the live index (its state hash, read
// from the restored records). A change larger than a quarter of the base
// makes a new base, after which the old chain's segments are released and
// the restore still matches. A mediator that serves an older pointer
// restores that pointer's state, and the next snapshot is stored past it.
// A pointer stored with its reply lost is recorded as the chain's end.
//
// It fails on the code before the change feed (every pointer is one base:
// a v1 list), and on these mutants: a restore's walk that passes a base
// record the deltas say is gone (the delete restores a file that is gone), snapshot's own set holding
// only the new part's segments (maintenance releases the chain's base),
// and DropChanges called with the next epoch (a change made during the
// snapshot is lost from the next delta; see also meta's tests).
func TestSnapshotChainRestores(t *testing.T) {
	e, f := lostReplyEngine(t) // a base of 2000 inodes, several segments
	p := f.snapshotPointer()
	c := pointerChain(t, e, p)
	if len(c.parts) != 1 || c.parts[0].delta || !bytes.Equal(c.hash, liveHash(t, e)) {
		t.Fatalf("first snapshot: %d parts (delta %v), hash of the live index %v", len(c.parts), c.parts[0].delta, bytes.Equal(c.hash, liveHash(t, e)))
	}
	base := c.parts[0]
	dirent := func(b *meta.Batch, parent uint64, name string, ino uint64) {
		b.PutDirent(&meta.Dirent{Parent: parent, Name: name, Ino: ino, Type: 0o100000})
	}
	steps := []struct {
		what   string
		change func(b *meta.Batch)
	}{
		{"a new file", func(b *meta.Batch) {
			b.PutInode(&meta.Inode{Ino: 5000, Mode: 0o100644, Size: 9})
			dirent(b, meta.RootIno, "new", 5000)
		}},
		{"a delete", func(b *meta.Batch) { b.DeleteInode(1003) }},
		{"a rename", func(b *meta.Batch) {
			b.DeleteDirent(meta.RootIno, "new")
			dirent(b, meta.RootIno, "renamed", 5000)
		}},
		{"a file changed twice", func(b *meta.Batch) {
			b.PutInode(&meta.Inode{Ino: 1010, Mode: 0o100644, Size: 1})
			b.PutInode(&meta.Inode{Ino: 1010, Mode: 0o100644, Size: 2})
		}},
	}
	var older *fnet.SnapshotPointer
	var olderHash []byte
	for i, s := range steps {
		commit(t, e.idx, s.change)
		if i == 3 {
			if _, err := e.idx.NextIno(); err != nil { // a counter step, written outside a batch
				t.Fatal(err)
			}
		}
		if err := e.r.Snapshot(); err != nil {
			t.Fatalf("%s: snapshot: %v", s.what, err)
		}
		p = f.snapshotPointer()
		c = pointerChain(t, e, p)
		if len(c.parts) != i+2 || c.parts[0].seq != base.seq || !c.parts[i+1].delta {
			t.Fatalf("%s: the pointer names %d parts (base %d, want %d), want the base and %d deltas", s.what, len(c.parts), c.parts[0].seq, base.seq, i+1)
		}
		if d := c.parts[i+1].sealed; d*8 > base.sealed {
			t.Fatalf("%s: a delta of %d bytes for a base of %d: it holds more than the change", s.what, d, base.sealed)
		}
		want := liveHash(t, e)
		if !bytes.Equal(c.hash, want) {
			t.Fatalf("%s: the chain's state hash is not the live index's", s.what)
		}
		if err := e.r.maintain(); err != nil {
			t.Fatal(err)
		}
		live, _ := snapshotSegments(t, e.idx)
		for _, sg := range c.segments() {
			if !slices.Contains(segIDs(live), sg.id) || slices.Contains(f.released(), fnet.SegmentID(sg.id)) {
				t.Fatalf("%s: segment %s of the pointer's chain not alive", s.what, sg.id)
			}
		}
		got, err := restoredHash(t, e, f)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: the restore of base and %d deltas is not the live index (%v)", s.what, i+1, err)
		}
		if i == 1 {
			older, olderHash = p, want
		}
	}

	// A reply lost: the pointer stored is recorded as the chain's end.
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 5001, Mode: 0o100644, Size: 1}) })
	f.mu.Lock()
	f.lostPointerReplies = 1
	f.mu.Unlock()
	if err := e.r.Snapshot(); err != nil {
		t.Fatalf("a delta whose pointer was stored, its reply lost: %v", err)
	}
	if c = pointerChain(t, e, f.snapshotPointer()); len(c.parts) != len(steps)+2 {
		t.Fatalf("after a lost reply: %d parts, want %d", len(c.parts), len(steps)+2)
	}
	if got, err := restoredHash(t, e, f); err != nil || !bytes.Equal(got, liveHash(t, e)) {
		t.Fatalf("restore after a lost reply: not the live index (%v)", err)
	}
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 5002, Mode: 0o100644, Size: 1}) })
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if c = pointerChain(t, e, f.snapshotPointer()); len(c.parts) != len(steps)+3 {
		t.Fatalf("the delta after a lost reply: %d parts, want %d (it follows the stored one)", len(c.parts), len(steps)+3)
	}
	if got, err := restoredHash(t, e, f); err != nil || !bytes.Equal(got, liveHash(t, e)) {
		t.Fatalf("restore after the delta that followed a lost reply: not the live index (%v)", err)
	}

	// A mediator that serves an older pointer (its parts are alive):
	// the restore is that pointer's state.
	f.mu.Lock()
	newest := f.pointer
	f.pointer = older
	f.mu.Unlock()
	if got, err := restoredHash(t, e, f); err != nil || !bytes.Equal(got, olderHash) {
		t.Fatalf("restore from an older pointer: not its state (%v)", err)
	}
	// The engine's next snapshot follows its own chain, numbered past the
	// pointer it stored, and restores the live index.
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 5003, Mode: 0o100644, Size: 1}) })
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if p = f.snapshotPointer(); p.Seq <= newest.Seq {
		t.Fatalf("the snapshot after the mediator went back is numbered %d, not past %d", p.Seq, newest.Seq)
	}
	if got, err := restoredHash(t, e, f); err != nil || !bytes.Equal(got, liveHash(t, e)) {
		t.Fatalf("restore after the mediator went back: not the live index (%v)", err)
	}

	// A change of more than a quarter of the base: a new base. The old
	// chain's segments die and are released; the restore still matches.
	oldSegs := pointerChain(t, e, p).segments()
	rewriteAll(t, e, 7000)
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if c = pointerChain(t, e, f.snapshotPointer()); len(c.parts) != 1 || c.parts[0].delta {
		t.Fatalf("after a change larger than a quarter of the base: %d parts, want a new base", len(c.parts))
	}
	// A later snapshot covers the deaths; the release delay is a
	// millisecond.
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 5004, Mode: 0o100644, Size: 1}) })
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // past the release delay (a millisecond); nothing waits on another goroutine
	if err := e.r.maintain(); err != nil {
		t.Fatal(err)
	}
	for _, sg := range oldSegs {
		if !slices.Contains(f.released(), fnet.SegmentID(sg.id)) {
			t.Fatalf("segment %s of the chain a new base superseded not released", sg.id)
		}
	}
	if got, err := restoredHash(t, e, f); err != nil || !bytes.Equal(got, liveHash(t, e)) {
		t.Fatalf("restore after a new base: not the live index (%v)", err)
	}
}

// TestRestoreRefusesABrokenChain: a chain whose delta was swapped for
// another valid part, or whose state hash is wrong, is refused
// (ErrSnapshot) and the restore writes nothing.
func TestRestoreRefusesABrokenChain(t *testing.T) {
	e, f := lostReplyEngine(t)
	for i := range 2 {
		commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: uint64(6000 + i), Mode: 0o100644, Size: 1}) })
		if err := e.r.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	p := *f.snapshotPointer()
	c := pointerChain(t, e, &p)
	if len(c.parts) != 3 {
		t.Fatalf("%d parts, want a base and two deltas", len(c.parts))
	}
	reseal := func(c *snapChain) *fnet.SnapshotPointer {
		q := p
		q.Sealed = e.r.snap.Seal(nil, encodeChain(c), snapshotAD("list", p.Account, p.Seq))
		id, err := AccountIdentity(e.v)
		if err != nil {
			t.Fatal(err)
		}
		q.Sign(id)
		return &q
	}
	for _, bad := range []struct {
		what     string
		mismatch bool // records that are all right, adding up to another state
		c        func() *snapChain
	}{
		{"a wrong state hash", true, func() *snapChain {
			d := *c
			d.hash = bytes.Repeat([]byte{1}, len(c.hash))
			return &d
		}},
		{"the last delta left out", false, func() *snapChain {
			d := *c
			d.parts = slices.Clone(c.parts[:2])
			d.parts[1].seq = p.Seq // (the pointer's seq is its last part's)
			return &d
		}},
	} {
		f.mu.Lock()
		f.pointer = reseal(bad.c())
		f.mu.Unlock()
		if _, err := restoredHash(t, e, f); !errors.Is(err, ErrSnapshot) || errors.Is(err, ErrStateMismatch) != bad.mismatch {
			t.Fatalf("%s: restore %v, want ErrSnapshot (a state mismatch: %v)", bad.what, err, bad.mismatch)
		}
		sum, res, covered, err := restoreState(t, f, true)
		if !bad.mismatch {
			// A part that does not open is refused even so.
			if !errors.Is(err, ErrSnapshot) {
				t.Fatalf("%s: restore accepting a mismatch: %v, want ErrSnapshot", bad.what, err)
			}
			continue
		}
		// Asked to, a restore writes what the records make, says so, and
		// does not take the vault as covered by that snapshot.
		if err != nil || !res.Mismatch || covered != nil {
			t.Fatalf("%s: restore accepting a mismatch: %v, result %+v, snapshot_hash recorded %x", bad.what, err, res, covered)
		}
		if live := liveHash(t, e); !bytes.Equal(sum, live) {
			t.Fatalf("%s: the records restored anyway hash to %x, the live index to %x", bad.what, sum[:8], live[:8])
		}
	}
	f.mu.Lock()
	f.pointer = &p
	f.mu.Unlock()
	if got, res, covered, err := restoreState(t, f, true); err != nil || !bytes.Equal(got, liveHash(t, e)) || res.Mismatch || !bytes.Equal(covered, got) {
		t.Fatalf("restore of the whole chain: %v (mismatch %v, covered %x)", err, res != nil && res.Mismatch, covered)
	}
}

// TestSnapshotChainCodec: a chain encodes and decodes; a v1 list reads as
// a lone base of the pointer's seq; damaged chains are ErrSnapshot.
func TestSnapshotChainCodec(t *testing.T) {
	segs := []snapSegment{{id: meta.SegmentID{1}, class: 4096, used: 100}}
	c := &snapChain{hash: bytes.Repeat([]byte{7}, 32), parts: []snapPart{
		{seq: 10, sealed: 100, segs: segs},
		{seq: 11, delta: true, sealed: 100, segs: segs},
	}}
	got, err := decodeChain(encodeChain(c), 11)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(c) {
		t.Fatalf("decoded %+v, %v; want %+v", got, err, c)
	}
	v1, err := decodeChain(encodeList(100, segs), 42)
	if err != nil || len(v1.parts) != 1 || v1.parts[0].seq != 42 || v1.parts[0].delta || v1.hash != nil {
		t.Fatalf("a v1 list: %+v, %v", v1, err)
	}
	enc := encodeChain(c)
	for _, bad := range []struct {
		what string
		b    []byte
	}{
		{"truncated", enc[:len(enc)-1]},
		{"a byte more", append(slices.Clone(enc), 0)},
		{"a delta first", encodeChain(&snapChain{hash: c.hash, parts: []snapPart{c.parts[1]}})},
		{"parts out of order", encodeChain(&snapChain{hash: c.hash, parts: []snapPart{{seq: 12, sealed: 100, segs: segs}, c.parts[1]}})},
		{"no part", encodeChain(&snapChain{hash: c.hash})},
	} {
		if _, err := decodeChain(bad.b, 11); !errors.Is(err, ErrSnapshot) {
			t.Fatalf("%s: %v, want ErrSnapshot", bad.what, err)
		}
	}
}

// TestRestoredWalkAppliesTheDeltas: a base and deltas of random sets,
// replacements and deletions (of keys in the base, added by an earlier
// delta, or never there) walk, in key order, to exactly what applying them
// one by one to a map gives. The base is walked where it lies; only the
// deltas are held as records.
func TestRestoredWalkAppliesTheDeltas(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	key := func() string { return fmt.Sprintf("k%03d", rng.IntN(300)) }
	for round := range 50 {
		model := map[string]string{}
		for range rng.IntN(200) {
			model[key()] = fmt.Sprintf("base %d", rng.IntN(1000))
		}
		sorted := func(m map[string]string) []record {
			var out []record
			for _, k := range slices.Sorted(maps.Keys(m)) {
				out = append(out, record{[]byte(k), []byte(m[k])})
			}
			return out
		}
		rs := &restored{base: recordsOf(encodeRecords(sorted(model)))}
		for d := range rng.IntN(6) {
			change := map[string]string{}
			for range rng.IntN(40) {
				if rng.IntN(3) == 0 {
					change[key()] = "" // gone
				} else {
					change[key()] = fmt.Sprintf("delta %d.%d", d, rng.IntN(1000))
				}
			}
			delta := newFramedDelta(0)
			for _, rc := range sorted(change) {
				delta = appendRecord(delta, rc.key, rc.sealed)
			}
			var err error
			if rs.overlay, err = applyDelta(rs.overlay, recordsOf(delta)); err != nil {
				t.Fatal(err)
			}
			for k, v := range change {
				if v == "" {
					delete(model, k)
				} else {
					model[k] = v
				}
			}
		}
		got := rs.all(t)
		want := sorted(model)
		if len(got) != len(want) {
			t.Fatalf("round %d: walked %d records, want %d", round, len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i].key, want[i].key) || !bytes.Equal(got[i].sealed, want[i].sealed) {
				t.Fatalf("round %d: record %d is %s=%q, want %s=%q", round, i, got[i].key, got[i].sealed, want[i].key, want[i].sealed)
			}
		}
	}
}
