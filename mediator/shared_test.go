package mediator

import (
	"context"
	"errors"
	"testing"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
)

// zeroPieces is a segment whose N pieces are identical (all zero bytes,
// parity included): every piece has the same id.
func zeroPieces(t *testing.T, s erasure.Scheme, size int) ([][]byte, []challenge.PieceID) {
	t.Helper()
	coder, _ := erasure.New(s)
	pieces, err := coder.Encode(make([]byte, size))
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]challenge.PieceID, len(pieces))
	for i, p := range pieces {
		ids[i], _ = challenge.ComputeID(p)
		if ids[i] != ids[0] {
			t.Fatal("zero segment with distinct pieces")
		}
	}
	return pieces, ids
}

// put uploads a placement's pieces; it returns the stored-piece list.
func (w *world) put(pl *fnet.PlacementReply, pieces [][]byte, ids []challenge.PieceID) []fnet.StoredPiece {
	w.t.Helper()
	var stored []fnet.StoredPiece
	for i, tg := range pl.Targets {
		addr, _ := fnet.ParseAddress(tg.Address)
		if err := w.mem.Put(context.Background(), addr, tg.Ticket, pieces[i]); err != nil {
			w.t.Fatal(err)
		}
		stored = append(stored, fnet.StoredPiece{Index: uint8(i), Node: tg.Ticket.Node, Piece: ids[i], Size: uint64(len(pieces[i]))})
	}
	return stored
}

// TestNoNodeHoldsOnePieceIDForTwoSegments: segments with identical pieces
// go to disjoint nodes, the placement is refused when no such nodes are
// left, and releasing one leaves the other's copies alone.
func TestNoNodeHoldsOnePieceIDForTwoSegments(t *testing.T) {
	w := newWorld(t, 10)
	ctx := context.Background()
	acct := w.account()
	pieces, ids := zeroPieces(t, w.c.cfg.Scheme, 400)
	req := &fnet.PlacementRequest{PieceSize: uint64(len(pieces[0])), Pieces: ids}

	var segs []SegmentID
	holders := map[fnet.NodeID]SegmentID{}
	for k := 0; k < 2; k++ {
		pl, err := w.c.Place(ctx, acct, req)
		if err != nil {
			t.Fatalf("placement %d: %v", k, err)
		}
		for _, tg := range pl.Targets {
			if s, ok := holders[tg.Ticket.Node]; ok {
				t.Fatalf("placement %d puts the piece on a node that holds it for %s", k, s)
			}
			holders[tg.Ticket.Node] = SegmentID(pl.Segment)
		}
		stored := w.put(pl, pieces, ids)
		if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: stored}); err != nil {
			t.Fatal(err)
		}
		segs = append(segs, SegmentID(pl.Segment))
	}
	// Every node holds the piece now.
	if _, err := w.c.Place(ctx, acct, req); !errors.Is(err, ErrNotEnoughNodes) {
		t.Fatalf("third placement: %v", err)
	}
	for _, s := range segs {
		for _, p := range w.segment(s).Pieces {
			ref, ok, err := w.store.LookupPiece(ctx, p.Node, p.ID)
			if err != nil || !ok || ref.Segment != s {
				t.Fatalf("index of %s on %s: %+v %v %v", s, p.Node, ref, ok, err)
			}
		}
	}
	if err := w.c.Release(ctx, acct, segs[0]); err != nil {
		t.Fatal(err)
	}
	w.c.bg.Wait()
	for node, s := range holders {
		_, has := w.mem.nodes[node].pieces[ids[0]]
		if has != (s == segs[1]) {
			t.Fatalf("node of segment %s holds the piece: %v", s, has)
		}
	}
	if r, err := w.c.Round(ctx); err != nil || r.Failed != 0 || r.Passed != 5 {
		t.Fatalf("round after the release: %+v %v", r, err)
	}
	w.checkTotals()
}

// TestReleaseKeepsAPieceAnotherPlacementHolds: two placements of the same
// bytes overlap when nothing else is free (a client retrying). While the
// first is contracted the second cannot commit; the first's release keeps
// the copies the second placement holds, and the second then commits.
func TestReleaseKeepsAPieceAnotherPlacementHolds(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct := w.account()
	pieces, ids := zeroPieces(t, w.c.cfg.Scheme, 400)
	req := &fnet.PlacementRequest{PieceSize: uint64(len(pieces[0])), Pieces: ids}
	a, err := w.c.Place(ctx, acct, req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.c.Place(ctx, acct, req) // a retry: same nodes, all that fit
	if err != nil {
		t.Fatal(err)
	}
	storedA := w.put(a, pieces, ids)
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: a.Segment, Pieces: storedA}); err != nil {
		t.Fatal(err)
	}
	// While a is contracted, b cannot commit the same piece ids there.
	storedB := w.put(b, pieces, ids)
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: b.Segment, Pieces: storedB}); !errors.Is(err, ErrBadCommit) {
		t.Fatalf("commit of a placement whose pieces another contract holds: %v", err)
	}
	if err := w.c.Release(ctx, acct, SegmentID(a.Segment)); err != nil {
		t.Fatal(err)
	}
	w.c.bg.Wait()
	for _, tg := range b.Targets {
		if _, ok := w.mem.nodes[tg.Ticket.Node].pieces[ids[0]]; !ok {
			t.Fatal("release deleted a piece that a pending placement holds")
		}
	}
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: b.Segment, Pieces: storedB}); err != nil {
		t.Fatalf("commit after the other contract was released: %v", err)
	}
	if h := w.segment(SegmentID(b.Segment)).Healthy(); h != 5 {
		t.Fatalf("%d healthy", h)
	}
	w.checkTotals()
}
