package mediator

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// prefixEnd carries into the first byte, and a prefix of 0xff bytes only
// has no end (nil: unbounded).
func TestPrefixEndCarries(t *testing.T) {
	for _, c := range []struct{ in, want []byte }{
		{[]byte("n/"), []byte("n0")},
		{[]byte{1, 0xff}, []byte{2}},
		{[]byte{1, 0xff, 0xff}, []byte{2}},
		{[]byte{1, 2, 0xff}, []byte{1, 3}},
		{[]byte{0xff, 0xff}, nil},
	} {
		if got := prefixEnd(c.in); !bytes.Equal(got, c.want) || (c.want == nil) != (got == nil) {
			t.Errorf("prefixEnd(%x) = %x, want %x", c.in, got, c.want)
		}
	}
}

func pebbleIndexKeys(t *testing.T, st *PebbleStore) [][]byte {
	t.Helper()
	var keys [][]byte
	if err := st.iterate([]byte(pfxPiece), func(k, _ []byte) error {
		keys = append(keys, bytes.Clone(k))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// pebbleStoreWith opens a Pebble store in a temporary directory, closed at
// the test's end, with segs committed.
func pebbleStoreWith(t *testing.T, segs ...*Segment) *PebbleStore {
	t.Helper()
	st, err := OpenPebbleStore(t.TempDir(), PebbleOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, seg := range segs {
		if err := st.CommitSegment(context.Background(), seg); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// A segment deleted, or a piece moved to another node, leaves no piece
// index entry behind (docs/PROTOCOL.md, "mediator state": p/<node><piece>
// names a contracted piece).
func TestStorePebbleReleasesIndexEntries(t *testing.T) {
	ctx := context.Background()
	n1, n2, n3 := fnet.NodeID{1}, fnet.NodeID{2}, fnet.NodeID{3}
	seg := suiteSegment(1, 1, 10, n1, n2)
	st := pebbleStoreWith(t, seg)
	if k := pebbleIndexKeys(t, st); len(k) != 2 {
		t.Fatalf("index entries after the commit: %d, want 2", len(k))
	}
	moved := suiteSegment(1, 1, 10, n1, n3)
	if err := st.UpdateSegment(ctx, moved); err != nil {
		t.Fatal(err)
	}
	keys := pebbleIndexKeys(t, st)
	if len(keys) != 2 || !bytes.Equal(keys[0], key(pfxPiece, n1[:], moved.Pieces[0].ID[:])) ||
		!bytes.Equal(keys[1], key(pfxPiece, n3[:], moved.Pieces[1].ID[:])) {
		t.Fatalf("index entries after moving piece 1 from node 2 to node 3: %q", keys)
	}
	if _, err := st.DeleteSegment(ctx, seg.ID); err != nil {
		t.Fatal(err)
	}
	if k := pebbleIndexKeys(t, st); len(k) != 0 {
		t.Fatalf("index entries left after the segment's deletion: %q", k)
	}
}

// A piece given a new id on the same node is found by its new id.
func TestStorePebbleUpdateRenamesPiece(t *testing.T) {
	ctx := context.Background()
	n1, n2 := fnet.NodeID{1}, fnet.NodeID{2}
	seg := suiteSegment(1, 1, 10, n1, n2)
	st := pebbleStoreWith(t, seg)
	upd := suiteSegment(1, 1, 10, n1, n2)
	old := upd.Pieces[0].ID
	upd.Pieces[0].ID = challenge.PieceID{0x77}
	if err := st.UpdateSegment(ctx, upd); err != nil {
		t.Fatal(err)
	}
	if ref, ok, err := st.LookupPiece(ctx, n1, upd.Pieces[0].ID); err != nil || !ok || ref.Segment != seg.ID || ref.Index != 0 {
		t.Fatalf("the renamed piece on node 1: %+v %v %v", ref, ok, err)
	}
	if _, ok, err := st.LookupPiece(ctx, n1, old); err != nil || ok {
		t.Fatalf("the old id on node 1 still found: %v %v", ok, err)
	}
	if k := pebbleIndexKeys(t, st); len(k) != 2 {
		t.Fatalf("index entries after the rename: %q", k)
	}
}

// A stale index entry (its index one past its segment's pieces) is read
// as no entry: lookups skip it and another segment may claim the piece.
func TestStorePebbleStaleIndexEntry(t *testing.T) {
	ctx := context.Background()
	n1, n2 := fnet.NodeID{1}, fnet.NodeID{2}
	a := suiteSegment(1, 1, 10, n1, n2)
	st := pebbleStoreWith(t, a)
	piece := challenge.PieceID{0x99}
	if err := st.db.Set(key(pfxPiece, n1[:], piece[:]), pieceIndexValue(a.ID, len(a.Pieces)), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if ref, ok, err := st.LookupPiece(ctx, n1, piece); err != nil || ok {
		t.Fatalf("stale entry looked up: %+v %v %v", ref, ok, err)
	}
	var refs []PieceRef
	if err := st.NodePieces(ctx, n1, func(r PieceRef) error { refs = append(refs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(refs) != 1 || refs[0].ID != a.Pieces[0].ID {
		t.Fatalf("node 1's pieces with a stale entry: %+v", refs)
	}
	b := suiteSegment(2, 1, 10, n1)
	b.Pieces[0].ID = piece
	if err := st.CommitSegment(ctx, b); err != nil {
		t.Fatalf("a piece named only by a stale entry refused: %v", err)
	}
	if ref, ok, err := st.LookupPiece(ctx, n1, piece); err != nil || !ok || ref.Segment != b.ID {
		t.Fatalf("the claimed piece: %+v %v %v", ref, ok, err)
	}
}

// Version 1 and 2 segment records still load (unpriced).
func TestDecodeLegacySegmentVersions(t *testing.T) {
	s := suiteSegment(3, 1, 10, fnet.NodeID{1}, fnet.NodeID{2})
	for _, v := range []byte{1, 2} {
		got, err := decodeSegment(encodeLegacySegment(s, v))
		if err != nil {
			t.Fatalf("version %d record: %v", v, err)
		}
		if !got.unpriced || got.ID != s.ID || len(got.Pieces) != 2 || got.Pieces[1].Node != s.Pieces[1].Node {
			t.Fatalf("version %d record decoded as %+v", v, got)
		}
	}
	if _, err := decodeSegment(encodeLegacySegment(s, 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("version 0 record: %v", err)
	}
}

// The observer keeps the last roundHistory rounds; Rounds lists them
// newest first.
func TestObserverRoundHistory(t *testing.T) {
	o := newObserver()
	p := &Peer{core: &core{obs: o}}
	for i := 0; i < roundHistory+3; i++ {
		o.round(RoundResult{Nodes: i}, time.Duration(i))
	}
	rs := p.Rounds()
	if len(rs) != roundHistory {
		t.Fatalf("rounds kept: %d, want %d", len(rs), roundHistory)
	}
	for i, r := range rs {
		if want := roundHistory + 2 - i; r.Nodes != want || r.Duration != time.Duration(want) {
			t.Fatalf("round %d: %+v, want the round %d", i, r, want)
		}
	}
}

// ParseSegmentID takes exactly 32 hex digits.
func TestParseSegmentID(t *testing.T) {
	id := SegmentID{1, 2, 0xfe}
	if got, err := ParseSegmentID(id.String()); err != nil || got != id {
		t.Fatalf("ParseSegmentID(%s) = %s, %v", id, got, err)
	}
	for _, bad := range []string{"", "zz" + id.String()[2:], id.String()[2:], id.String() + "00"} {
		if _, err := ParseSegmentID(bad); err == nil {
			t.Errorf("ParseSegmentID(%q) accepted", bad)
		}
	}
}
