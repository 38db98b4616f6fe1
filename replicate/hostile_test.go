package replicate

import (
	"bytes"
	"context"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/mediator"
	fnet "github.com/fincrypt/fincrypt/net"
)

// maxClientHeap bounds the client's Go heap in use, both sampled while it
// reads from a node that announces 1 TiB and streams junk and after a GC
// once the read is done (the nodes of this test, in the same process,
// included). A client that sized its buffers or hash trees from the
// announced length instead of the ticket's would pass it at once.
const maxClientHeap = 256 << 20

// serveOn runs h on a fresh QUIC listener on loopback.
func serveOn(t testing.TB, h fnet.HandlerFunc) *fnet.Transport {
	t.Helper()
	id, err := fnet.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := fnet.Listen(id, "127.0.0.1:0", fnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Serve(ctx, h); close(done) }()
	t.Cleanup(func() { cancel(); tr.Close(); <-done })
	return tr
}

// A node answering a read with a 1 TiB length and streaming junk, and one
// answering the right length with junk bytes: the client fails each piece
// at once (from the announced length; from the hash), reads the segment
// from the other nodes, its memory stays flat, and the next read asks the
// honest nodes first (the failures count against the liars).
func TestFetchFromLyingNodes(t *testing.T) {
	const k, n = 2, 4
	data := make([]byte, 200<<10)
	rand.NewChaCha8([32]byte{9}).Read(data)
	coder, err := erasure.New(erasure.Scheme{K: k, N: n})
	if err != nil {
		t.Fatal(err)
	}
	pieces, err := coder.Encode(data)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]challenge.PieceID, n)
	for i, p := range pieces {
		if ids[i], err = challenge.ComputeID(p); err != nil {
			t.Fatal(err)
		}
	}
	var hugeAsked, junkAsked, honestAsked atomic.Int64
	junk := bytes.Repeat([]byte{0xa5}, 64<<10)
	// Piece 0's node announces 1 TiB and streams junk for as long as it may.
	huge := serveOn(t, func(ctx context.Context, _ fnet.NodeID, s *quic.Stream) {
		if _, err := fnet.ReadMessage(s); err != nil {
			return
		}
		hugeAsked.Add(1)
		fnet.WriteMessage(s, &fnet.GetReply{Length: 1 << 40})
		for range 16 << 10 { // at most 1 GiB
			if _, err := s.Write(junk); err != nil {
				return
			}
		}
	})
	// Piece 1's node announces the right length and sends junk.
	liar := serveOn(t, func(ctx context.Context, _ fnet.NodeID, s *quic.Stream) {
		if _, err := fnet.ReadMessage(s); err != nil {
			return
		}
		junkAsked.Add(1)
		fnet.WriteMessage(s, &fnet.GetReply{Length: uint64(len(pieces[1]))})
		s.Write(bytes.Repeat([]byte{0x5a}, len(pieces[1])))
	})
	// Pieces 2 and 3: honest.
	honest := serveOn(t, func(ctx context.Context, _ fnet.NodeID, s *quic.Stream) {
		m, err := fnet.ReadMessage(s)
		if err != nil {
			return
		}
		req := m.(*fnet.GetRequest)
		for i, id := range ids {
			if id == req.Piece {
				honestAsked.Add(1)
				fnet.WriteMessage(s, &fnet.GetReply{Length: uint64(len(pieces[i]))})
				s.Write(pieces[i])
				return
			}
		}
		fnet.WriteMessage(s, &fnet.ErrorReply{Code: fnet.CodeNotFound})
	})
	nodes := []*fnet.Transport{huge, liar, honest, honest}

	clientID, _ := fnet.GenerateIdentity()
	var med *fnet.Transport
	medSet := make(chan struct{}) // med is assigned (the race detector sees no order through the network)
	med = serveOn(t, func(ctx context.Context, _ fnet.NodeID, s *quic.Stream) {
		if _, err := fnet.ReadAnyMessage(s); err != nil {
			return
		}
		<-medSet
		rep := &fnet.SegmentReply{K: k, N: n, PieceSize: uint64(len(pieces[0]))}
		for i, tr := range nodes {
			rep.Pieces = append(rep.Pieces, fnet.SegmentPiece{Piece: ids[i], Healthy: true, Target: fnet.Target{
				Address: tr.Address().String(),
				Ticket: fnet.SignTicket(med.Identity(), fnet.Ticket{Node: tr.Identity().ID(), Piece: ids[i], Op: fnet.OpGet,
					Account: fnet.AccountID(clientID.ID()), Size: int64(len(pieces[i])), Expires: time.Now().Add(time.Hour)}),
			}})
		}
		fnet.WriteAnyMessage(s, rep)
	})
	close(medSet)
	client, err := mediator.NewClient(clientID, med.Address(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := int64(ms.HeapInuse)
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak.Store(max(peak.Load(), int64(ms.HeapInuse)))
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	// Neither a piece timeout nor a hedge can rescue the read here: only
	// failing the lying nodes' pieces at once lets it finish in time.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got, err := FetchSegment(ctx, client, fnet.SegmentID{1}, len(data), 10*time.Minute, 10*time.Minute)
	close(stop)
	<-sampled
	// Memory first: a client that read what a node announces may still
	// end up with the right bytes.
	growth := peak.Load() - base
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("heap in use %d MB before, peak %d MB, %d MB after a GC", base>>20, peak.Load()>>20, ms.HeapInuse>>20)
	if peak.Load() > maxClientHeap || ms.HeapInuse > maxClientHeap {
		t.Fatalf("heap in use %d MB at its peak, %d MB after the read: bound %d MB", peak.Load()>>20, ms.HeapInuse>>20, maxClientHeap>>20)
	}
	if growth > 64<<20 {
		t.Fatalf("heap grew by %d MB reading from a node that announced 1 TiB", growth>>20)
	}
	if err != nil {
		t.Fatalf("read with two lying nodes: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("read returned other bytes")
	}
	if hugeAsked.Load() != 1 || junkAsked.Load() != 1 {
		t.Fatalf("lying nodes asked %d and %d times, want once each (no retry of a lie)", hugeAsked.Load(), junkAsked.Load())
	}
	for i, tr := range nodes[:2] {
		if s := client.Strikes(tr.Identity().ID()); s < 1 {
			t.Fatalf("lying node %d has %d strikes", i, s)
		}
	}
	if s := client.Strikes(honest.Identity().ID()); s != 0 {
		t.Fatalf("honest node has %d strikes", s)
	}
	// The next read asks the honest nodes first.
	got, err = FetchSegment(ctx, client, fnet.SegmentID{1}, len(data), 10*time.Minute, 10*time.Minute)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("second read: %v", err)
	}
	if hugeAsked.Load() != 1 || junkAsked.Load() != 1 {
		t.Fatalf("the second read asked the lying nodes again (%d, %d)", hugeAsked.Load(), junkAsked.Load())
	}
}
