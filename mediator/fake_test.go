package mediator

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
)

// memNode is a storage node in memory that checks tickets like a real one.
type memNode struct {
	id     fnet.NodeID
	pieces map[challenge.PieceID][]byte
	down   bool
	mute   bool // heartbeats but never answers a challenge
}

// memNodes is a NodeClient over memNodes.
type memNodes struct {
	mu       sync.Mutex
	mediator fnet.NodeID
	now      func() time.Time
	nodes    map[fnet.NodeID]*memNode
	puts     atomic.Int64
	// challenged counts the challenges sent to each node.
	challenged map[fnet.NodeID]int
}

func (m *memNodes) node(addr fnet.Address) (*memNode, error) {
	n := m.nodes[addr.ID]
	if n == nil || n.down {
		return nil, fmt.Errorf("dial %s: %w", addr, context.DeadlineExceeded)
	}
	return n, nil
}

func (m *memNodes) Challenge(_ context.Context, addr fnet.Address, req *fnet.ChallengeRequest) (*fnet.ChallengeResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.challenged == nil {
		m.challenged = map[fnet.NodeID]int{}
	}
	m.challenged[addr.ID]++
	n, err := m.node(addr)
	if err != nil {
		return nil, err
	}
	if n.mute {
		return nil, context.DeadlineExceeded
	}
	resp := &fnet.ChallengeResponse{Nonce: req.Nonce}
	for _, id := range req.Pieces {
		data, ok := n.pieces[id]
		if !ok {
			resp.Proofs = append(resp.Proofs, fnet.PieceProof{Status: fnet.ProofMissing, Proof: challenge.Proof{Piece: id}})
			continue
		}
		b, _ := challenge.NewBuilder(int64(len(data)))
		b.Write(data)
		tree, _ := b.Tree()
		// The tree is built over the bytes as they are now, so a flipped
		// byte yields a proof that does not lead to the recorded root.
		p, err := challenge.Prove(challenge.MemSource{Data: data, Tree: tree}, id, int64(len(data)), req.Nonce, int(req.Openings))
		if err != nil {
			resp.Proofs = append(resp.Proofs, fnet.PieceProof{Status: fnet.ProofFailed, Proof: challenge.Proof{Piece: id}})
			continue
		}
		resp.Proofs = append(resp.Proofs, fnet.PieceProof{Status: fnet.ProofOK, Proof: p})
	}
	return resp, nil
}

func (m *memNodes) check(n *memNode, t fnet.SignedTicket, op fnet.Op) error {
	return t.Verify(m.mediator, n.id, t.Piece, op, m.now())
}

func (m *memNodes) Get(_ context.Context, addr fnet.Address, t fnet.SignedTicket) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(addr)
	if err != nil {
		return nil, err
	}
	if err := m.check(n, t, fnet.OpGet); err != nil {
		return nil, err
	}
	data, ok := n.pieces[t.Piece]
	if !ok {
		return nil, &fnet.RemoteError{Code: fnet.CodeNotFound}
	}
	return bytes.Clone(data), nil
}

func (m *memNodes) Put(_ context.Context, addr fnet.Address, t fnet.SignedTicket, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(addr)
	if err != nil {
		return err
	}
	if err := m.check(n, t, fnet.OpPut); err != nil {
		return err
	}
	if id, _ := challenge.ComputeID(data); id != t.Piece || int64(len(data)) != t.Size {
		return &fnet.RemoteError{Code: fnet.CodeMismatch}
	}
	n.pieces[t.Piece] = bytes.Clone(data)
	m.puts.Add(1)
	return nil
}

func (m *memNodes) Delete(_ context.Context, addr fnet.Address, t fnet.SignedTicket) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(addr)
	if err != nil {
		return err
	}
	if err := m.check(n, t, fnet.OpDelete); err != nil {
		return err
	}
	delete(n.pieces, t.Piece)
	return nil
}

// piece returns the bytes node holds for piece (nil if none), under the
// lock that the core's background deletes take as well.
func (m *memNodes) piece(node fnet.NodeID, piece challenge.PieceID) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nodes[node].pieces[piece]
}

// dropPiece makes node lose one piece, under the lock that the background
// work of the core (deletes after a repair, challenges) takes as well.
func (m *memNodes) dropPiece(node fnet.NodeID, piece challenge.PieceID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.nodes[node].pieces, piece)
}

// dropAll makes node lose every piece it holds and returns how many.
func (m *memNodes) dropAll(node fnet.NodeID) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.nodes[node].pieces)
	m.nodes[node].pieces = map[challenge.PieceID][]byte{}
	return n
}

// world is a mediator core over memNodes with a clock the test moves.
type world struct {
	t     testing.TB
	c     *core
	store *PebbleStore
	dir   string
	mem   *memNodes
	clock atomic.Int64
	ids   []*fnet.Identity
	addrs []string
	from  []netip.Addr // where each node's requests come from
}

func (w *world) now() time.Time { return time.Unix(0, w.clock.Load()) }

func (w *world) advance(d time.Duration) { w.clock.Add(int64(d)) }

// nextRound moves the clock on by a period, lets every node heartbeat and
// runs a challenge round; it returns the round's start and result.
func (w *world) nextRound() (time.Time, RoundResult) {
	w.t.Helper()
	w.advance(w.c.cfg.Period)
	w.heartbeat()
	start := w.now()
	r, err := w.c.Round(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	return start, r
}

func testConfig() Config {
	return Config{
		Period: time.Minute, OfflineAfter: 10 * time.Minute, HeartbeatInterval: time.Minute,
		ChallengeSample: 32, ChallengeOpenings: 32, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}.WithDefaults()
}

// newWorld starts a core with n registered nodes; node i is on subnet
// 10.0.i.0/24 with price prices[i] (default 100+i).
func newWorld(t testing.TB, n int, prices ...uint64) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir()}
	w.clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	var err error
	if w.store, err = OpenPebbleStore(w.dir, PebbleOptions{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.c.stop()
		w.store.Close()
	})
	mid, _ := fnet.GenerateIdentity()
	w.mem = &memNodes{mediator: mid.ID(), now: w.now, nodes: map[fnet.NodeID]*memNode{}}
	w.c = newCore(testConfig(), w.store, mid, w.mem)
	w.c.now = w.now
	w.c.started = w.now()
	w.c.dialBack = func(_ context.Context, addr fnet.Address) error {
		w.mem.mu.Lock()
		defer w.mem.mu.Unlock()
		_, err := w.mem.node(addr)
		return err
	}
	for i := 0; i < n; i++ {
		price := uint64(100 + i)
		if i < len(prices) {
			price = prices[i]
		}
		w.addNode(fmt.Sprintf("10.0.%d.1:7000", i), price)
	}
	return w
}

func (w *world) addNode(hostport string, price uint64) *fnet.Identity {
	w.t.Helper()
	ap := netip.MustParseAddrPort(hostport)
	id, err := w.addNodeAs(hostport, ap.Addr(), price)
	if err != nil {
		w.t.Fatal(err)
	}
	return id
}

// addNodeAs registers a new node that advertises hostport (any name) over
// a connection from ip.
func (w *world) addNodeAs(hostport string, from netip.Addr, price uint64) (*fnet.Identity, error) {
	id, _ := fnet.GenerateIdentity()
	w.mem.nodes[id.ID()] = &memNode{id: id.ID(), pieces: map[challenge.PieceID][]byte{}}
	addr := fnet.Address{ID: id.ID(), HostPort: hostport}.String()
	_, err := w.c.Register(fnet.WithRemoteIP(context.Background(), from), id.ID(), &fnet.RegisterRequest{
		Node: id.ID(), Address: addr, Capacity: 1 << 30, Price: price, PayoutAddress: "payout-" + hostport,
	})
	if err != nil {
		return nil, err
	}
	w.ids = append(w.ids, id)
	w.addrs = append(w.addrs, addr)
	w.from = append(w.from, from)
	return id, nil
}

// heartbeatNode sends node i's heartbeat with a capacity.
func (w *world) heartbeatNode(i int, capacity uint64) {
	w.t.Helper()
	if _, err := w.c.Heartbeat(fnet.WithRemoteIP(context.Background(), w.from[i]), w.ids[i].ID(), &fnet.Heartbeat{Capacity: capacity}); err != nil {
		w.t.Fatal(err)
	}
}

// heartbeat refreshes every node that is not down.
func (w *world) heartbeat() {
	for i, id := range w.ids {
		if w.mem.nodes[id.ID()].down {
			continue
		}
		if _, err := w.c.Heartbeat(fnet.WithRemoteIP(context.Background(), w.from[i]), id.ID(), &fnet.Heartbeat{Capacity: 1 << 30}); err != nil {
			w.t.Fatal(err)
		}
	}
}

func (w *world) account() fnet.AccountID {
	id, _ := fnet.GenerateIdentity()
	acct := fnet.AccountID(id.ID())
	if _, err := w.c.RegisterAccount(context.Background(), acct); err != nil {
		w.t.Fatal(err)
	}
	return acct
}

// store places, uploads and commits a random segment; it returns the
// segment and its pieces.
func (w *world) storeSegment(acct fnet.AccountID, size int) (SegmentID, [][]byte) {
	w.t.Helper()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	pl, stored, pieces := w.placeAndUploadData(acct, data)
	if err := w.c.Commit(context.Background(), acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: stored}); err != nil {
		w.t.Fatal(err)
	}
	return SegmentID(pl.Segment), pieces
}

// placeAndUploadData places a segment of data for acct and uploads every
// piece to its node; it returns the placement, the receipts a client
// would commit and the pieces.
func (w *world) placeAndUploadData(acct fnet.AccountID, data []byte) (*fnet.PlacementReply, []fnet.StoredPiece, [][]byte) {
	w.t.Helper()
	ctx := context.Background()
	coder, _ := erasure.New(w.c.cfg.Scheme)
	pieces, _ := coder.Encode(data)
	pl, stored := w.placePieces(ctx, acct, &fnet.PlacementRequest{}, pieces)
	return pl, stored, pieces
}

// placePieces places pieces for acct with req (its piece ids and size
// filled in here) and uploads each to its node; it returns the placement
// and the receipts a client would commit.
func (w *world) placePieces(ctx context.Context, acct fnet.AccountID, req *fnet.PlacementRequest, pieces [][]byte) (*fnet.PlacementReply, []fnet.StoredPiece) {
	w.t.Helper()
	ids := make([]challenge.PieceID, len(pieces))
	for i, p := range pieces {
		ids[i], _ = challenge.ComputeID(p)
	}
	req.PieceSize, req.Pieces = uint64(len(pieces[0])), ids
	pl, err := w.c.Place(ctx, acct, req)
	if err != nil {
		w.t.Fatal(err)
	}
	var stored []fnet.StoredPiece
	for i, tg := range pl.Targets {
		addr, _ := fnet.ParseAddress(tg.Address)
		if err := w.mem.Put(ctx, addr, tg.Ticket, pieces[i]); err != nil {
			w.t.Fatal(err)
		}
		stored = append(stored, fnet.StoredPiece{Index: uint8(i), Node: tg.Ticket.Node, Piece: ids[i], Size: uint64(len(pieces[i]))})
	}
	return pl, stored
}

func (w *world) segment(id SegmentID) *Segment {
	w.t.Helper()
	s, err := w.store.GetSegment(context.Background(), id)
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// checkTotals compares the status counts (kept by the store) with a scan
// of every contract.
func (w *world) checkTotals() {
	w.t.Helper()
	ctx := context.Background()
	var segs, pieces, healthy int64
	err := w.store.Segments(ctx, SegmentID{}, 0, func(s *Segment) error {
		segs++
		pieces += int64(len(s.Pieces))
		healthy += int64(s.Healthy())
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	st, err := w.c.Status(ctx, "")
	if err != nil {
		w.t.Fatal(err)
	}
	if st.Segments != segs || st.Pieces != pieces || st.Healthy != healthy || st.Lost != pieces-healthy {
		w.t.Fatalf("status counts %d/%d/%d/%d, scan %d/%d/%d", st.Segments, st.Pieces, st.Healthy, st.Lost, segs, pieces, healthy)
	}
}

// fromHost is a context as a request from hostport's address (an IP
// literal) carries it.
func fromHost(hostport string) context.Context {
	ap := netip.MustParseAddrPort(hostport)
	return fnet.WithRemoteIP(context.Background(), ap.Addr())
}
