package replicate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// snapshotOnFakeNet stores a snapshot of an index of 2000 inodes, over
// several snapshot segments (the largest segment of the smallest class),
// on a fakeNet through the engine; it returns the engine, the network,
// the snapshot segments recorded and the records the snapshot holds.
func snapshotOnFakeNet(t *testing.T) (*engine, *fakeNet, []meta.Segment, int) {
	t.Helper()
	old := MaxSegment
	MaxSegment = SizeClasses[0]
	t.Cleanup(func() { MaxSegment = old })
	e, f := peerEngine(t, 4, nil)
	commit(t, e.idx, func(b *meta.Batch) {
		for i := range 2000 {
			b.PutInode(&meta.Inode{Ino: uint64(1000 + i), Mode: 0o100644, Size: uint64(i)})
		}
	})
	recs, err := exportRecordsState(e.idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	var snaps []meta.Segment
	e.idx.Segments(func(s meta.Segment) error {
		if s.Kind == meta.KindSnapshot {
			snaps = append(snaps, s)
		}
		return nil
	})
	if len(snaps) < 2 || f.snapshotPointer() == nil {
		t.Fatalf("%d snapshot segments recorded, pointer %v: the test wants several", len(snaps), f.snapshotPointer() != nil)
	}
	for _, s := range snaps {
		if s.DeadSince != 0 || s.Used == 0 || int(s.Used) > MaxSegment || s.State != meta.SegmentDurable {
			t.Fatalf("snapshot segment %s: dead %d, %d bytes used, %v", s.ID, s.DeadSince, s.Used, s.State)
		}
	}
	return e, f, snaps, recs
}

// TestRestoreThroughLyingPeers: a snapshot stored in several segments is
// restored into an empty home while the node of every segment's first
// data piece sends junk: every record comes back, the restored vault is
// covered by the snapshot it came from (the same state hash), and the
// progress counts each segment and its sealed bytes, from 0 to the total.
func TestRestoreThroughLyingPeers(t *testing.T) {
	e, f, snaps, recs := snapshotOnFakeNet(t)
	f.peers[0].set(peerJunk)
	home := filepath.Join(t.TempDir(), "restored")
	var prog [][4]int64
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The default piece timeout and hedge (zero).
	res, err := Restore(ctx, RestoreOptions{Home: home, Mediator: f.med.Address(), Account: f.acct, Password: testPassword,
		Progress: func(s, ts int, b, tb int64) { prog = append(prog, [4]int64{int64(s), int64(ts), b, tb}) }})
	if err != nil {
		t.Fatalf("restore with a lying node: %v", err)
	}
	// Each segment: node 0 lies, node 2 backs it up; node 3 is never
	// needed within the default hedge (two seconds).
	if g := f.gets(); g[3] != 0 {
		t.Fatalf("gets per node %v: node 3 asked, as if there were no hedge delay", g)
	}
	if res.Segments != len(snaps) || res.Records != recs || res.Taken.UnixNano() != int64(f.snapshotPointer().Seq) {
		t.Fatalf("restored %d segments, %d records, taken %v; want %d, %d, %d", res.Segments, res.Records, res.Taken, len(snaps), recs, f.snapshotPointer().Seq)
	}
	n := int64(len(snaps))
	if len(prog) != len(snaps)+1 || prog[0] != [4]int64{0, n, 0, prog[0][3]} || prog[len(prog)-1] != [4]int64{n, n, prog[0][3], prog[0][3]} {
		t.Fatalf("progress %v, want %d segments from 0 to the total bytes", prog, n)
	}
	for i := 1; i < len(prog); i++ {
		if prog[i][0] != int64(i) || prog[i][2] <= prog[i-1][2] {
			t.Fatalf("progress %v: step %d", prog, i)
		}
	}
	v, err := vault.Open(home, testPassword, vault.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	for _, ino := range []uint64{1000, 2999} {
		if in, err := idx.GetInode(ino); err != nil || in.Size != ino-1000 {
			t.Fatalf("inode %d restored: %v, size %d", ino, err, in.Size)
		}
	}
	sum, err := idx.GetRepl("snapshot_hash")
	e.r.mu.Lock()
	want := bytes.Clone(e.r.snapHash)
	e.r.mu.Unlock()
	if err != nil || !bytes.Equal(sum, want) {
		t.Fatalf("restored state hash %x (%v), the snapshot's %x", sum, err, want)
	}
	// The size of the sealed snapshot, as the engine that stored it knows.
	if got, want := storedSnapshotSize(idx), storedSnapshotSize(e.idx); got != want || want == 0 {
		t.Fatalf("restored snapshot size %d, the stored snapshot's %d", got, want)
	}
}

// exportRecordsState counts the records a snapshot of idx holds.
func exportRecordsState(idx *meta.Index) (int, error) {
	n := 0
	_, err := idx.ExportState(func(k, v []byte) error { n++; return nil })
	return n, err
}

// TestFetchSnapshotRefusesWhatDoesNotMatch: the snapshot's segments read
// back through fetchSnapshot, then what a lying mediator or pointer can
// do: a pointer of another sequence number (its list sealed for
// another), a segment that holds half the bytes the list says, two
// segments swapped: each is ErrSnapshot. A restore that fails leaves the
// home as it was: no key file, no config, no index.
func TestFetchSnapshotRefusesWhatDoesNotMatch(t *testing.T) {
	e, f, snaps, recs := snapshotOnFakeNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := *f.snapshotPointer()
	fetch := func(p *fnet.SnapshotPointer) (*restored, int, error) {
		rs, err := fetchSnapshot(ctx, f.client, e.v, f.acct, p, time.Minute, time.Minute, nil)
		if err != nil {
			return nil, 0, err
		}
		return rs, rs.segments, nil
	}
	rs, nsegs, err := fetch(&p)
	if err != nil || nsegs != len(snaps) {
		t.Fatalf("fetch of the snapshot: %d segments, %v", nsegs, err)
	}
	if n := rs.count; n != recs {
		t.Fatalf("the fetched snapshot holds %d records, want %d", n, recs)
	}
	other := p
	other.Seq++
	if _, _, err := fetch(&other); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("a pointer of another sequence: %v", err)
	}
	// The list's order differs from the index's: map each id.
	f.mu.Lock()
	first, second := fnet.SegmentID(snaps[0].ID), fnet.SegmentID(snaps[1].ID)
	f.segs[first], f.segs[second] = f.segs[second], f.segs[first]
	f.mu.Unlock()
	if _, _, err := fetch(&p); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("two snapshot segments swapped: %v", err)
	}
	f.mu.Lock()
	f.segs[first], f.segs[second] = f.segs[second], f.segs[first]
	f.mu.Unlock()
	// Segment 0 holds half the bytes the list says it uses.
	chain, err := decodeChain(mustOpenList(t, e, &p), p.Seq)
	if err != nil {
		t.Fatal(err)
	}
	s0 := chain.segments()[0]
	f.addSegment(fnet.SegmentID(s0.id), 2, 4, segmentData(7, int(s0.used)/2), nil)
	if _, _, err := fetch(&p); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("a snapshot segment shorter than the list says: %v", err)
	}
	// A failed restore leaves nothing behind.
	for _, pr := range f.peers {
		pr.set(peerRefuse)
	}
	home := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(ctx, RestoreOptions{Home: home, Mediator: f.med.Address(), Account: f.acct, Password: testPassword,
		PieceTimeout: time.Minute, HedgeAfter: time.Minute}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("snapshot segment 1 of %d", len(snaps))) {
		t.Fatalf("a restore from nodes that all refuse: %v, want it to name the first segment", err)
	}
	for _, name := range []string{vault.KeyFileName, vault.ConfigFileName, vault.IndexDirName} {
		if _, err := os.Stat(filepath.Join(home, name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left in the home after a failed restore: %v", name, err)
		}
	}
}

// mustOpenList opens pointer p's segment list.
func mustOpenList(t *testing.T, e *engine, p *fnet.SnapshotPointer) []byte {
	t.Helper()
	b, err := e.r.snap.Open(nil, p.Sealed, snapshotAD("list", p.Account, p.Seq))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRecoverIndexThroughLyingPeers: a vault's index is rebuilt from the
// network snapshot while a node sends junk: the new index holds what the
// snapshot holds (not what was written after it), the old one is kept
// beside it, and no half-built index is left. Recovering while every node
// refuses fails and leaves the index where it was, untouched.
func TestRecoverIndexThroughLyingPeers(t *testing.T) {
	e, f, snaps, recs := snapshotOnFakeNet(t)
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 5000, Mode: 0o100644, Size: 1}) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := RecoverOptions{Vault: e.v, Mediator: f.med.Address()} // the default timeouts
	for _, p := range f.peers {
		p.set(peerRefuse)
	}
	if _, err := RecoverIndex(ctx, opts); err == nil {
		t.Fatal("recovery from nodes that all refuse succeeded")
	}
	if in, err := e.idx.GetInode(5000); err != nil || in.Size != 1 {
		t.Fatalf("the index after a failed recovery: %v", err)
	}
	if _, err := os.Stat(e.v.IndexDir() + ".recovering"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a half-built index left: %v", err)
	}
	for _, p := range f.peers {
		p.set(peerHonest)
	}
	f.peers[1].set(peerJunk)
	before := f.gets()
	res, err := RecoverIndex(ctx, opts)
	if err != nil {
		t.Fatalf("recovery with a lying node: %v", err)
	}
	if g := f.gets(); g[3] != before[3] {
		t.Fatalf("gets per node %v: node 3 asked, as if there were no hedge delay", g)
	}
	if res.Records != recs || res.Segments != len(snaps) || res.Damaged == "" {
		t.Fatalf("recovered %d records of %d segments, damaged %q; want %d of %d", res.Records, res.Segments, res.Damaged, recs, len(snaps))
	}
	if st, err := os.Stat(res.Damaged); err != nil || !st.IsDir() {
		t.Fatalf("the old index is not kept at %s: %v", res.Damaged, err)
	}
	if _, err := os.Stat(e.v.IndexDir() + ".recovering"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the building index left: %v", err)
	}
	// A copy: the engine's index, now the damaged one, holds the lock
	// of the index path in this process.
	cp := filepath.Join(t.TempDir(), "index")
	if err := os.CopyFS(cp, os.DirFS(e.v.IndexDir())); err != nil {
		t.Fatal(err)
	}
	idx, err := meta.Open(cp, e.v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	if in, err := idx.GetInode(2999); err != nil || in.Size != 1999 {
		t.Fatalf("inode 2999 in the recovered index: %v", err)
	}
	if _, err := idx.GetInode(5000); err == nil {
		t.Fatal("the recovered index holds an inode written after the snapshot")
	}
	// An index lost altogether is recovered too, with nothing to keep.
	if err := os.Rename(e.v.IndexDir(), filepath.Join(t.TempDir(), "gone")); err != nil {
		t.Fatal(err)
	}
	res, err = RecoverIndex(ctx, opts)
	if err != nil || res.Damaged != "" || res.Records != recs {
		t.Fatalf("recovery of a lost index: %v, damaged %q, %d records", err, res.Damaged, res.Records)
	}
	if _, err := os.Stat(e.v.IndexDir()); err != nil {
		t.Fatalf("no index after recovering a lost one: %v", err)
	}
}

// snapshotSegments returns the snapshot segments the index records, the
// live ones and the dead ones.
func snapshotSegments(t *testing.T, idx *meta.Index) (live, dead []meta.Segment) {
	t.Helper()
	err := idx.Segments(func(s meta.Segment) error {
		if s.Kind == meta.KindSnapshot {
			if s.DeadSince == 0 {
				live = append(live, s)
			} else {
				dead = append(dead, s)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return live, dead
}

// TestSnapshotUploadsWhatItReferences: a snapshot of an index whose file
// references chunks not yet uploaded uploads them first and holds their
// locations (a restore finds them); it fails, storing nothing, while the
// nodes refuse. A snapshot of an unchanged index stores nothing new; one
// after a change supersedes the previous one, whose segments are then
// dead. Right after a snapshot of the state the index is in, that state
// is covered (restorable) without hashing it again.
func TestSnapshotUploadsWhatItReferences(t *testing.T) {
	e, f := peerEngine(t, 4, nil)
	rng := rand.New(rand.NewPCG(7, 8))
	ids, _ := e.addChunks(t, rng, 5000, 6000)
	if _, _, err := e.r.protection(); err != nil {
		t.Fatal(err)
	}
	f.peers[0].set(peerRefuse)
	f.peers[1].set(peerRefuse)
	if err := e.r.Snapshot(); err == nil || f.snapshotPointer() != nil {
		t.Fatalf("snapshot while its chunks cannot be uploaded: %v, pointer stored %v", err, f.snapshotPointer() != nil)
	}
	f.peers[0].set(peerHonest)
	f.peers[1].set(peerHonest)
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, err := e.idx.GetLocation(id); err != nil {
			t.Fatalf("chunk %s not uploaded by the snapshot: %v", id, err)
		}
	}
	if n := len(e.r.errs); n != 0 {
		t.Fatalf("errors noted by a snapshot that succeeded: %v", e.r.errs)
	}
	first := *f.snapshotPointer()
	live1, dead := snapshotSegments(t, e.idx)
	if len(live1) == 0 || len(dead) != 0 {
		t.Fatalf("%d live and %d dead snapshot segments after one snapshot", len(live1), len(dead))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rs, err := fetchSnapshot(ctx, f.client, e.v, f.acct, &first, time.Minute, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(t.TempDir(), "restored-index")
	idx2 := restoredIndex(t, e, restored, rs)
	for _, id := range ids {
		if _, err := idx2.GetLocation(id); err != nil {
			t.Fatalf("chunk %s has no location in the snapshot: %v", id, err)
		}
	}

	// Unchanged: nothing stored; covered.
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if f.snapshotPointer().Seq != first.Seq {
		t.Fatal("a snapshot of an unchanged index was stored again")
	}
	if covered, _, err := e.r.protection(); err != nil || !covered {
		t.Fatalf("after a snapshot of the unchanged index: covered %v (%v)", covered, err)
	}

	// Changed: a new snapshot supersedes the first, covered at once.
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 77, Mode: 0o100644, Size: 7}) })
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if f.snapshotPointer().Seq == first.Seq {
		t.Fatal("no snapshot stored after a change")
	}
	live2, dead := snapshotSegments(t, e.idx)
	if len(dead) != len(live1) || len(live2) == 0 {
		t.Fatalf("after a second snapshot: %d live, %d dead; want the first's %d dead", len(live2), len(dead), len(live1))
	}
	for _, s := range live1 {
		if !slices.ContainsFunc(dead, func(d meta.Segment) bool { return d.ID == s.ID }) {
			t.Fatalf("segment %s of the superseded snapshot not dead", s.ID)
		}
	}
	e.r.mu.Lock()
	gen := e.r.snapGen
	e.r.mu.Unlock()
	if covered, _, err := e.r.protection(); err != nil || !covered || gen == 0 {
		t.Fatalf("right after a snapshot of the index's state: covered %v (%v), generation %d", covered, err, gen)
	}
}

// restoredIndex imports a snapshot's records into a new index at dir,
// under e's vault keys.
func restoredIndex(t *testing.T, e *engine, dir string, rs *restored) *meta.Index {
	t.Helper()
	idx, err := meta.Open(dir, e.v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	if err := idx.Import(rs.walk); err != nil {
		t.Fatal(err)
	}
	return idx
}

// TestSnapshotPointerRefused: when the mediator refuses the pointer of a
// snapshot whose segments were stored, the snapshot fails and its segments
// are recorded dead (to be released), not left live and forgotten.
func TestSnapshotPointerRefused(t *testing.T) {
	old := MaxSegment
	MaxSegment = SizeClasses[0]
	t.Cleanup(func() { MaxSegment = old })
	e, f := peerEngine(t, 4, nil)
	commit(t, e.idx, func(b *meta.Batch) {
		for i := range 2000 {
			b.PutInode(&meta.Inode{Ino: uint64(1000 + i), Mode: 0o100644, Size: uint64(i)})
		}
	})
	f.refuse(0, fnet.CodeBadRequest)
	err := e.r.Snapshot()
	if err == nil || !strings.Contains(err.Error(), "storing the pointer") {
		t.Fatalf("snapshot with the pointer refused: %v", err)
	}
	live, dead := snapshotSegments(t, e.idx)
	f.mu.Lock()
	nc := len(f.commits)
	f.mu.Unlock()
	if len(live) != 0 || len(dead) < 2 || len(dead) != nc {
		t.Fatalf("%d live and %d dead snapshot segments of %d committed, want every one dead", len(live), len(dead), nc)
	}
	if n := intents(t, e); n != 0 {
		t.Fatalf("%d upload intents left for the dead snapshot's segments", n)
	}
}
