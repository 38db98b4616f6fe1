package storagenode

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// The endpoint in process, over real QUIC on loopback, as hostile clients
// and a lying mediator reach it: these tests need no fincrypt binary (the
// node_test.go ones run it), so they also run under make mutate with
// FINCRYPT_TESTBIN_SKIP=1.

type epHarness struct {
	t            *testing.T
	med, self    *fnet.Identity
	client       *fnet.Identity // the account the tickets name
	store        *DiskStore
	e            *Endpoint
	addr         fnet.Address
	owner, medc  *fnet.Conn // connections as the account and as the mediator
	strangerConn *fnet.Conn // a peer that is neither
}

// newEPHarness serves a fresh store; configure, if given, sets the
// endpoint's limits before it serves (not after: the server reads them).
func newEPHarness(t *testing.T, configure ...func(*Endpoint)) *epHarness {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := &epHarness{t: t}
	h.med, _ = fnet.GenerateIdentity()
	h.self, _ = fnet.GenerateIdentity()
	h.client, _ = fnet.GenerateIdentity()
	var err error
	h.store, err = OpenDiskStore(t.TempDir(), DiskStoreOptions{Capacity: 1 << 30, NoSync: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.store.Close() })
	h.e = NewEndpoint(quiet, h.self.ID(), h.med.ID(), h.store, 10*time.Second, 10*time.Second)
	for _, f := range configure {
		f(h.e)
	}
	tr, err := fnet.Listen(h.self, "127.0.0.1:0", fnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tr.Serve(ctx, h.e) }()
	t.Cleanup(func() { cancel(); tr.Close(); <-done })
	h.addr = tr.Address()
	stranger, _ := fnet.GenerateIdentity()
	h.owner, h.medc, h.strangerConn = h.dial(h.client), h.dial(h.med), h.dial(stranger)
	return h
}

func (h *epHarness) dial(id *fnet.Identity) *fnet.Conn {
	tr, err := fnet.NewDialer(id, fnet.Config{})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { tr.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := tr.Dial(ctx, h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

func (h *epHarness) ticket(id challenge.PieceID, op fnet.Op, size int64) fnet.SignedTicket {
	return fnet.SignTicket(h.med, fnet.Ticket{Node: h.self.ID(), Piece: id, Op: op, Size: size,
		Account: fnet.AccountID(h.client.ID()), Expires: time.Now().Add(time.Minute)})
}

// stored puts seeded random bytes as the client and returns them.
func (h *epHarness) stored(seed uint64, size int) ([]byte, challenge.PieceID) {
	h.t.Helper()
	data, id := seededPiece(h.t, seed, size)
	if err := h.owner.Put(epCtx(h.t), &fnet.PutRequest{Piece: id, Ticket: h.ticket(id, fnet.OpPut, int64(size))},
		bytes.NewReader(data)); err != nil {
		h.t.Fatal(err)
	}
	return data, id
}

func seededPiece(t testing.TB, seed uint64, size int) ([]byte, challenge.PieceID) {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 0xe9})
	b := make([]byte, size)
	r.Read(b)
	id, err := challenge.ComputeID(b)
	if err != nil {
		t.Fatal(err)
	}
	return b, id
}

func epCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// raw sends req on a stream of its own, bypassing the client's own checks
// (a hostile client), and returns the first reply and the bytes after it.
func raw(t *testing.T, c *fnet.Conn, req fnet.Message) (fnet.Message, []byte) {
	t.Helper()
	ctx := epCtx(t)
	s, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.CancelRead(fnet.StreamCancelled)
	s.SetDeadline(time.Now().Add(20 * time.Second))
	if err := fnet.WriteMessage(s, req); err != nil {
		t.Fatal(err)
	}
	s.Close()
	rep, err := fnet.ReadMessage(s)
	if err != nil {
		t.Fatalf("%s: no reply: %v", req.Type(), err)
	}
	rest, _ := io.ReadAll(s)
	return rep, rest
}

// code is the error code of an error reply, or 255 for any other reply.
func code(m fnet.Message) fnet.ErrorCode {
	if e, ok := m.(*fnet.ErrorReply); ok {
		return e.Code
	}
	return 255
}

// Each of the ticket's checks, at the endpoint, for every operation that
// takes one: a ticket signed by another key, for another node, piece or
// operation, expired at the endpoint's clock to the second, or presented
// by a peer that is neither its account nor its issuer is refused as
// unauthorized, and the stored piece is left as it was.
func TestEndpointTicketChecks(t *testing.T) {
	// The endpoint's clock, an hour ahead and on a whole second, from the
	// first request on (the put below is under a ticket valid for a minute).
	now := time.Now().Truncate(time.Second).Add(time.Hour)
	var useNow atomic.Bool
	h := newEPHarness(t, func(e *Endpoint) {
		e.now = func() time.Time {
			if useNow.Load() {
				return now
			}
			return time.Now()
		}
	})
	data, id := h.stored(1, 3*challenge.LeafSize+11)
	useNow.Store(true)
	size := int64(len(data))
	_, id2 := seededPiece(t, 2, 1000)
	other, _ := fnet.GenerateIdentity()
	mk := func(signer *fnet.Identity, node fnet.NodeID, piece challenge.PieceID, op fnet.Op, exp time.Time) fnet.SignedTicket {
		return fnet.SignTicket(signer, fnet.Ticket{Issuer: h.med.ID(), Node: node, Piece: piece, Op: op, Size: size,
			Account: fnet.AccountID(h.client.ID()), Expires: exp})
	}
	req := func(op fnet.Op, tk fnet.SignedTicket) fnet.Message {
		switch op {
		case fnet.OpPut:
			return &fnet.PutRequest{Piece: id, Ticket: tk}
		case fnet.OpGet:
			return &fnet.GetRequest{Piece: id, Ticket: tk}
		case fnet.OpStat:
			return &fnet.StatRequest{Piece: id, Ticket: tk}
		}
		return &fnet.DeleteRequest{Piece: id, Ticket: tk}
	}
	later := now.Add(time.Second)
	for _, op := range []fnet.Op{fnet.OpPut, fnet.OpGet, fnet.OpStat, fnet.OpDelete} {
		wrongOp := fnet.OpGet
		if op == fnet.OpGet {
			wrongOp = fnet.OpStat
		}
		forged := mk(h.med, h.self.ID(), id, op, later)
		forged.Signature[7] ^= 1
		cases := []struct {
			name string
			c    *fnet.Conn
			tk   fnet.SignedTicket
		}{
			{"signed by another key", h.owner, fnet.SignTicket(other, forged.Ticket)},
			{"with a broken signature", h.owner, forged},
			{"for another node", h.owner, mk(h.med, other.ID(), id, op, later)},
			{"for another piece", h.owner, mk(h.med, h.self.ID(), id2, op, later)},
			{"for another operation", h.owner, mk(h.med, h.self.ID(), id, wrongOp, later)},
			{"expiring at the endpoint's second", h.owner, mk(h.med, h.self.ID(), id, op, now)},
			{"expired a second before", h.owner, mk(h.med, h.self.ID(), id, op, now.Add(-time.Second))},
			{"from a peer neither its account nor its issuer", h.strangerConn, mk(h.med, h.self.ID(), id, op, later)},
		}
		for _, tc := range cases {
			rep, _ := raw(t, tc.c, req(op, tc.tk))
			if code(rep) != fnet.CodeUnauthorized {
				t.Errorf("%s ticket %s: reply %#v, want unauthorized", op, tc.name, rep)
			}
		}
	}
	// The same tickets, valid a second longer, are honoured.
	rep, _ := raw(t, h.owner, &fnet.StatRequest{Piece: id, Ticket: mk(h.med, h.self.ID(), id, fnet.OpStat, later)})
	if st, ok := rep.(*fnet.StatReply); !ok || int64(st.Size) != size {
		t.Fatalf("stat with a ticket valid one more second: %#v", rep)
	}
	rep, body := raw(t, h.owner, &fnet.GetRequest{Piece: id, Ticket: mk(h.med, h.self.ID(), id, fnet.OpGet, later)})
	if _, ok := rep.(*fnet.GetReply); !ok || !bytes.Equal(body, data) {
		t.Fatalf("get with a ticket valid one more second: %#v, %d bytes", rep, len(body))
	}
	if _, err := h.store.Stat(id); err != nil {
		t.Fatalf("the piece after the refused requests: %v", err)
	}
}

// A malformed request, a type a node does not serve and a reply type sent
// as a request get a bad-request error reply, and the node keeps serving.
func TestEndpointMalformedRequests(t *testing.T) {
	h := newEPHarness(t)
	data, id := h.stored(3, 5000)
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n")},
		{"a heartbeat", func() []byte { b, _ := fnet.EncodeAnyFrame(&fnet.Heartbeat{}); return b }()},
		{"a reply", func() []byte { b, _ := fnet.EncodeAnyFrame(&fnet.GetReply{Length: 1 << 40}); return b }()},
		{"a truncated get", func() []byte {
			b, _ := fnet.EncodeAnyFrame(&fnet.GetRequest{Piece: id, Ticket: h.ticket(id, fnet.OpGet, int64(len(data)))})
			return b[:len(b)-9]
		}()},
	} {
		s, err := h.owner.OpenStream(epCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		s.SetDeadline(time.Now().Add(20 * time.Second))
		s.Write(tc.frame)
		s.Close()
		rep, err := fnet.ReadMessage(s)
		if err != nil || code(rep) != fnet.CodeBadRequest {
			t.Errorf("%s: reply %#v, %v; want a bad-request error reply", tc.name, rep, err)
		}
		s.CancelRead(fnet.StreamCancelled)
	}
	rep, body := raw(t, h.owner, &fnet.GetRequest{Piece: id, Ticket: h.ticket(id, fnet.OpGet, int64(len(data)))})
	if _, ok := rep.(*fnet.GetReply); !ok || !bytes.Equal(body, data) {
		t.Fatalf("get after the malformed requests: %#v", rep)
	}
}

// Ranges of a get, at their edges, from a client that skips its own
// checks: what lies inside the piece is served exactly, anything past its
// end is a bad request, and a ticket for another size is refused.
func TestEndpointGetRanges(t *testing.T) {
	h := newEPHarness(t)
	data, id := h.stored(4, 2*challenge.LeafSize+100)
	size := uint64(len(data))
	tk := h.ticket(id, fnet.OpGet, int64(size))
	for _, tc := range []struct {
		off, length uint64
		ok          bool
	}{
		{0, 0, true},                // the whole piece
		{1000, 0, true},             // from an offset to the end
		{size - 1, 0, true},         // the last byte
		{0, size, true},             // the whole piece, by length
		{100, size - 100, true},     // a range ending at the end
		{7, 93, true},               // a range inside
		{size, 0, false},            // nothing left at the end
		{size, 1, false},            // one byte past the end
		{size + 1, 0, false},        // an offset past the end
		{0, size + 1, false},        // one byte too many
		{100, size - 99, false},     // a range one byte past the end
		{size - 1, 2, false},        // idem, from the last byte
		{1 << 62, 1 << 62, false},   // wrapping sums
		{size - 10, 1 << 63, false}, // idem
	} {
		rep, body := raw(t, h.owner, &fnet.GetRequest{Piece: id, Ticket: tk, Offset: tc.off, Length: tc.length})
		if !tc.ok {
			if code(rep) != fnet.CodeBadRequest {
				t.Errorf("get %d+%d of %d bytes: reply %#v, want a bad request", tc.off, tc.length, size, rep)
			}
			continue
		}
		want := tc.length
		if want == 0 {
			want = size - tc.off
		}
		gr, ok := rep.(*fnet.GetReply)
		if !ok || gr.Length != want || !bytes.Equal(body, data[tc.off:tc.off+want]) {
			t.Errorf("get %d+%d of %d bytes: reply %#v with %d bytes, want %d bytes of the piece", tc.off, tc.length, size, rep, len(body), want)
		}
	}
	for _, sz := range []int64{int64(size) - 1, int64(size) + 1} {
		rep, _ := raw(t, h.owner, &fnet.GetRequest{Piece: id, Ticket: h.ticket(id, fnet.OpGet, sz)})
		if code(rep) != fnet.CodeUnauthorized {
			t.Errorf("get with a ticket for %d bytes of a %d-byte piece: %#v, want unauthorized", sz, size, rep)
		}
	}
	_, missing := seededPiece(t, 5, 100)
	if rep, _ := raw(t, h.owner, &fnet.GetRequest{Piece: missing, Ticket: h.ticket(missing, fnet.OpGet, 100)}); code(rep) != fnet.CodeNotFound {
		t.Errorf("get of a piece the node does not hold: %#v, want not found", rep)
	}
}

// A put's size is checked before any byte is stored: a ticket for 0 bytes
// or for more than the largest piece is refused, and so is a piece whose
// bytes do not match its id; none leaves anything behind.
func TestEndpointPutLimits(t *testing.T) {
	h := newEPHarness(t)
	data, id := seededPiece(t, 6, 4000)
	for _, sz := range []int64{0, challenge.MaxPieceSize + 1} {
		// The request alone, as a client that sends no data: the node
		// refuses it from the ticket.
		rep, _ := raw(t, h.owner, &fnet.PutRequest{Piece: id, Ticket: h.ticket(id, fnet.OpPut, sz)})
		if code(rep) != fnet.CodeTooLarge {
			t.Errorf("put under a ticket for %d bytes: %#v, want piece too large", sz, rep)
		}
	}
	bad := append([]byte(nil), data...)
	bad[100] ^= 1
	if err := h.owner.Put(epCtx(t), &fnet.PutRequest{Piece: id, Ticket: h.ticket(id, fnet.OpPut, int64(len(bad)))}, bytes.NewReader(bad)); !errors.Is(err, fnet.ErrMismatch) {
		t.Errorf("put of bytes that do not match the id: %v, want mismatch", err)
	}
	if used, n := h.store.Usage(); used != 0 || n != 0 {
		t.Fatalf("refused puts left %d bytes in %d pieces", used, n)
	}
	// At the largest size the ticket passes the size check (the upload
	// itself is cut short here: only the refusal is of interest).
	if err := h.e.checkTicket(h.client.ID(), id, ptr(h.ticket(id, fnet.OpPut, challenge.MaxPieceSize)), fnet.OpPut); err != nil {
		t.Fatal(err)
	}
	if err := challenge.CheckSize(challenge.MaxPieceSize); err != nil {
		t.Fatal(err)
	}
	if err := h.owner.Put(epCtx(t), &fnet.PutRequest{Piece: id, Ticket: h.ticket(id, fnet.OpPut, int64(len(data)))}, bytes.NewReader(data)); err != nil {
		t.Fatalf("a valid put after the refused ones: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// uploadLimit grants the grace plus the size at the least rate.
func TestEndpointUploadLimit(t *testing.T) {
	e := &Endpoint{MinUploadRate: 1000, UploadGrace: 3 * time.Second}
	for _, tc := range []struct {
		size int64
		want time.Duration
	}{{0, 3 * time.Second}, {500, 3500 * time.Millisecond}, {10_000, 13 * time.Second}} {
		if got := e.uploadLimit(tc.size); got != tc.want {
			t.Errorf("uploadLimit(%d) at 1000 B/s, grace 3s = %s, want %s", tc.size, got, tc.want)
		}
	}
	e.MinUploadRate = 0 // taken as 1 byte a second, not a division by zero
	if got := e.uploadLimit(2); got != 5*time.Second {
		t.Errorf("uploadLimit(2) at rate 0 = %s, want 5s", got)
	}
}

// A client that trickles its upload past the endpoint's limit is cut off
// with a bad-request error that says so, and leaves nothing stored.
func TestEndpointSlowPutCutOff(t *testing.T) {
	h := newEPHarness(t, func(e *Endpoint) {
		e.MinUploadRate = 1 << 20
		e.UploadGrace = 300 * time.Millisecond
	})
	data, id := seededPiece(t, 7, 64<<10)
	err := h.owner.Put(epCtx(t), &fnet.PutRequest{Piece: id, Ticket: h.ticket(id, fnet.OpPut, int64(len(data)))},
		&trickle{r: bytes.NewReader(data), every: 50 * time.Millisecond})
	if !errors.Is(err, fnet.ErrBadRequest) || !strings.Contains(err.Error(), "not done within") {
		t.Fatalf("trickled put: %v, want a bad request for the upload's time limit", err)
	}
	if used, n := h.store.Usage(); used != 0 || n != 0 {
		t.Fatalf("the cut-off put left %d bytes in %d pieces", used, n)
	}
}

// trickle hands out 1 KiB at a time, pausing before each.
type trickle struct {
	r     io.Reader
	every time.Duration
}

func (s *trickle) Read(p []byte) (int, error) {
	time.Sleep(s.every)
	return s.r.Read(p[:min(len(p), 1024)])
}

// Put tickets are single-use: once the piece is released, a ticket that
// may have been issued before the release (it expires no later than the
// release plus the ticket lifetime) is refused; one that expires later
// was issued after it and is honoured.
func TestEndpointReleasedPieceTicket(t *testing.T) {
	h := newEPHarness(t, func(e *Endpoint) { e.TicketTTL = 10 * time.Minute })
	data, id := h.stored(8, 3000)
	if err := h.store.Delete(id); err != nil {
		t.Fatal(err)
	}
	at, ok := h.store.ReleasedAt(id)
	if !ok {
		t.Fatal("no release recorded")
	}
	tk := func(exp time.Time) *fnet.PutRequest {
		return &fnet.PutRequest{Piece: id, Ticket: fnet.SignTicket(h.med, fnet.Ticket{Node: h.self.ID(), Piece: id,
			Op: fnet.OpPut, Size: int64(len(data)), Account: fnet.AccountID(h.client.ID()), Expires: exp})}
	}
	// Tickets carry whole seconds; the boundary is checked in full.
	edge := at.Add(h.e.TicketTTL)
	if err := h.e.checkReleased(tk(edge)); !errors.Is(err, fnet.ErrUnauthorized) {
		t.Errorf("a ticket expiring at release+TTL: %v, want refused", err)
	}
	if err := h.e.checkReleased(&fnet.PutRequest{Piece: id, Ticket: fnet.SignedTicket{Ticket: fnet.Ticket{Expires: edge.Add(time.Nanosecond)}}}); err != nil {
		t.Errorf("a ticket expiring just after release+TTL: %v, want accepted", err)
	}
	if err := h.owner.Put(epCtx(t), tk(time.Now().Add(time.Minute)), bytes.NewReader(data)); !errors.Is(err, fnet.ErrUnauthorized) {
		t.Fatalf("a put ticket issued before the release: %v, want refused", err)
	}
	if _, err := h.store.Stat(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused put stored the piece: %v", err)
	}
	if err := h.owner.Put(epCtx(t), tk(edge.Add(2*time.Second)), bytes.NewReader(data)); err != nil {
		t.Fatalf("a put ticket issued after the release: %v", err)
	}
	_, fresh := seededPiece(t, 9, 10)
	never := tk(time.Now())
	never.Piece = fresh
	if err := h.e.checkReleased(never); err != nil {
		t.Fatalf("a piece never released: %v", err)
	}
}

// Deletes: the account that stored a piece deletes it, another account
// (with a ticket of its own) cannot, the mediator deletes any piece, and
// deleting a piece the node does not hold succeeds.
func TestEndpointDeleteOwnership(t *testing.T) {
	h := newEPHarness(t)
	_, id := h.stored(10, 2000)
	_, id2 := h.stored(11, 2000)
	mallory, _ := fnet.GenerateIdentity()
	thief := h.dial(mallory)
	del := func(c *fnet.Conn, acct *fnet.Identity, piece challenge.PieceID) fnet.Message {
		rep, _ := raw(t, c, &fnet.DeleteRequest{Piece: piece, Ticket: fnet.SignTicket(h.med, fnet.Ticket{Node: h.self.ID(),
			Piece: piece, Op: fnet.OpDelete, Size: 2000, Account: fnet.AccountID(acct.ID()), Expires: time.Now().Add(time.Minute)})})
		return rep
	}
	if rep := del(thief, mallory, id); code(rep) != fnet.CodeUnauthorized {
		t.Fatalf("delete of another account's piece: %#v, want unauthorized", rep)
	}
	if _, err := h.store.Stat(id); err != nil {
		t.Fatalf("the piece after a refused delete: %v", err)
	}
	_, gone := seededPiece(t, 12, 500)
	if rep := del(thief, mallory, gone); rep.Type() != fnet.TypeDeleteReply {
		t.Fatalf("delete of a piece the node does not hold: %#v, want done", rep)
	}
	if rep := del(h.owner, h.client, id); rep.Type() != fnet.TypeDeleteReply {
		t.Fatalf("the owner's delete: %#v", rep)
	}
	if _, err := h.store.Stat(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the piece after its owner deleted it: %v", err)
	}
	if rep := del(h.medc, mallory, id2); rep.Type() != fnet.TypeDeleteReply {
		t.Fatalf("the mediator's delete under another account's name: %#v", rep)
	}
	if _, err := h.store.Stat(id2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the piece after the mediator deleted it: %v", err)
	}
}

// Challenges are answered only to the mediator: with a proof that verifies
// for a piece held, "missing" for one not held, "failed" for one whose
// bytes are gone; a client's challenge is refused.
func TestEndpointChallenge(t *testing.T) {
	h := newEPHarness(t)
	data, id := h.stored(13, 5*challenge.LeafSize+3)
	_, broken := h.stored(14, 4*challenge.LeafSize)
	_, missing := seededPiece(t, 15, 100)
	// A piece whose file lost its bytes: Open succeeds, the proof cannot.
	if err := os.Truncate(h.store.piecePath(broken), pieceHeaderSize+10); err != nil {
		t.Fatal(err)
	}
	var nonce challenge.Nonce
	nonce[3] = 9
	req := &fnet.ChallengeRequest{Nonce: nonce, Openings: 3, Pieces: []challenge.PieceID{id, missing, broken}}
	if rep, _ := raw(t, h.owner, req); code(rep) != fnet.CodeUnauthorized {
		t.Fatalf("a client's challenge: %#v, want unauthorized", rep)
	}
	rep, _ := raw(t, h.medc, req)
	cr, ok := rep.(*fnet.ChallengeResponse)
	if !ok || cr.Nonce != nonce || len(cr.Proofs) != 3 {
		t.Fatalf("the mediator's challenge: %#v", rep)
	}
	if p := cr.Proofs[0]; p.Status != fnet.ProofOK || challenge.Verify(id, int64(len(data)), nonce, 3, p.Proof) != nil {
		t.Errorf("held piece: status %v, verify %v", p.Status, challenge.Verify(id, int64(len(data)), nonce, 3, p.Proof))
	}
	if p := cr.Proofs[1]; p.Status != fnet.ProofMissing || p.Proof.Piece != missing {
		t.Errorf("piece not held: status %v for %s", p.Status, p.Proof.Piece)
	}
	if p := cr.Proofs[2]; p.Status != fnet.ProofFailed || p.Proof.Piece != broken {
		t.Errorf("piece with lost bytes: status %v for %s", p.Status, p.Proof.Piece)
	}
}

// A client that sends a put request and then nothing at all is cut off at
// the upload's time limit, not at the (here much longer) idle timeout: a
// stalled read gets the total deadline too. The piece is not stored and
// its reservation is given back.
func TestEndpointStalledPutCutOff(t *testing.T) {
	h := newEPHarness(t, func(e *Endpoint) {
		e.idleTimeout = time.Hour
		e.MinUploadRate = 1 << 20
		e.UploadGrace = 300 * time.Millisecond
	})
	_, id := seededPiece(t, 16, 64<<10)
	s, err := h.owner.OpenStream(epCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.CancelRead(fnet.StreamCancelled)
	defer s.CancelWrite(fnet.StreamCancelled)
	// Bounded for a failing run only: the node answers after some 400 ms.
	s.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := fnet.WriteMessage(s, &fnet.PutRequest{Piece: id, Ticket: h.ticket(id, fnet.OpPut, 64<<10)}); err != nil {
		t.Fatal(err)
	}
	s.Write(make([]byte, 100)) // a start, then a stall with the stream open
	rep, err := fnet.ReadMessage(s)
	if err != nil {
		t.Fatalf("no reply to a stalled put within 30 s (limit 0.36 s, idle timeout 1 h): %v", err)
	}
	if e, ok := rep.(*fnet.ErrorReply); !ok || e.Code != fnet.CodeBadRequest || !strings.Contains(e.Message, "not done within") {
		t.Fatalf("stalled put: %#v, want a bad request for the upload's time limit", rep)
	}
	waitUsage(t, h.store, 0, 0)
	if _, err := h.store.Stat(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the stalled put stored the piece: %v", err)
	}
}

// waitUsage waits (bounded) for the store's usage and reservations to come
// back to used bytes in n pieces: a put's handler may still be unwinding
// when its reply arrives.
func waitUsage(t *testing.T, s *DiskStore, used, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.mu.Lock()
		u, p, r := s.used, s.pieces, s.reserved
		s.mu.Unlock()
		if u == used && p == n && r == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage %d bytes in %d pieces, %d reserved; want %d in %d, none reserved", u, p, r, used, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// failingDelete is a store whose deletes fail (a disk error).
type failingDelete struct{ *DiskStore }

func (failingDelete) Delete(challenge.PieceID) error { return errors.New("disk error") }

// A delete the store fails is reported as failed, never as done: the
// mediator would count the space released while the piece stays.
func TestEndpointDeleteFailureReported(t *testing.T) {
	h := newEPHarness(t, func(e *Endpoint) { e.store = failingDelete{e.store.(*DiskStore)} })
	_, id := h.stored(17, 2000)
	rep, _ := raw(t, h.medc, &fnet.DeleteRequest{Piece: id, Ticket: h.ticket(id, fnet.OpDelete, 2000)})
	if code(rep) != fnet.CodeInternal {
		t.Fatalf("a delete the disk failed: %#v, want an internal error", rep)
	}
}
