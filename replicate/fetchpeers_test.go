package replicate

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
)

// segmentData is n random bytes.
func segmentData(seed byte, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// fetchOf runs FetchSegment for seg with a 60 s bound.
func fetchOf(f *fakeNet, seg fnet.SegmentID, size int, pieceTimeout, hedge time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return FetchSegment(ctx, f.client, seg, size, pieceTimeout, hedge)
}

// TestFetchSegmentAsksKNodes: with every node honest and quick, a fetch
// asks the K nodes holding the data pieces and no other (no backup
// without a failure or a hedge), and returns the first size bytes: all
// K pieces' bytes for a size of 0 or beyond them.
func TestFetchSegmentAsksKNodes(t *testing.T) {
	f := newFakeNet(t, 4, nil)
	data := segmentData(1, 64<<10-1000)
	seg := fnet.SegmentID{1}
	pieces := f.addSegment(seg, 2, 4, data, nil)
	all := 2 * len(pieces[0])
	for _, c := range []struct{ size, want int }{{len(data), len(data)}, {all - 1, all - 1}, {1000, 1000}, {0, all}, {all + 1, all}} {
		got, err := fetchOf(f, seg, c.size, time.Minute, time.Minute)
		if err != nil {
			t.Fatalf("size %d: %v", c.size, err)
		}
		if n := min(c.want, len(data)); len(got) != c.want || !bytes.Equal(got[:n], data[:n]) {
			t.Fatalf("size %d: %d bytes back, want %d of the segment", c.size, len(got), c.want)
		}
	}
	if g := f.gets(); g[0] != 5 || g[1] != 5 || g[2] != 0 || g[3] != 0 {
		t.Fatalf("gets per node %v over 5 fetches from honest nodes, want [5 5 0 0]: only the data pieces' nodes asked", g)
	}
}

// TestFetchSegmentSurvivesLyingPeers: the nodes of both data pieces lie
// (one refuses, one sends junk of the right length), a parity node
// announces the piece's length and sends half of it, another announces a
// byte more than the ticket: the fetch backs each failure up at once with
// the next node (the hedge is a minute), rebuilds the segment from the
// honest parity pieces, and asks no liar twice (a lie is not retried; the
// short read is, once, on a fresh connection).
func TestFetchSegmentSurvivesLyingPeers(t *testing.T) {
	f := newFakeNet(t, 6, nil)
	data := segmentData(2, 48<<10)
	seg := fnet.SegmentID{2}
	f.addSegment(seg, 2, 6, data, nil)
	f.peers[0].set(peerRefuse)
	f.peers[1].set(peerJunk)
	f.peers[2].set(peerShort)
	f.peers[3].set(peerLong)
	got, err := fetchOf(f, seg, len(data), time.Minute, time.Minute)
	if err != nil {
		t.Fatalf("fetch with four lying nodes of six: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("fetch returned other bytes than the segment's")
	}
	g := f.gets()
	if g[0] != 1 || g[1] != 1 || g[2] < 1 || g[2] > 2 || g[3] != 1 || g[4] != 1 || g[5] != 1 {
		t.Fatalf("gets per node %v, want each liar asked once (the short one at most twice) and both honest nodes once", g)
	}
	for i := range 4 {
		if s := f.client.Strikes(f.peers[i].tr.Identity().ID()); s < 1 {
			t.Fatalf("lying node %d has no strike", i)
		}
	}
}

// TestFetchSegmentTooFewReadable: with only one honest node of four for a
// 2-of-4 segment, the fetch asks every node, fails naming how many pieces
// it could read and why the others failed, and ends.
func TestFetchSegmentTooFewReadable(t *testing.T) {
	f := newFakeNet(t, 4, nil)
	data := segmentData(3, 40<<10)
	seg := fnet.SegmentID{3}
	f.addSegment(seg, 2, 4, data, nil)
	f.peers[0].set(peerJunk)
	f.peers[1].set(peerRefuse)
	f.peers[3].set(peerLong)
	_, err := fetchOf(f, seg, len(data), time.Minute, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "1 of 2 pieces readable") || !errors.Is(err, fnet.ErrMismatch) || !errors.Is(err, fnet.ErrNotFound) {
		t.Fatalf("fetch with one honest node: %v, want 1 of 2 pieces readable, with the mismatch and the refusal", err)
	}
	if g := f.gets(); g[0] != 1 || g[1] != 1 || g[2] != 1 || g[3] != 1 {
		t.Fatalf("gets per node %v, want every node asked once", g)
	}
	// The one piece read comes last, once no node is left to ask.
	g := newFakeNet(t, 3, nil)
	g.addSegment(seg, 2, 3, data, nil)
	g.peers[0].set(peerRefuse)
	g.peers[1].set(peerRefuse)
	g.peers[2].set(peerSlow)
	if _, err := fetchOf(g, seg, len(data), time.Minute, time.Minute); err == nil || !strings.Contains(err.Error(), "1 of 2 pieces readable") {
		t.Fatalf("fetch whose one readable piece comes last: %v", err)
	}
}

// TestFetchSegmentHealthyPiecesOnly: the fetch asks only the nodes of
// pieces the mediator lists healthy: with exactly K of them it reads the
// segment, with fewer it fails at once (erasure.ErrTooFew) and asks none;
// a reply that lists another number of pieces than N, pieces of unequal
// sizes or a size beyond any piece is refused before any node is asked.
func TestFetchSegmentHealthyPiecesOnly(t *testing.T) {
	f := newFakeNet(t, 4, nil)
	data := segmentData(4, 40<<10)
	unhealthy := func(idx ...int) func(*fnet.SegmentReply) {
		return func(r *fnet.SegmentReply) {
			for _, i := range idx {
				r.Pieces[i].Healthy = false
			}
		}
	}
	f.addSegment(fnet.SegmentID{4}, 2, 4, data, unhealthy(0, 2))
	got, err := fetchOf(f, fnet.SegmentID{4}, len(data), time.Minute, time.Minute)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fetch with exactly K healthy pieces: %v", err)
	}
	if g := f.gets(); g[0] != 0 || g[2] != 0 || g[1] != 1 || g[3] != 1 {
		t.Fatalf("gets per node %v, want only the healthy pieces' nodes (1 and 3) asked", g)
	}
	before := f.gets()
	bad := []struct {
		name string
		tune func(*fnet.SegmentReply)
		want error
	}{
		{"one healthy piece", unhealthy(0, 1, 2), erasure.ErrTooFew},
		{"three pieces listed of four", func(r *fnet.SegmentReply) { r.Pieces = r.Pieces[:3] }, fnet.ErrMalformed},
		{"pieces of two sizes", func(r *fnet.SegmentReply) { r.Pieces[3].Target.Ticket.Size++ }, erasure.ErrPieceSize},
		{"a first piece of no bytes", func(r *fnet.SegmentReply) { r.Pieces[0].Target.Ticket.Size = 0 }, erasure.ErrPieceSize},
		{"a piece beyond any", func(r *fnet.SegmentReply) {
			for i := range r.Pieces {
				r.Pieces[i].Target.Ticket.Size = challenge.MaxPieceSize + 1
			}
		}, challenge.ErrPieceSize},
	}
	for i, c := range bad {
		seg := fnet.SegmentID{5, byte(i)}
		f.addSegment(seg, 2, 4, data, c.tune)
		if _, err := fetchOf(f, seg, len(data), time.Minute, time.Minute); !errors.Is(err, c.want) {
			t.Fatalf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if g := f.gets(); !slices.Equal(g, before) {
		t.Fatalf("gets per node %v, then %v: a refused reply asked nodes", before, g)
	}
}

// fetchWhileHeld runs a fetch while peerHeld nodes hold their answers and
// returns its outcome, failing if it waited for them: held nodes answer
// only once the fetch has returned (or after 30 s, when the test fails).
func fetchWhileHeld(t *testing.T, f *fakeNet, seg fnet.SegmentID, size int, pieceTimeout, hedge time.Duration) ([]byte, error) {
	t.Helper()
	type out struct {
		b   []byte
		err error
	}
	done := make(chan out, 1)
	go func() {
		b, err := fetchOf(f, seg, size, pieceTimeout, hedge)
		done <- out{b, err}
	}()
	select {
	case o := <-done:
		f.letGo()
		return o.b, o.err
	case <-time.After(30 * time.Second):
		f.letGo()
		<-done
		t.Fatal("the fetch waited for a node that holds its answer")
		return nil, nil
	}
}

// TestFetchSegmentHedgesAroundHeldPeers: nodes that take a request and
// answer nothing (hung, or slow beyond reason) are backed up after the
// hedge, again at every hedge while the fetch lacks pieces, and the fetch
// returns as soon as it has K pieces, without waiting for the nodes it
// no longer needs (the piece timeout is ten minutes).
func TestFetchSegmentHedgesAroundHeldPeers(t *testing.T) {
	data := segmentData(6, 40<<10)
	t.Run("one held of three", func(t *testing.T) {
		// The hedge asks node 2; nothing is left to ask after it, and the
		// fetch does not wait for node 0.
		f := newFakeNet(t, 3, nil)
		f.addSegment(fnet.SegmentID{6}, 2, 3, data, nil)
		f.peers[0].set(peerHeld)
		got, err := fetchWhileHeld(t, f, fnet.SegmentID{6}, len(data), 10*time.Minute, 100*time.Millisecond)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch with node 0 held: %v", err)
		}
	})
	t.Run("two held of four", func(t *testing.T) {
		// Node 0 held: the first hedge asks node 2, held too; the next
		// hedge asks node 3.
		f := newFakeNet(t, 4, nil)
		f.addSegment(fnet.SegmentID{7}, 2, 4, data, nil)
		f.peers[0].set(peerHeld)
		f.peers[2].set(peerHeld)
		got, err := fetchWhileHeld(t, f, fnet.SegmentID{7}, len(data), 10*time.Minute, 100*time.Millisecond)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch with nodes 0 and 2 held: %v", err)
		}
		if g := f.gets(); g[3] != 1 {
			t.Fatalf("gets per node %v: node 3 not asked", g)
		}
	})
	t.Run("hedges past the last node", func(t *testing.T) {
		// Node 0 held, nodes 1 and 2 slow (well past the hedge): hedges
		// keep firing once every node was asked, and ask nobody more.
		f := newFakeNet(t, 3, nil)
		f.setDelay(600 * time.Millisecond)
		f.addSegment(fnet.SegmentID{8}, 2, 3, data, nil)
		f.peers[0].set(peerHeld)
		f.peers[1].set(peerSlow)
		f.peers[2].set(peerSlow)
		got, err := fetchWhileHeld(t, f, fnet.SegmentID{8}, len(data), 10*time.Minute, 50*time.Millisecond)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch with node 0 held and the others slow: %v", err)
		}
	})
	t.Run("piece timeout", func(t *testing.T) {
		// No hedge within the test: node 0's piece times out, and the
		// failure is backed up by node 2. The client's connections to
		// the three nodes are made first, so that the timeout bounds
		// gets alone: with dials under it, -race on a loaded machine
		// took the honest node 2 past the half second it was (2 runs in
		// 10: "1 of 2 pieces readable: ... piece 2: dial ...: context
		// deadline exceeded").
		f := newFakeNet(t, 3, nil)
		f.addSegment(fnet.SegmentID{9}, 2, 3, data, nil)
		f.addSegment(fnet.SegmentID{9, 1}, 2, 3, data, func(r *fnet.SegmentReply) { r.Pieces[1].Healthy = false })
		for _, seg := range []fnet.SegmentID{{9}, {9, 1}} { // nodes 0 and 1, then 0 and 2
			if got, err := fetchOf(f, seg, len(data), time.Minute, time.Minute); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("fetch from honest nodes: %v", err)
			}
		}
		before := f.gets()
		f.peers[0].set(peerHeld)
		got, err := fetchWhileHeld(t, f, fnet.SegmentID{9}, len(data), 3*time.Second, 10*time.Minute)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch with node 0 held past the piece timeout: %v", err)
		}
		if g := f.gets(); g[2]-before[2] != 1 {
			t.Fatalf("gets per node %v, before the fetch %v: node 2 not asked after node 0 timed out", g, before)
		}
	})
}
