package mediator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/internal/powerloss"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestPowerLossStoreEveryWrite cuts the power after seeded mixes of every
// kind of write the mediator acknowledges besides those of
// TestPowerLossStore: node registrations, account registrations, pending
// placements and their removal, repairs (a contract's piece moved to
// another node), and releases. After the "reboot" each acknowledged write
// is there, and a released contract or a removed placement does not come
// back (a released segment back in the store would be charged and
// challenged again).
func TestPowerLossStoreEveryWrite(t *testing.T) {
	powerloss.Seeds(t, powerloss.DefaultRuns, func(seed uint64) { powerLossEveryWrite(t, seed) })
}

func powerLossEveryWrite(t *testing.T, seed uint64) {
	ctx := context.Background()
	disk := powerloss.NewDisk(seed, 11)
	rng := disk.Rand
	st := openCutStore(t, disk.MemFS)
	randID := func() (b [32]byte) { powerloss.Fill(rng, b[:]); return b }
	segID := func() (id SegmentID) {
		r := randID()
		copy(id[:], r[:16])
		return id
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	nodes := map[fnet.NodeID]uint64{}     // node -> price
	accounts := map[fnet.AccountID]bool{} // registered
	segs := map[SegmentID]fnet.NodeID{}   // committed -> node of piece 0
	released := map[SegmentID]bool{}      // released
	pending := map[SegmentID]bool{}       // placed, not committed
	pendingGone := map[SegmentID]bool{}   // placement removed
	var segOrder, pendOrder []SegmentID
	steps := 5 + rng.IntN(30)
	crashAt := rng.IntN(steps + 1)
	for step := 0; step < crashAt; step++ {
		switch rng.IntN(6) {
		case 0: // a node registers (or re-registers at a new price)
			id := fnet.NodeID(randID())
			price := uint64(1 + rng.IntN(10000))
			if err := st.PutNode(ctx, &Node{ID: id, Address: "x@127.0.0.1:1", Price: price, LastSeen: base}); err != nil {
				t.Fatal(err)
			}
			nodes[id] = price
		case 1: // an account registers
			id := fnet.AccountID(randID())
			if err := st.CreateAccount(ctx, &Account{ID: id, Created: base}); err != nil {
				t.Fatal(err)
			}
			accounts[id] = true
		case 2: // a placement answered, later committed or dropped
			id := segID()
			p := &Pending{Segment: id, Account: fnet.AccountID(randID()), Scheme: erasure.Scheme{K: 2, N: 4}, PieceSize: 4096, Expires: base.Add(time.Hour)}
			for range 4 {
				p.Pieces = append(p.Pieces, randID())
				p.Nodes = append(p.Nodes, fnet.NodeID(randID()))
			}
			if err := st.PutPending(ctx, p); err != nil {
				t.Fatal(err)
			}
			pending[id] = true
			pendOrder = append(pendOrder, id)
		case 3: // a placement dropped (expired or committed)
			if len(pendOrder) == 0 {
				continue
			}
			id := pendOrder[0]
			pendOrder = pendOrder[1:]
			if err := st.DeletePending(ctx, id); err != nil {
				t.Fatal(err)
			}
			delete(pending, id)
			pendingGone[id] = true
		case 4: // a contract committed, or repaired: piece 0 moved
			if len(segOrder) > 0 && rng.IntN(2) == 0 {
				id := segOrder[rng.IntN(len(segOrder))]
				seg, err := st.GetSegment(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				seg.Pieces[0].Node = fnet.NodeID(randID())
				seg.Pieces[0].State = PieceHealthy
				seg.Repaired++
				if err := st.UpdateSegment(ctx, seg); err != nil {
					t.Fatal(err)
				}
				segs[id] = seg.Pieces[0].Node
				continue
			}
			id := segID()
			seg := &Segment{ID: id, Account: fnet.AccountID(randID()), Scheme: erasure.Scheme{K: 2, N: 4}, PieceSize: 4096, Created: base}
			for i := range 4 {
				seg.Pieces = append(seg.Pieces, Piece{Index: i, ID: randID(), Node: fnet.NodeID(randID()), State: PieceHealthy})
			}
			if err := st.CommitSegment(ctx, seg); err != nil {
				t.Fatal(err)
			}
			segs[id] = seg.Pieces[0].Node
			segOrder = append(segOrder, id)
		case 5: // a contract released
			if len(segOrder) == 0 {
				continue
			}
			i := rng.IntN(len(segOrder))
			id := segOrder[i]
			segOrder = append(segOrder[:i], segOrder[i+1:]...)
			if _, err := st.DeleteSegment(ctx, id); err != nil {
				t.Fatal(err)
			}
			delete(segs, id)
			released[id] = true
		}
	}
	st = cutPower(t, seed, disk, st)
	defer st.Close()
	for id, price := range nodes {
		n, err := st.GetNode(ctx, id)
		if err != nil || n.Price != price {
			t.Fatalf("seed %d: registered node %s lost or changed after the power cut: %+v %v", seed, id, n, err)
		}
	}
	for id := range accounts {
		if _, err := st.GetAccount(ctx, id); err != nil {
			t.Fatalf("seed %d: registered account lost after the power cut: %v", seed, err)
		}
	}
	for id := range pending {
		if _, err := st.GetPending(ctx, id); err != nil {
			t.Fatalf("seed %d: placement %s lost after the power cut: %v", seed, id, err)
		}
	}
	for id := range pendingGone {
		if _, err := st.GetPending(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("seed %d: removed placement %s came back after the power cut: %v", seed, id, err)
		}
	}
	for id, node := range segs {
		seg, err := st.GetSegment(ctx, id)
		if err != nil {
			t.Fatalf("seed %d: committed segment %s lost after the power cut: %v", seed, id, err)
		}
		if seg.Pieces[0].Node != node {
			t.Fatalf("seed %d: segment %s: the repair of piece 0 lost after the power cut", seed, id)
		}
	}
	for id := range released {
		if _, err := st.GetSegment(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("seed %d: released segment %s came back after the power cut: %v", seed, id, err)
		}
	}
}
