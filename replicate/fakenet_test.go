package replicate

import (
	"bytes"
	"context"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/mediator"
	fnet "github.com/fincrypt/fincrypt/net"
)

// peerMode is how a fake storage node answers.
type peerMode int32

const (
	peerHonest peerMode = iota
	peerRefuse          // an error reply (not found), to gets and puts
	peerJunk            // a get: the ticket's length of other bytes
	peerShort           // a get: the ticket's length announced, half the bytes sent
	peerLong            // a get: one byte more announced than the ticket's
	peerHeld            // no answer until the test lets held peers go
	peerSlow            // honest, after the network's delay
	// peerLate is honest, but answers a put only once it has read the
	// whole piece and the network's delay has passed since the request
	// came: never sooner than the delay, and no later than the transfer
	// needs (peerSlow's delay comes on top of the transfer).
	peerLate
)

// fakePeer is one storage node of a fakeNet.
type fakePeer struct {
	tr         *fnet.Transport
	mode       atomic.Int32
	gets, puts atomic.Int64 // requests seen
	arrived    atomic.Int64 // requests read, counted before the mode's hold or delay
	mu         sync.Mutex
	pieces     map[challenge.PieceID][]byte
}

func (p *fakePeer) set(m peerMode) { p.mode.Store(int32(m)) }

// fakeNet is a mediator and storage nodes in this process, over QUIC on
// loopback, each node behaving as its mode says: the peers that lie, hang
// or refuse that the client's reads and uploads must survive. The mediator
// answers a segment's lookup with the pieces addSegment stored (one a
// node), a placement with one target a node, and records commits and
// releases.
type fakeNet struct {
	t      testing.TB
	med    *fnet.Transport
	peers  []*fakePeer
	client *mediator.Client
	acct   fnet.AccountID
	delay  atomic.Int64 // peerSlow's, in nanoseconds
	held   chan struct{}
	free   sync.Once

	mu      sync.Mutex
	segs    map[fnet.SegmentID]*fnet.SegmentReply
	placed  int
	places  map[fnet.SegmentID]*fnet.PlacementRequest
	commits []fnet.CommitRequest
	// onCommit, when set, runs at each commit the mediator records,
	// before it answers (under mu).
	onCommit func(fnet.SegmentID)
	// onPointer, when set, runs when the mediator stores a snapshot
	// pointer, before it answers (under mu).
	onPointer func()
	releases  []fnet.SegmentID
	pointer   *fnet.SnapshotPointer
	// lostPointerReplies is how many of the next stored pointers get no
	// reply (the stream closes, as when a connection drops).
	lostPointerReplies int
	// lostPointerGets is how many of the next pointer gets get no reply.
	lostPointerGets int
	// refuse, when set, is the error the mediator answers a release or
	// a snapshot pointer's put with.
	refuseRelease, refuseSnapshot fnet.ErrorCode
	// health is the answer to a health request for a segment it holds;
	// for another, a segment the mediator stores is known with its healthy
	// pieces, any other unknown. healthCalls counts health requests,
	// refuseHealth is the error code they are answered with (0: none) and
	// healthDelay how long each waits before it is read.
	health       map[fnet.SegmentID]fnet.SegmentHealth
	healthCalls  int
	refuseHealth fnet.ErrorCode
	healthDelay  atomic.Int64
	// balance is the answer to a balance request (nil: not found).
	balance *fnet.BalanceReply
}

// newFakeNet starts a mediator and n nodes, all honest, and a client of
// that mediator under id (a fresh identity when nil).
func newFakeNet(t testing.TB, n int, id *fnet.Identity) *fakeNet {
	t.Helper()
	if id == nil {
		var err error
		if id, err = fnet.GenerateIdentity(); err != nil {
			t.Fatal(err)
		}
	}
	f := &fakeNet{t: t, held: make(chan struct{}), segs: map[fnet.SegmentID]*fnet.SegmentReply{}, places: map[fnet.SegmentID]*fnet.PlacementRequest{},
		acct: fnet.AccountID(id.ID())}
	f.setDelay(300 * time.Millisecond)
	for range n {
		p := &fakePeer{pieces: map[challenge.PieceID][]byte{}}
		p.tr = serveOn(t, func(ctx context.Context, _ fnet.NodeID, s *quic.Stream) { f.serveNode(ctx, p, s) })
		f.peers = append(f.peers, p)
	}
	ready := make(chan struct{})
	f.med = serveOn(t, func(ctx context.Context, _ fnet.NodeID, s *quic.Stream) {
		<-ready
		f.serveMediator(s)
	})
	close(ready)
	// Cleanups run last first: held peers go before the listeners close
	// (which waits for their handlers).
	t.Cleanup(f.letGo)
	c, err := mediator.NewClient(id, f.med.Address(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f.client = c
	return f
}

// setDelay sets how long peerSlow nodes wait before they answer.
func (f *fakeNet) setDelay(d time.Duration) { f.delay.Store(int64(d)) }

// refuse makes the mediator answer releases (release) or snapshot
// pointers' puts (snapshot) with error code c (0: it accepts them).
func (f *fakeNet) refuse(release, snapshot fnet.ErrorCode) {
	f.mu.Lock()
	f.refuseRelease, f.refuseSnapshot = release, snapshot
	f.mu.Unlock()
}

// snapshotPointer is the pointer stored last (nil for none).
func (f *fakeNet) snapshotPointer() *fnet.SnapshotPointer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pointer
}

// setHealth sets the mediator's health answer for segment id.
func (f *fakeNet) setHealth(id fnet.SegmentID, h fnet.SegmentHealth) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.health == nil {
		f.health = map[fnet.SegmentID]fnet.SegmentHealth{}
	}
	f.health[id] = h
}

// refuseHealthWith makes the mediator answer health requests with error
// code c (0: it answers them).
func (f *fakeNet) refuseHealthWith(c fnet.ErrorCode) {
	f.mu.Lock()
	f.refuseHealth = c
	f.mu.Unlock()
}

// healthAsked is how many health requests the mediator saw.
func (f *fakeNet) healthAsked() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.healthCalls
}

// setBalance sets the mediator's answer to balance requests (nil: an
// error, not found).
func (f *fakeNet) setBalance(b *fnet.BalanceReply) {
	f.mu.Lock()
	f.balance = b
	f.mu.Unlock()
}

// released is the segments whose release the mediator was asked for.
func (f *fakeNet) released() []fnet.SegmentID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.releases)
}

// committed is how many commits the mediator recorded.
func (f *fakeNet) committed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.commits)
}

// committedSince is the segments of the commits recorded after the first n.
func (f *fakeNet) committedSince(n int) []fnet.SegmentID {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fnet.SegmentID
	for _, c := range f.commits[n:] {
		out = append(out, c.Segment)
	}
	return out
}

// letGo lets held peers answer (honestly).
func (f *fakeNet) letGo() { f.free.Do(func() { close(f.held) }) }

func (f *fakeNet) serveNode(ctx context.Context, p *fakePeer, s *quic.Stream) {
	m, err := fnet.ReadMessage(s)
	if err != nil {
		return
	}
	came := time.Now()
	p.arrived.Add(1)
	mode := peerMode(p.mode.Load())
	switch mode {
	case peerHeld:
		select {
		case <-f.held:
		case <-ctx.Done():
			return
		}
	case peerSlow:
		time.Sleep(time.Duration(f.delay.Load()))
	}
	switch req := m.(type) {
	case *fnet.GetRequest:
		p.gets.Add(1)
		p.mu.Lock()
		data, ok := p.pieces[req.Piece]
		p.mu.Unlock()
		if !ok || mode == peerRefuse {
			fnet.WriteMessage(s, &fnet.ErrorReply{Code: fnet.CodeNotFound})
			return
		}
		switch mode {
		case peerJunk:
			fnet.WriteMessage(s, &fnet.GetReply{Length: uint64(len(data))})
			s.Write(bytes.Repeat([]byte{0x5a}, len(data)))
		case peerShort:
			fnet.WriteMessage(s, &fnet.GetReply{Length: uint64(len(data))})
			s.Write(data[:len(data)/2])
			s.Close()
		case peerLong:
			fnet.WriteMessage(s, &fnet.GetReply{Length: uint64(len(data) + 1)})
			s.Write(append(bytes.Clone(data), 0))
		default:
			fnet.WriteMessage(s, &fnet.GetReply{Length: uint64(len(data))})
			s.Write(data)
		}
	case *fnet.PutRequest:
		p.puts.Add(1)
		if mode == peerRefuse {
			fnet.WriteMessage(s, &fnet.ErrorReply{Code: fnet.CodeNotFound})
			return
		}
		data := make([]byte, req.Ticket.Size)
		if _, err := io.ReadFull(s, data); err != nil {
			return
		}
		p.mu.Lock()
		p.pieces[req.Piece] = data
		p.mu.Unlock()
		if mode == peerLate {
			time.Sleep(time.Until(came.Add(time.Duration(f.delay.Load()))))
		}
		fnet.WriteMessage(s, &fnet.PutReply{})
	}
}

func (f *fakeNet) serveMediator(s *quic.Stream) {
	m, err := fnet.ReadAnyMessage(s)
	if err != nil {
		return
	}
	if _, ok := m.(*fnet.HealthRequest); ok {
		time.Sleep(time.Duration(f.healthDelay.Load()))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch req := m.(type) {
	case *fnet.SegmentRequest:
		rep := f.segs[req.Segment]
		if rep == nil {
			fnet.WriteAnyMessage(s, &fnet.ErrorReply{Code: fnet.CodeNotFound})
			return
		}
		fnet.WriteAnyMessage(s, rep)
	case *fnet.PlacementRequest:
		f.placed++
		rep := &fnet.PlacementReply{Segment: fnet.SegmentID{0xee, byte(f.placed)}, Expires: time.Now().Add(time.Hour)}
		for i, id := range req.Pieces {
			rep.Targets = append(rep.Targets, f.target(i, id, fnet.OpPut, int64(req.PieceSize)))
		}
		f.places[rep.Segment] = req
		fnet.WriteAnyMessage(s, rep)
	case *fnet.CommitRequest:
		f.commits = append(f.commits, *req)
		// The segment is looked up from now on, its stored pieces healthy.
		if pl := f.places[req.Segment]; pl != nil {
			rep := &fnet.SegmentReply{K: pl.K, N: pl.N, PieceSize: pl.PieceSize}
			for i, id := range pl.Pieces {
				rep.Pieces = append(rep.Pieces, fnet.SegmentPiece{Piece: id, Target: f.target(i, id, fnet.OpGet, int64(pl.PieceSize))})
			}
			for _, sp := range req.Pieces {
				rep.Pieces[sp.Index].Healthy = true
			}
			f.segs[req.Segment] = rep
		}
		if f.onCommit != nil {
			f.onCommit(req.Segment)
		}
		fnet.WriteAnyMessage(s, &fnet.CommitReply{})
	case *fnet.SnapshotPutRequest:
		if f.refuseSnapshot != 0 {
			fnet.WriteAnyMessage(s, &fnet.ErrorReply{Code: f.refuseSnapshot})
			return
		}
		if f.pointer != nil && f.pointer.Seq >= req.Pointer.Seq {
			// As the mediator: "not newer than the stored one".
			fnet.WriteAnyMessage(s, &fnet.ErrorReply{Code: fnet.CodeBadRequest})
			return
		}
		p := req.Pointer
		f.pointer = &p
		if f.onPointer != nil {
			f.onPointer()
		}
		if f.lostPointerReplies > 0 {
			f.lostPointerReplies--
			return // stored, and the stream closed without a reply
		}
		fnet.WriteAnyMessage(s, &fnet.SnapshotPutReply{})
	case *fnet.SnapshotGetRequest:
		if f.lostPointerGets > 0 {
			f.lostPointerGets--
			return // no reply
		}
		if f.pointer == nil || f.pointer.Account != req.Account {
			fnet.WriteAnyMessage(s, &fnet.ErrorReply{Code: fnet.CodeNotFound})
			return
		}
		fnet.WriteAnyMessage(s, &fnet.SnapshotGetReply{Pointer: *f.pointer})
	case *fnet.HealthRequest:
		f.healthCalls++
		if f.refuseHealth != 0 {
			fnet.WriteAnyMessage(s, &fnet.ErrorReply{Code: f.refuseHealth})
			return
		}
		rep := &fnet.HealthReply{}
		for _, id := range req.Segments {
			h, ok := f.health[id]
			if sr := f.segs[id]; !ok && sr != nil {
				h = fnet.SegmentHealth{Known: true, N: uint8(len(sr.Pieces))}
				for _, p := range sr.Pieces {
					if p.Healthy {
						h.Healthy++
					}
				}
			}
			rep.Segments = append(rep.Segments, h)
		}
		fnet.WriteAnyMessage(s, rep)
	case *fnet.AccountRequest:
		fnet.WriteAnyMessage(s, &fnet.AccountReply{})
	case *fnet.BalanceRequest:
		if f.balance == nil {
			fnet.WriteAnyMessage(s, &fnet.ErrorReply{Code: fnet.CodeNotFound})
			return
		}
		b := *f.balance
		fnet.WriteAnyMessage(s, &b)
	case *fnet.ReleaseRequest:
		f.releases = append(f.releases, req.Segment)
		if f.refuseRelease != 0 {
			fnet.WriteAnyMessage(s, &fnet.ErrorReply{Code: f.refuseRelease})
			return
		}
		fnet.WriteAnyMessage(s, &fnet.ReleaseReply{})
	default:
		fnet.WriteAnyMessage(s, &fnet.ErrorReply{Code: fnet.CodeBadRequest})
	}
}

// target is node i's ticket for piece id. Caller holds mu or owns f.
func (f *fakeNet) target(i int, id challenge.PieceID, op fnet.Op, size int64) fnet.Target {
	tr := f.peers[i].tr
	return fnet.Target{Address: tr.Address().String(), Ticket: fnet.SignTicket(f.med.Identity(), fnet.Ticket{
		Node: tr.Identity().ID(), Piece: id, Op: op, Account: f.acct, Size: size, Expires: time.Now().Add(time.Hour)})}
}

// addSegment erasure-codes data under k of n (n at most the nodes), stores
// piece i on node i and answers lookups of segment seg with every piece
// healthy, as tune then changes the reply. It returns the pieces.
func (f *fakeNet) addSegment(seg fnet.SegmentID, k, n int, data []byte, tune func(*fnet.SegmentReply)) [][]byte {
	f.t.Helper()
	coder, err := erasure.New(erasure.Scheme{K: k, N: n})
	if err != nil {
		f.t.Fatal(err)
	}
	pieces, err := coder.Encode(bytes.Clone(data))
	if err != nil {
		f.t.Fatal(err)
	}
	rep := &fnet.SegmentReply{K: uint8(k), N: uint8(n), PieceSize: uint64(len(pieces[0]))}
	for i, pc := range pieces {
		id, err := challenge.ComputeID(pc)
		if err != nil {
			f.t.Fatal(err)
		}
		p := f.peers[i]
		p.mu.Lock()
		p.pieces[id] = pc
		p.mu.Unlock()
		rep.Pieces = append(rep.Pieces, fnet.SegmentPiece{Piece: id, Healthy: true, Target: f.target(i, id, fnet.OpGet, int64(len(pc)))})
	}
	if tune != nil {
		tune(rep)
	}
	f.mu.Lock()
	f.segs[seg] = rep
	f.mu.Unlock()
	return pieces
}

// gets is how many gets each node saw.
func (f *fakeNet) gets() []int64 {
	out := make([]int64, len(f.peers))
	for i, p := range f.peers {
		out[i] = p.gets.Load()
	}
	return out
}
