package meta

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

func testSegment(id byte, pieces int) Segment {
	s := Segment{ID: SegmentID{id, 0xee}, Kind: KindData, State: SegmentDegraded, K: 2, N: byte(pieces), Healthy: 1,
		Used: 0x01020304, Class: 0x05060708, Created: -5, Checked: 1 << 40, DeadSince: 9}
	for i := range pieces {
		s.Pieces = append(s.Pieces, SegmentPiece{Node: [32]byte{byte(i + 1), 0xaa}, Piece: [32]byte{byte(i + 1), 0xbb}})
	}
	return s
}

func sameSegment(a, b Segment) bool {
	return a.ID == b.ID && a.Kind == b.Kind && a.State == b.State && a.K == b.K && a.N == b.N &&
		a.Healthy == b.Healthy && a.Used == b.Used && a.Class == b.Class && a.Created == b.Created &&
		a.Checked == b.Checked && a.DeadSince == b.DeadSince && slices.Equal(a.Pieces, b.Pieces) &&
		len(a.Pieces) == len(b.Pieces)
}

// TestSegmentRecordBounds: segment records of 0, 1 and 3 pieces decode to
// what was written (every piece's node and piece id in its place); a
// record one byte short of the fixed part, of another version, or whose
// length does not match its count of pieces is refused with ErrCorrupt, as
// is a location record that is not exactly 24 bytes.
func TestSegmentRecordBounds(t *testing.T) {
	for _, n := range []int{0, 1, 3} {
		s := testSegment(1, n)
		b := s.encode()
		if len(b) != segmentFixed+64*n {
			t.Fatalf("segment of %d pieces: %d bytes, want %d", n, len(b), segmentFixed+64*n)
		}
		got, err := decodeSegment(s.ID, b)
		if err != nil || !sameSegment(got, s) {
			t.Fatalf("segment of %d pieces read back as %+v, %v; wrote %+v", n, got, err, s)
		}
		if _, err := decodeSegment(s.ID, b[:len(b)-1]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("segment of %d pieces one byte short: %v", n, err)
		}
		if _, err := decodeSegment(s.ID, append(b[:len(b):len(b)], 0)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("segment of %d pieces one byte long: %v", n, err)
		}
		v := slices.Clone(b)
		v[0] = segmentRecV1 + 1
		if _, err := decodeSegment(s.ID, v); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("segment record of version %d: %v", v[0], err)
		}
		if n > 0 {
			v = slices.Clone(b)
			v[38]-- // one piece fewer than the bytes hold
			if _, err := decodeSegment(s.ID, v); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("segment whose count of pieces is one short: %v", err)
			}
		}
	}
	for _, n := range []int{0, segmentFixed - 1} {
		if _, err := decodeSegment(SegmentID{}, make([]byte, n)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("segment record of %d bytes: %v", n, err)
		}
	}
	l := Location{Segment: SegmentID{3, 4}, Offset: 0x0a0b0c0d, Length: 0x01020304}
	lb := l.encode()
	if got, err := decodeLocation(lb); err != nil || got != l {
		t.Fatalf("location read back as %+v, %v", got, err)
	}
	for _, n := range []int{len(lb) - 1, len(lb) + 1, 0} {
		if _, err := decodeLocation(append(slices.Clone(lb), 0)[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("location record of %d bytes: %v", n, err)
		}
	}
	if SegmentDurable.String() != "durable" || SegmentDegraded.String() != "degraded" || SegmentState(9).String() != "state(9)" {
		t.Fatal("segment state names")
	}
}

// TestReplRecordsReadBack: locations and segments read back (one by one
// and by scans that visit each once); a record that is absent is
// ErrNotFound, a damaged one (or one under a key of the wrong length) is
// ErrCorrupt from the read and from the scan, and a scan stops at its
// callback's error.
func TestReplRecordsReadBack(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 4))
	defer x.Close()
	b := x.NewBatch()
	segs := map[SegmentID]Segment{}
	locs := map[ChunkID]Location{}
	for i := range 4 {
		s := testSegment(byte(10+i), i)
		segs[s.ID] = s
		b.PutSegment(&s)
		id := ChunkID{0x33, byte(i)}
		locs[id] = Location{Segment: s.ID, Offset: uint32(i * 100), Length: uint32(50 + i)}
		l := locs[id]
		b.PutLocation(id, &l)
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	for id, s := range segs {
		if got, err := x.GetSegment(id); err != nil || !sameSegment(got, s) {
			t.Fatalf("segment %s: %+v, %v", id, got, err)
		}
	}
	for id, l := range locs {
		if got, err := x.GetLocation(id); err != nil || got != l {
			t.Fatalf("location of %s: %+v, %v", id, got, err)
		}
	}
	seenS := map[SegmentID]int{}
	if err := x.Segments(func(s Segment) error {
		seenS[s.ID]++
		if !sameSegment(s, segs[s.ID]) {
			t.Errorf("scanned segment %+v, wrote %+v", s, segs[s.ID])
		}
		return nil
	}); err != nil || len(seenS) != len(segs) {
		t.Fatalf("segments scanned: %v, %v", seenS, err)
	}
	seenL := map[ChunkID]int{}
	if err := x.Locations(func(id ChunkID, l Location) error {
		seenL[id]++
		if l != locs[id] {
			t.Errorf("scanned location of %s: %+v, wrote %+v", id, l, locs[id])
		}
		return nil
	}); err != nil || len(seenL) != len(locs) {
		t.Fatalf("locations scanned: %v, %v", seenL, err)
	}
	for _, c := range seenS {
		if c != 1 {
			t.Fatalf("a segment scanned %d times", c)
		}
	}
	for _, c := range seenL {
		if c != 1 {
			t.Fatalf("a location scanned %d times", c)
		}
	}
	stop := errors.New("stop here")
	if err := x.Segments(func(Segment) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("segment scan's callback error: %v", err)
	}
	if err := x.Locations(func(ChunkID, Location) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("location scan's callback error: %v", err)
	}
	if _, err := x.GetSegment(SegmentID{0x77}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent segment: %v", err)
	}
	if _, err := x.GetLocation(ChunkID{0x77}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent location: %v", err)
	}

	seal := func(key, plain []byte) {
		t.Helper()
		if err := x.db.Set(key, x.keys.Meta.Seal(nil, plain, key), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	del := func(key []byte) {
		t.Helper()
		if err := x.db.Delete(key, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	scans := func(what string) {
		t.Helper()
		if err := x.Segments(func(Segment) error { return nil }); !errors.Is(err, ErrCorrupt) {
			t.Errorf("segment scan over %s: %v", what, err)
		}
		if err := x.Locations(func(ChunkID, Location) error { return nil }); !errors.Is(err, ErrCorrupt) {
			t.Errorf("location scan over %s: %v", what, err)
		}
	}
	// Damaged values.
	seal(segmentKey(SegmentID{0x80}), []byte{segmentRecV1, 1, 2})
	seal(locationKey(ChunkID{0x80}), []byte{1, 2, 3})
	if _, err := x.GetSegment(SegmentID{0x80}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("damaged segment: %v", err)
	}
	if _, err := x.GetLocation(ChunkID{0x80}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("damaged location: %v", err)
	}
	scans("a damaged record")
	del(segmentKey(SegmentID{0x80}))
	del(locationKey(ChunkID{0x80}))
	// Sound values under keys one byte long.
	s := testSegment(0x81, 1)
	seal(append(segmentKey(s.ID), 0), s.encode())
	l := Location{Segment: s.ID, Length: 1}
	seal(append(locationKey(ChunkID{0x81}), 0), l.encode())
	scans("a key one byte long")
}

// TestReplQueueSurvivesPowerLoss: the replication engine's named records
// (its queue) read back by prefix after a power cut exactly as they were
// acknowledged by a synced commit: every entry once, in name order, with its
// value, none that was deleted, none of another prefix.
func TestReplQueueSurvivesPowerLoss(t *testing.T) {
	x, reboot := crashableIndex(t)
	want := map[string]string{}
	for round := range 5 {
		b := x.NewBatch()
		for i := range 20 {
			name := fmt.Sprintf("queue/%03d", round*20+i)
			val := fmt.Sprintf("entry %d.%d", round, i)
			b.PutRepl(name, []byte(val))
			want[name] = val
		}
		if round > 0 {
			// The engine takes done entries off in the batch that adds more.
			for i := range 7 {
				name := fmt.Sprintf("queue/%03d", (round-1)*20+i*2)
				b.DeleteRepl(name)
				delete(want, name)
			}
		}
		b.PutRepl(fmt.Sprintf("queuf%d", round), []byte("another prefix"))
		if err := b.Commit(true); err != nil {
			t.Fatal(err)
		}
	}
	read := func(y *Index, what string) {
		t.Helper()
		var names []string
		got := map[string]string{}
		if err := y.ReplRecords("queue/", func(name string, val []byte) error {
			if _, dup := got[name]; dup {
				t.Errorf("%s: entry %s read twice", what, name)
			}
			names = append(names, name)
			got[name] = string(val)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.IsSorted(names) {
			t.Errorf("%s: entries out of order: %v", what, names)
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d entries, want %d", what, len(got), len(want))
		}
		for name, v := range want {
			if got[name] != v {
				t.Errorf("%s: entry %s = %q, want %q", what, name, got[name], v)
			}
		}
		for name := range got {
			if _, ok := want[name]; !ok {
				t.Errorf("%s: entry %s read back, deleted or never written", what, name)
			}
		}
		if v, err := y.GetRepl("queue/001"); err != nil || string(v) != want["queue/001"] {
			t.Errorf("%s: GetRepl: %q, %v", what, v, err)
		}
		if _, err := y.GetRepl("queue/000"); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: a deleted entry: %v", what, err)
		}
	}
	read(x, "before the cut")
	// An entry written without sync may be lost, never half-kept.
	b := x.NewBatch()
	b.PutRepl("queue/999", []byte("unsynced"))
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	y := reboot()
	if v, err := y.GetRepl("queue/999"); err == nil {
		want["queue/999"] = string(v)
	}
	read(y, "after a power cut")
	// Nor are entries counted as snapshot state: no snapshot generation.
	g := x.StateGeneration()
	b = x.NewBatch()
	b.PutRepl("queue/x", nil)
	if err := b.Commit(false); err != nil || x.StateGeneration() != g {
		t.Fatalf("a queue entry changed the snapshot state: %d -> %d, %v", g, x.StateGeneration(), err)
	}
}

// TestSegmentStateGeneration: a dead data segment's record and a
// segment's deletion change the snapshot state; a live segment's
// (health) and a dead snapshot segment's do not.
func TestSegmentStateGeneration(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 4))
	defer x.Close()
	step := func(what string, change bool, fn func(b *Batch)) {
		t.Helper()
		g := x.StateGeneration()
		b := x.NewBatch()
		fn(b)
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		if got := x.StateGeneration() != g; got != change {
			t.Errorf("%s: snapshot state changed %v, want %v", what, got, change)
		}
	}
	live := testSegment(1, 2)
	live.DeadSince = 0
	step("a live data segment", false, func(b *Batch) { b.PutSegment(&live) })
	dead := live
	dead.DeadSince = 7
	step("a dead data segment", true, func(b *Batch) { b.PutSegment(&dead) })
	snap := dead
	snap.ID, snap.Kind = SegmentID{2}, KindSnapshot
	step("a dead snapshot segment", false, func(b *Batch) { b.PutSegment(&snap) })
	step("a segment's deletion", true, func(b *Batch) { b.DeleteSegment(live.ID) })
}
