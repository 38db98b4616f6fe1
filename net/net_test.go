package net

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/fincrypt/fincrypt/challenge"
)

func mustIdentity(t testing.TB) *Identity {
	t.Helper()
	id, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestNodeIDText(t *testing.T) {
	id := mustIdentity(t).ID()
	s := id.String()
	if len(s) != 52 || strings.ToLower(s) != s || strings.Contains(s, "=") {
		t.Fatalf("bad text form %q", s)
	}
	back, err := ParseNodeID(s)
	if err != nil || back != id {
		t.Fatalf("round trip: %v", err)
	}
	for _, bad := range []string{"", s[:51], s + "a", strings.ToUpper(s), s[:51] + "1", s[:51] + "9"} {
		if _, err := ParseNodeID(bad); !errors.Is(err, ErrBadNodeID) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestAddress(t *testing.T) {
	id := mustIdentity(t).ID()
	for _, hp := range []string{"127.0.0.1:7780", "[::1]:9", "example.org:1"} {
		a, err := ParseAddress(id.String() + "@" + hp)
		if err != nil || a.ID != id || a.HostPort != hp || a.String() != id.String()+"@"+hp {
			t.Fatalf("%s: %+v %v", hp, a, err)
		}
	}
	for _, bad := range []string{"127.0.0.1:1", id.String() + "@", id.String() + "@host", "x@127.0.0.1:1", id.String() + "@:5"} {
		if _, err := ParseAddress(bad); !errors.Is(err, ErrBadAddress) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestIdentityFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	a, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, IdentityFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file mode: %v %v", fi.Mode(), err)
	}
	b, err := LoadOrCreateIdentity(dir)
	if err != nil || b.ID() != a.ID() {
		t.Fatal("identity not stable across loads")
	}
	os.WriteFile(filepath.Join(dir, IdentityFile), []byte("garbage"), 0o600)
	if _, err := LoadOrCreateIdentity(dir); err == nil {
		t.Fatal("corrupt identity file accepted (and would be silently replaced)")
	}
}

func testTicket(t testing.TB, med *Identity, node NodeID, piece challenge.PieceID, op Op) SignedTicket {
	return SignTicket(med, Ticket{Node: node, Piece: piece, Op: op, Size: 1234, Expires: time.Now().Add(time.Minute)})
}

func TestTicketVerify(t *testing.T) {
	med, other := mustIdentity(t), mustIdentity(t)
	node := mustIdentity(t).ID()
	piece := challenge.PieceID{7}
	now := time.Now()
	good := testTicket(t, med, node, piece, OpGet)
	if err := good.Verify(med.ID(), node, piece, OpGet, now); err != nil {
		t.Fatal(err)
	}
	forged := good
	forged.Size++ // changed after signing
	expired := SignTicket(med, Ticket{Node: node, Piece: piece, Op: OpGet, Expires: now.Add(-time.Second)})
	foreign := testTicket(t, other, node, piece, OpGet)
	spoofed := foreign
	spoofed.Issuer = med.ID() // claims the right issuer, signed by another key
	cases := []struct {
		name  string
		tk    SignedTicket
		piece challenge.PieceID
		op    Op
		node  NodeID
		want  error
	}{
		{"forged", forged, piece, OpGet, node, ErrTicketSignature},
		{"expired", expired, piece, OpGet, node, ErrTicketExpired},
		{"other mediator", foreign, piece, OpGet, node, ErrTicketIssuer},
		{"spoofed issuer", spoofed, piece, OpGet, node, ErrTicketSignature},
		{"other piece", good, challenge.PieceID{8}, OpGet, node, ErrTicketScope},
		{"other op", good, piece, OpDelete, node, ErrTicketScope},
		{"other node", good, piece, OpGet, med.ID(), ErrTicketScope},
	}
	for _, c := range cases {
		err := c.tk.Verify(med.ID(), c.node, c.piece, c.op, now)
		if !errors.Is(err, c.want) || !errors.Is(err, ErrTicket) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

// A ticket is good only from its account or its issuer.
func TestTicketVerifyFrom(t *testing.T) {
	med, client, stranger := mustIdentity(t), mustIdentity(t), mustIdentity(t)
	node := mustIdentity(t).ID()
	piece := challenge.PieceID{9}
	now := time.Now()
	tk := SignTicket(med, Ticket{Node: node, Piece: piece, Op: OpGet, Account: AccountID(client.ID()),
		Size: 1, Expires: now.Add(time.Minute)})
	for _, peer := range []NodeID{client.ID(), med.ID()} {
		if err := tk.VerifyFrom(med.ID(), node, peer, piece, OpGet, now); err != nil {
			t.Errorf("from %s: %v", peer, err)
		}
	}
	if err := tk.VerifyFrom(med.ID(), node, stranger.ID(), piece, OpGet, now); !errors.Is(err, ErrTicketHolder) || CodeOf(err) != CodeUnauthorized {
		t.Errorf("from a stranger: %v", err)
	}
	// The holder check comes on top of the others.
	if err := tk.VerifyFrom(med.ID(), node, client.ID(), piece, OpDelete, now); !errors.Is(err, ErrTicketScope) {
		t.Errorf("other op: %v", err)
	}
	if !tk.FromIssuer(med.ID()) || tk.FromIssuer(client.ID()) {
		t.Error("FromIssuer")
	}
}

// sampleMessages has one populated value of every message type.
func sampleMessages(t testing.TB) []Message {
	med := mustIdentity(t)
	tk := testTicket(t, med, mustIdentity(t).ID(), challenge.PieceID{1, 2}, OpPut)
	proof := challenge.Proof{Piece: challenge.PieceID{3}, Digest: challenge.Hash{4},
		Openings: []challenge.Opening{{Index: 5, Leaf: []byte("leaf"), Path: []challenge.Hash{{6}, {7}}}}}
	return []Message{
		&ErrorReply{Code: CodeFull, Message: "full"},
		&PutRequest{Piece: challenge.PieceID{1, 2}, Ticket: tk},
		&PutReply{},
		&GetRequest{Piece: challenge.PieceID{1}, Ticket: tk, Offset: 10, Length: 20},
		&GetReply{Length: 99},
		&StatRequest{Piece: challenge.PieceID{1}, Ticket: tk},
		&StatReply{Size: 5, StoredAt: time.Unix(0, 123456789)},
		&DeleteRequest{Piece: challenge.PieceID{1}, Ticket: tk},
		&DeleteReply{},
		&ChallengeRequest{Nonce: challenge.Nonce{9}, Openings: 4, Pieces: []challenge.PieceID{{1}, {2}}},
		&ChallengeResponse{Nonce: challenge.Nonce{9}, Proofs: []PieceProof{{Status: ProofOK, Proof: proof}, {Status: ProofMissing, Proof: challenge.Proof{Piece: challenge.PieceID{2}}}}},
		&RegisterRequest{Node: med.ID(), Address: "x@127.0.0.1:1", Capacity: 1 << 40, Used: 5, Pieces: 1, Price: 2000, PayoutAddress: "bc1q", Network: "mainnet"},
		&RegisterReply{Policy: NodePolicy{HeartbeatInterval: time.Second, GracePeriod: time.Hour, GCInterval: time.Minute}},
		&Heartbeat{Capacity: 1, Used: 2, Pieces: 3},
		&HeartbeatReply{Policy: NodePolicy{HeartbeatInterval: 2 * time.Second}},
		&LiveRequest{Pieces: []challenge.PieceID{{1}, {2}, {3}}},
		&LiveReply{Live: []bool{true, false, true}},
		&DamageReport{Pieces: []challenge.PieceID{{4}, {5}}},
		&DamageReply{Accepted: 1, Ignored: 1},
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	for _, m := range sampleMessages(t) {
		b, err := EncodeFrame(m)
		if err != nil {
			t.Fatalf("%s: %v", m.Type(), err)
		}
		got, err := DecodeFrame(b)
		if err != nil {
			t.Fatalf("%s: %v", m.Type(), err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(m)) {
			t.Fatalf("%s: round trip\n got %#v\nwant %#v", m.Type(), got, m)
		}
		r, err := ReadMessage(bytes.NewReader(b))
		if err != nil || r.Type() != m.Type() {
			t.Fatalf("%s: ReadMessage: %v", m.Type(), err)
		}
		// Every truncation is refused with ErrMalformed.
		for cut := 0; cut < len(b); cut++ {
			if _, err := DecodeFrame(b[:cut]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s cut at %d: %v", m.Type(), cut, err)
			}
			if _, err := ReadMessage(bytes.NewReader(b[:cut])); err == nil {
				t.Fatalf("%s cut at %d: ReadMessage accepted", m.Type(), cut)
			}
		}
		if _, err := DecodeFrame(append(bytes.Clone(b), 0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: trailing byte accepted", m.Type())
		}
	}
}

// normalize makes times comparable by DeepEqual.
func normalize(m Message) Message {
	switch v := m.(type) {
	case *StatReply:
		c := *v
		c.StoredAt = time.Unix(0, v.StoredAt.UnixNano())
		return &c
	case *PutRequest:
		c := *v
		c.Ticket.Expires = time.Unix(v.Ticket.Expires.Unix(), 0)
		return &c
	case *GetRequest:
		c := *v
		c.Ticket.Expires = time.Unix(v.Ticket.Expires.Unix(), 0)
		return &c
	case *StatRequest:
		c := *v
		c.Ticket.Expires = time.Unix(v.Ticket.Expires.Unix(), 0)
		return &c
	case *DeleteRequest:
		c := *v
		c.Ticket.Expires = time.Unix(v.Ticket.Expires.Unix(), 0)
		return &c
	}
	return m
}

func TestFrameLimits(t *testing.T) {
	// Unknown version and type.
	b, _ := EncodeFrame(&GetReply{Length: 1})
	bad := bytes.Clone(b)
	bad[0] = 2
	if _, err := DecodeFrame(bad); !errors.Is(err, ErrVersion) {
		t.Fatalf("version: %v", err)
	}
	bad = bytes.Clone(b)
	bad[1] = 0xee
	if _, err := DecodeFrame(bad); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("type: %v", err)
	}
	// An oversized length is refused before the body is read.
	hdr := []byte{Version, byte(TypeHeartbeat), 0x7f, 0xff, 0xff, 0xff}
	r := &countingReader{r: io.MultiReader(bytes.NewReader(hdr), zeroReader{})}
	if _, err := ReadMessage(r); !errors.Is(err, ErrTooLarge) || r.n > HeaderSize {
		t.Fatalf("oversized: %v after reading %d bytes", err, r.n)
	}
	// Encoding refuses too.
	if _, err := EncodeFrame(&ErrorReply{Message: strings.Repeat("x", MaxControlBody)}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("encode oversized: %v", err)
	}
	// A count that promises more elements than bytes is refused without allocating.
	lr := []byte{Version, byte(TypeLiveRequest), 0, 0, 0, 4, 0, 0, 0x20, 0}
	if _, err := DecodeFrame(lr); !errors.Is(err, ErrMalformed) {
		t.Fatalf("count: %v", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func FuzzDecodeFrame(f *testing.F) {
	for _, m := range sampleMessages(f) {
		b, _ := EncodeFrame(m)
		f.Add(b)
	}
	f.Add([]byte{1, 0x20, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeFrame(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		// A message that decodes re-encodes to a frame that decodes to
		// the same message.
		b2, err := EncodeFrame(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := DecodeFrame(b2)
		if err != nil {
			t.Fatalf("decode of re-encoded: %v", err)
		}
		if !reflect.DeepEqual(normalize(m), normalize(m2)) {
			t.Fatalf("unstable: %#v vs %#v", m, m2)
		}
		if _, err := ReadMessage(bytes.NewReader(b)); err != nil {
			t.Fatalf("ReadMessage disagrees with DecodeFrame: %v", err)
		}
	})
}

// echo serves Heartbeat -> HeartbeatReply with Pieces as the interval.
var echo = HandlerFunc(func(ctx context.Context, peer NodeID, s *quic.Stream) {
	m, err := ReadMessage(s)
	if err != nil {
		WriteMessage(s, NewErrorReply(err))
		return
	}
	hb, ok := m.(*Heartbeat)
	if !ok {
		WriteMessage(s, &ErrorReply{Code: CodeBadRequest, Message: "want heartbeat"})
		return
	}
	WriteMessage(s, &HeartbeatReply{Policy: NodePolicy{HeartbeatInterval: time.Duration(hb.Pieces) * time.Millisecond}})
})

func startServer(t *testing.T, h Handler) *Transport {
	t.Helper()
	srv, err := Listen(mustIdentity(t), "127.0.0.1:0", Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, h); close(done) }()
	t.Cleanup(func() { cancel(); srv.Close(); <-done })
	return srv
}

// dialServer connects a new client to srv, within timeout (which bounds the
// returned context too); the client is closed when the test ends.
func dialServer(t *testing.T, srv *Transport, timeout time.Duration) (context.Context, *Conn) {
	t.Helper()
	cli, err := NewDialer(mustIdentity(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	c, err := cli.Dial(ctx, srv.Address())
	if err != nil {
		t.Fatal(err)
	}
	return ctx, c
}

func TestTransportMutualAuth(t *testing.T) {
	var mu sync.Mutex
	var gotPeer NodeID
	srv := startServer(t, HandlerFunc(func(ctx context.Context, peer NodeID, s *quic.Stream) {
		mu.Lock()
		gotPeer = peer
		mu.Unlock()
		echo(ctx, peer, s)
	}))
	cli, err := NewDialer(mustIdentity(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cli.Dial(ctx, srv.Address())
	if err != nil {
		t.Fatal(err)
	}
	if c.Peer() != srv.Identity().ID() {
		t.Fatal("wrong peer id")
	}
	rep, err := CallFor[*HeartbeatReply](ctx, c, &Heartbeat{Pieces: 42})
	if err != nil || rep.Policy.HeartbeatInterval != 42*time.Millisecond {
		t.Fatalf("call: %+v %v", rep, err)
	}
	mu.Lock()
	seen := gotPeer
	mu.Unlock()
	if seen != cli.Identity().ID() {
		t.Fatal("server did not see the client's id")
	}
	// A bad request gets an error reply and the server keeps serving.
	if _, err := c.Call(ctx, &GetReply{}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("bad request: %v", err)
	}
	s, _ := c.OpenStream(ctx)
	s.Write([]byte{Version, byte(TypeHeartbeat), 0xff, 0xff, 0xff, 0xff})
	s.Close()
	if _, err := readReply(s, TypeHeartbeatReply); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := CallFor[*HeartbeatReply](ctx, c, &Heartbeat{Pieces: 1}); err != nil {
		t.Fatalf("after bad requests: %v", err)
	}

	// Dialling with the wrong pinned id fails.
	wrong := srv.Address()
	wrong.ID = mustIdentity(t).ID()
	if _, err := cli.Dial(ctx, wrong); err == nil {
		t.Fatal("dial succeeded against a different key")
	}
}

// A peer without a client certificate, or with a non-ed25519 one, or with
// another ALPN, cannot connect.
func TestTransportRefusesUnauthenticated(t *testing.T) {
	srv := startServer(t, echo)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cli, _ := NewDialer(mustIdentity(t), Config{})
	defer cli.Close()
	tlsConf := cli.clientTLS(srv.Identity().ID())
	tlsConf.Certificates = nil
	qc, err := quic.DialAddr(ctx, srv.Addr().String(), tlsConf, &quic.Config{})
	if err == nil {
		// TLS 1.3 client auth fails after the client's handshake completes:
		// the first request must fail.
		s, err := qc.OpenStreamSync(ctx)
		if err == nil {
			WriteMessage(s, &Heartbeat{})
			s.Close()
			if _, err = ReadMessage(s); err == nil {
				t.Fatal("client without certificate was served")
			}
		}
		qc.CloseWithError(0, "")
	}
	tlsConf = cli.clientTLS(srv.Identity().ID())
	tlsConf.NextProtos = []string{"other/1"}
	if _, err := quic.DialAddr(ctx, srv.Addr().String(), tlsConf, &quic.Config{}); err == nil {
		t.Fatal("other ALPN accepted")
	}
}

func TestCheckChallenge(t *testing.T) {
	data := bytes.Repeat([]byte("fincrypt"), 3000)
	b, _ := challenge.NewBuilder(int64(len(data)))
	b.Write(data)
	tree, _ := b.Tree()
	id := tree.Root()
	req := &ChallengeRequest{Nonce: challenge.Nonce{5}, Openings: 4, Pieces: []challenge.PieceID{id, {9}, id}}
	good, err := challenge.Prove(challenge.MemSource{Data: data, Tree: tree}, id, int64(len(data)), req.Nonce, 4)
	if err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.Digest[0] ^= 1
	rep := &ChallengeResponse{Nonce: req.Nonce, Proofs: []PieceProof{
		{Status: ProofOK, Proof: good},
		{Status: ProofMissing, Proof: challenge.Proof{Piece: challenge.PieceID{9}}},
		{Status: ProofOK, Proof: bad},
	}}
	sizes := []int64{int64(len(data)), 100, int64(len(data))}
	res, err := CheckChallenge(req, rep, sizes)
	if err != nil {
		t.Fatal(err)
	}
	if res[0] != nil || !errors.Is(res[1], ErrPieceMissing) || !errors.Is(res[2], challenge.ErrProof) {
		t.Fatalf("results %v", res)
	}
	rep.Nonce[0] ^= 1
	if _, err := CheckChallenge(req, rep, sizes); !errors.Is(err, ErrResponseShape) {
		t.Fatalf("wrong nonce: %v", err)
	}
	rep.Nonce = req.Nonce
	rep.Proofs[0], rep.Proofs[1] = rep.Proofs[1], rep.Proofs[0]
	if _, err := CheckChallenge(req, rep, sizes); !errors.Is(err, ErrResponseShape) {
		t.Fatalf("reordered: %v", err)
	}
}

// A daemon restarted with the same identity on the same port resets the
// connections of its previous process, so their next call fails at once
// (and a client redials) instead of hanging until the idle timeout.
func TestRestartedPeerResetsOldConnections(t *testing.T) {
	id := mustIdentity(t)
	srv, err := Listen(id, "127.0.0.1:0", Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, echo)
	addr := srv.Address()
	cli, err := NewDialer(mustIdentity(t), Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	c, err := cli.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CallFor[*HeartbeatReply](ctx, c, &Heartbeat{Pieces: 1}); err != nil {
		t.Fatal(err)
	}
	// "Crash": the process's socket goes away without closing connections.
	srv.udp.Close()
	srv2, err := Listen(id, addr.HostPort, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	go srv2.Serve(ctx, echo)

	callCtx, callCancel := context.WithTimeout(ctx, 20*time.Second)
	defer callCancel()
	start := time.Now()
	_, err = CallFor[*HeartbeatReply](callCtx, c, &Heartbeat{Pieces: 1})
	if err == nil {
		t.Fatal("a call on the dead process's connection succeeded")
	}
	if callCtx.Err() != nil {
		t.Fatalf("the old connection hung for %s instead of being reset: %v", time.Since(start), err)
	}
	c2, err := cli.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CallFor[*HeartbeatReply](ctx, c2, &Heartbeat{Pieces: 1}); err != nil {
		t.Fatalf("after redial: %v", err)
	}
}

func TestDamageReportLimits(t *testing.T) {
	full := &DamageReport{Pieces: make([]challenge.PieceID, MaxDamagePieces)}
	b, err := EncodeFrame(full)
	if err != nil {
		t.Fatalf("a report of %d pieces: %v", MaxDamagePieces, err)
	}
	if m, err := DecodeFrame(b); err != nil || len(m.(*DamageReport).Pieces) != MaxDamagePieces {
		t.Fatalf("decode a full report: %v", err)
	}
	// One piece more is refused when encoding and when decoding.
	over := &DamageReport{Pieces: make([]challenge.PieceID, MaxDamagePieces+1)}
	if _, err := EncodeFrame(over); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("encode %d pieces: %v", MaxDamagePieces+1, err)
	}
	body := binary.BigEndian.AppendUint32(nil, MaxDamagePieces+1)
	body = append(body, make([]byte, (MaxDamagePieces+1)*challenge.HashSize)...)
	frame := append([]byte{Version, byte(TypeDamageReport), 0, 0, 0, 0}, body...)
	binary.BigEndian.PutUint32(frame[2:], uint32(len(body)))
	if _, err := DecodeFrame(frame); !errors.Is(err, ErrMalformed) {
		t.Fatalf("decode %d pieces: %v", MaxDamagePieces+1, err)
	}
	// The mediator's reader dispatches it like any node message.
	if m, err := ReadAnyMessage(bytes.NewReader(b)); err != nil || m.Type() != TypeDamageReport {
		t.Fatalf("ReadAnyMessage: %v", err)
	}
}
