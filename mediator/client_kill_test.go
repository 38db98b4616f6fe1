package mediator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/quic-go/quic-go"
)

// fakePieceNode is a storage node over QUIC that keeps pieces in memory
// and answers gets and puts the way the mode of each piece id says:
// honest, flipped bytes, a wrong length announced, refused.
type fakePieceNode struct {
	tr     *fnet.Transport
	mu     sync.Mutex
	pieces map[challenge.PieceID][]byte
	modes  map[challenge.PieceID]byte
}

const (
	pieceHonest byte = iota
	pieceFlipped
	pieceWrongLength
	pieceRefused
)

func startPieceNode(t *testing.T) *fakePieceNode {
	t.Helper()
	id, _ := fnet.GenerateIdentity()
	tr, err := fnet.Listen(id, "127.0.0.1:0", fnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	n := &fakePieceNode{tr: tr, pieces: map[challenge.PieceID][]byte{}, modes: map[challenge.PieceID]byte{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Serve(ctx, fnet.HandlerFunc(n.handle)); close(done) }()
	t.Cleanup(func() { cancel(); tr.Close(); <-done })
	return n
}

func (n *fakePieceNode) handle(ctx context.Context, _ fnet.NodeID, s *quic.Stream) {
	m, err := fnet.ReadMessageOf(s, fnet.OneOf(fnet.TypePutRequest, fnet.TypeGetRequest))
	if err != nil {
		return
	}
	switch req := m.(type) {
	case *fnet.PutRequest:
		body, err := io.ReadAll(io.LimitReader(s, req.Ticket.Size+1))
		if err != nil || int64(len(body)) != req.Ticket.Size {
			s.CancelWrite(fnet.StreamCancelled)
			return
		}
		n.mu.Lock()
		mode := n.modes[req.Piece]
		n.mu.Unlock()
		if mode == pieceRefused {
			fnet.WriteMessage(s, &fnet.ErrorReply{Code: fnet.CodeFull, Message: "no room"})
			return
		}
		n.mu.Lock()
		n.pieces[req.Piece] = body
		n.mu.Unlock()
		fnet.WriteMessage(s, &fnet.PutReply{})
		s.Close()
	case *fnet.GetRequest:
		n.mu.Lock()
		data, ok := n.pieces[req.Piece]
		mode := n.modes[req.Piece]
		n.mu.Unlock()
		if !ok {
			fnet.WriteMessage(s, &fnet.ErrorReply{Code: fnet.CodeNotFound, Message: "no such piece"})
			return
		}
		data = bytes.Clone(data)
		length := uint64(len(data))
		switch mode {
		case pieceFlipped:
			data[len(data)/2] ^= 1
		case pieceWrongLength:
			length++
			data = append(data, 0)
		}
		fnet.WriteMessage(s, &fnet.GetReply{Length: length})
		s.Write(data)
		s.Close()
	}
}

// target names data's piece on the node, held (but for refused) and
// answered in that mode, under a get ticket.
func (n *fakePieceNode) target(t *testing.T, mode byte, data []byte) fnet.Target {
	t.Helper()
	id, err := challenge.ComputeID(data)
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	if mode != pieceRefused {
		n.pieces[id] = data
	}
	n.modes[id] = mode
	n.mu.Unlock()
	return fnet.Target{Address: n.tr.Address().String(),
		Ticket: fnet.SignedTicket{Ticket: fnet.Ticket{Node: n.tr.Address().ID, Piece: id, Op: fnet.OpGet, Size: int64(len(data))}}}
}

// TestClientPieces: the client's piece transfers against a node: an
// honest get returns the bytes, a get into a buffer of the wrong size is
// refused before asking (no strike), flipped bytes, a wrong length and a
// missing piece fail with a strike each, and ByStrikes puts the node
// with strikes last; a put stores the bytes, an upload reports each
// piece's outcome.
func TestClientPieces(t *testing.T) {
	good, bad := startPieceNode(t), startPieceNode(t)
	id, _ := fnet.GenerateIdentity()
	mid, _ := fnet.GenerateIdentity()
	c, err := NewClient(id, fnet.Address{ID: mid.ID(), HostPort: "127.0.0.1:9"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := bytes.Repeat([]byte("fincrypt piece "), 700)

	honest := good.target(t, pieceHonest, data)
	got, err := c.GetPiece(ctx, honest)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("honest get: %d bytes, %v", len(got), err)
	}
	dst := make([]byte, len(data))
	if err := c.GetPieceInto(ctx, honest, dst); err != nil || !bytes.Equal(dst, data) {
		t.Fatalf("honest get into a buffer: %v", err)
	}
	if err := c.GetPieceInto(ctx, honest, make([]byte, len(data)-1)); err == nil {
		t.Fatal("a buffer one byte short accepted")
	}
	if s := c.Strikes(good.tr.Address().ID); s != 0 {
		t.Fatalf("%d strikes against an honest node", s)
	}

	badID := bad.tr.Address().ID
	for i, tc := range []struct {
		name   string
		target fnet.Target
		want   error
	}{
		{"flipped bytes", bad.target(t, pieceFlipped, data), fnet.ErrMismatch},
		{"wrong length", bad.target(t, pieceWrongLength, data[1:]), fnet.ErrReplyLength},
		{"missing piece", bad.target(t, pieceRefused, data[2:]), fnet.ErrNotFound},
	} {
		if _, err := c.GetPiece(ctx, tc.target); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if s := c.Strikes(badID); s != i+1 {
			t.Errorf("%s: %d strikes, want %d", tc.name, s, i+1)
		}
	}
	if err := c.GetPieceInto(ctx, bad.target(t, pieceFlipped, data[3:]), make([]byte, len(data)-3)); !errors.Is(err, fnet.ErrMismatch) {
		t.Errorf("flipped bytes into a buffer: %v", err)
	}
	if s := c.Strikes(badID); s != 4 {
		t.Errorf("%d strikes, want 4", s)
	}
	targets := []fnet.Target{bad.target(t, pieceHonest, data[4:]), honest, good.target(t, pieceHonest, data[5:])}
	order := []int{0, 1, 2}
	c.ByStrikes(order, func(i int) fnet.Target { return targets[i] })
	if order[0] != 1 || order[1] != 2 || order[2] != 0 {
		t.Errorf("by strikes: %v, want [1 2 0]", order)
	}

	fresh := bytes.Repeat([]byte("another piece "), 500)
	put := good.target(t, pieceHonest, fresh)
	good.mu.Lock()
	delete(good.pieces, put.Ticket.Piece)
	good.mu.Unlock()
	refused := bad.target(t, pieceRefused, fresh)
	put.Ticket.Op, refused.Ticket.Op = fnet.OpPut, fnet.OpPut
	stored, errs := c.Upload(ctx, &fnet.PlacementReply{Targets: []fnet.Target{put, refused}}, [][]byte{fresh, fresh})
	if len(stored) != 1 || stored[0].Index != 0 || stored[0].Piece != put.Ticket.Piece || stored[0].Size != uint64(len(fresh)) ||
		errs[0] != nil || !errors.Is(errs[1], fnet.ErrFull) {
		t.Fatalf("upload: stored %+v, errors %v", stored, errs)
	}
	good.mu.Lock()
	kept := good.pieces[put.Ticket.Piece]
	good.mu.Unlock()
	if !bytes.Equal(kept, fresh) {
		t.Fatal("the node does not hold the uploaded bytes")
	}
}

// TestClientMediatorCalls: the client's calls to a running mediator: an
// account registers once (created, then not), a refusal is an answer,
// lookups of what does not exist fail with the mediator's reason, and
// once the mediator is gone calls fail and it is seen not answering.
func TestClientMediatorCalls(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(log, nil, Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	stopped := false
	stopPeer := func() {
		if !stopped {
			stopped = true
			stop()
			<-done
			p.Close()
		}
	}
	defer stopPeer()

	id, _ := fnet.GenerateIdentity()
	c, err := NewClient(id, p.Address(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ok, _, _ := c.MediatorAnswers(); ok {
		t.Fatal("answering before any call")
	}
	if created, err := c.RegisterAccount(ctx); err != nil || !created {
		t.Fatalf("first registration: %v %v", created, err)
	}
	if created, err := c.RegisterAccount(ctx); err != nil || created {
		t.Fatalf("second registration: %v %v", created, err)
	}
	ids := []challenge.PieceID{{1}, {2}, {3}, {4}, {5}}
	if _, err := c.Place(ctx, DefaultScheme, 4096, ids); !errors.Is(err, fnet.ErrBusy) {
		t.Fatalf("placement with no node: %v", err)
	}
	if ok, answered, call := c.MediatorAnswers(); !ok || answered.IsZero() || !answered.Equal(call) {
		t.Fatalf("a refusal is an answer: %v %v %v", ok, answered, call)
	}
	seg := fnet.SegmentID{7}
	if _, err := c.Segment(ctx, seg); !errors.Is(err, fnet.ErrNotFound) {
		t.Fatalf("segment never stored: %v", err)
	}
	if err := c.Release(ctx, seg); !errors.Is(err, fnet.ErrNotFound) {
		t.Fatalf("release of a segment never stored: %v", err)
	}
	if err := c.Commit(ctx, seg, []fnet.StoredPiece{{Index: 0}}); !errors.Is(err, fnet.ErrNotFound) {
		t.Fatalf("commit without a placement: %v", err)
	}
	many := make([]fnet.SegmentID, fnet.MaxHealthBatch+3)
	for i := range many {
		many[i] = fnet.SegmentID{byte(i), byte(i >> 8), 1}
	}
	h, err := c.Health(ctx, many)
	if err != nil || len(h) != len(many) {
		t.Fatalf("health of %d segments in two calls: %d answers, %v", len(many), len(h), err)
	}

	stopPeer()
	short, cancelShort := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelShort()
	if _, err := c.RegisterAccount(short); err == nil {
		t.Fatal("a call to a stopped mediator succeeded")
	}
	if ok, answered, call := c.MediatorAnswers(); ok || !call.After(answered) {
		t.Fatalf("after the mediator stopped: answering %v, last answer %v, last call %v", ok, answered, call)
	}
}

// TestClientRetriesOnceOnANewConnection: a call that fails below the
// protocol (the node resets the stream) is tried once more, on a fresh
// connection, and no more: the node sees two requests.
func TestClientRetriesOnceOnANewConnection(t *testing.T) {
	id, _ := fnet.GenerateIdentity()
	tr, err := fnet.Listen(id, "127.0.0.1:0", fnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	streams := 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan struct{})
	go func() {
		tr.Serve(ctx, fnet.HandlerFunc(func(_ context.Context, _ fnet.NodeID, s *quic.Stream) {
			mu.Lock()
			streams++
			mu.Unlock()
			s.CancelRead(fnet.StreamCancelled)
			s.CancelWrite(fnet.StreamCancelled)
		}))
		close(done)
	}()
	defer func() { cancel(); tr.Close(); <-done }()
	cid, _ := fnet.GenerateIdentity()
	c, err := NewClient(cid, fnet.Address{ID: id.ID(), HostPort: "127.0.0.1:9"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	target := fnet.Target{Address: tr.Address().String(),
		Ticket: fnet.SignedTicket{Ticket: fnet.Ticket{Node: id.ID(), Piece: challenge.PieceID{1}, Op: fnet.OpGet, Size: 100}}}
	if _, err := c.GetPiece(ctx, target); err == nil {
		t.Fatal("a get from a node that resets every stream succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if streams != 2 {
		t.Fatalf("%d requests, want 2", streams)
	}
}
