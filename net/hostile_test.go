package net

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
)

func header(t MsgType, n uint32) []byte {
	h := []byte{Version, byte(t), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[2:], n)
	return h
}

// blockingReader returns its bytes, then blocks until closed (a peer that
// announced a body and sends nothing more).
type blockingReader struct {
	b    []byte
	done chan struct{}
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if len(r.b) > 0 {
		n := copy(p, r.b)
		r.b = r.b[n:]
		return n, nil
	}
	<-r.done
	return 0, io.EOF
}

func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// A header alone must not make the reader allocate the body it announces:
// the buffer grows only as bytes arrive.
func TestReadAllocatesAsBytesArrive(t *testing.T) {
	const streams = 64
	var wg sync.WaitGroup
	done := make(chan struct{})
	before := heapAlloc()
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// An accepted type at its largest body: 8 MiB announced, 100 bytes sent.
			r := &blockingReader{b: append(header(TypeChallengeResponse, MaxBody), make([]byte, 100)...), done: done}
			if _, err := ReadMessageOf(r, knownType); !errors.Is(err, ErrTruncated) {
				t.Errorf("want truncated, got %v", err)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond) // let the readers block (not a correctness wait)
	during := heapAlloc() - before
	close(done)
	wg.Wait()
	// 64 streams announcing 8 MiB each would be 512 MiB allocated from the
	// headers; growing as bytes arrive it is a few KiB each.
	if limit := uint64(streams * 64 << 10); during > limit {
		t.Fatalf("%d streams announcing %d bytes allocated %d bytes while blocked (bound %d)", streams, MaxBody, during, limit)
	}
	// A body that does arrive whole is read whole, through every growth step.
	m := &ChallengeResponse{Proofs: []PieceProof{{Status: ProofOK, Proof: challenge.Proof{Openings: []challenge.Opening{
		{Leaf: bytes.Repeat([]byte{7}, challenge.LeafSize)}, {Leaf: bytes.Repeat([]byte{8}, challenge.LeafSize)}}}}}}
	b, err := EncodeFrame(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadMessageOf(iotestOneByte{bytes.NewReader(b)}, OneOf(TypeChallengeResponse))
	if err != nil || !bytes.Equal(got.(*ChallengeResponse).Proofs[0].Proof.Openings[1].Leaf, m.Proofs[0].Proof.Openings[1].Leaf) {
		t.Fatalf("whole body: %v", err)
	}
}

type iotestOneByte struct{ r io.Reader }

func (o iotestOneByte) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

// Where a request belongs, a reply type is refused from its header, before
// its (larger) body is read; a request the side does not serve is refused
// as unsupported. Control messages keep their own 16 KiB limit, not the
// 8 MiB of the largest type.
func TestReadMessageOfRefusesFromTheHeader(t *testing.T) {
	requests := OneOf(TypePutRequest, TypeGetRequest)
	cases := []struct {
		name string
		hdr  []byte
		want error
	}{
		{"a reply where a request belongs", header(TypeChallengeResponse, MaxBody), ErrUnexpectedType},
		{"a request not served here", header(TypeRegisterRequest, 10), ErrUnsupported},
		{"a mediator reply", header(TypeSegmentReply, MaxMediatorBody), ErrUnexpectedType},
		{"a control body over 16 KiB", header(TypeGetRequest, MaxControlBody+1), ErrTooLarge},
		{"unknown type", header(0xee, 0), ErrUnknownType},
	}
	for _, c := range cases {
		r := &countingReader{r: io.MultiReader(bytes.NewReader(c.hdr), zeroReader{})}
		_, err := ReadMessageOf(r, requests)
		if !errors.Is(err, c.want) || !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if r.n > HeaderSize {
			t.Errorf("%s: read %d bytes, want only the header", c.name, r.n)
		}
	}
	// Exactly at the limit the body is read (and then judged by its content).
	r := &countingReader{r: io.MultiReader(bytes.NewReader(header(TypeGetRequest, MaxControlBody)), zeroReader{})}
	if _, err := ReadMessageOf(r, requests); errors.Is(err, ErrTooLarge) || r.n != HeaderSize+MaxControlBody {
		t.Fatalf("at the limit: %v after %d bytes", err, r.n)
	}
	for _, ty := range []MsgType{TypePutRequest, TypeGetRequest, TypeStatRequest, TypeDeleteRequest,
		TypeHeartbeat, TypeRegisterRequest, TypeChallengeRequest, TypeAccountRequest} {
		if got := BodyLimit(ty); got > MaxMediatorBody {
			t.Errorf("%s: limit %d, a request's limit is at most %d", TypeName(ty), got, MaxMediatorBody)
		}
	}
	if BodyLimit(TypeHeartbeat) != MaxControlBody || BodyLimit(TypeGetReply) != MaxControlBody {
		t.Errorf("control limits: %d %d, want %d", BodyLimit(TypeHeartbeat), BodyLimit(TypeGetReply), MaxControlBody)
	}
	// Requests are even, replies odd, and ReplyType pairs them.
	for ty := range 256 {
		mt := MsgType(ty)
		if !knownType(mt) || !IsRequest(mt) {
			continue
		}
		if !knownType(ReplyType(mt)) || IsRequest(ReplyType(mt)) {
			t.Errorf("%s: reply type %s", TypeName(mt), TypeName(ReplyType(mt)))
		}
	}
}

// The client checks the length a node announces against what it asked for
// before reading any of it.
func TestCheckGetReplyRefusesAWrongLength(t *testing.T) {
	tk := SignedTicket{Ticket: Ticket{Op: OpGet, Size: 1000}}
	req := &GetRequest{Ticket: tk}
	for _, c := range []struct {
		name string
		req  *GetRequest
		n    uint64
		ok   bool
	}{
		{"whole piece", req, 1000, true},
		{"1 TiB", req, 1 << 40, false},
		{"one byte more", req, 1001, false},
		{"one byte less", req, 999, false},
		{"range", &GetRequest{Ticket: tk, Offset: 10, Length: 20}, 20, true},
		{"rest of the piece", &GetRequest{Ticket: tk, Offset: 10}, 990, true},
		{"range, more announced", &GetRequest{Ticket: tk, Offset: 10, Length: 20}, 990, false},
	} {
		b, _ := EncodeFrame(&GetReply{Length: c.n})
		r := &countingReader{r: io.MultiReader(bytes.NewReader(b), zeroReader{})}
		n, err := CheckGetReply(r, c.req)
		if c.ok && (err != nil || n != c.n) {
			t.Errorf("%s: %d %v", c.name, n, err)
		}
		if !c.ok && !errors.Is(err, ErrReplyLength) {
			t.Errorf("%s: %d %v, want ErrReplyLength", c.name, n, err)
		}
		if r.n > len(b) {
			t.Errorf("%s: read %d bytes past the reply", c.name, r.n-len(b))
		}
	}
	if _, err := (&GetRequest{Ticket: tk, Offset: 1001}).WantLength(); !errors.Is(err, ErrBadRequest) {
		t.Errorf("offset past the ticket: %v", err)
	}
	// A reply of another type is refused from its header.
	b := header(TypeChallengeResponse, MaxBody)
	r := &countingReader{r: io.MultiReader(bytes.NewReader(b), zeroReader{})}
	if _, err := CheckGetReply(r, req); !errors.Is(err, ErrUnexpectedType) || r.n > HeaderSize {
		t.Errorf("challenge response as a get reply: %v after %d bytes", err, r.n)
	}
}

func listenWith(t *testing.T, cfg Config, h Handler) *Transport {
	t.Helper()
	srv, err := Listen(mustIdentity(t), "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, h); close(done) }()
	t.Cleanup(func() { cancel(); srv.Close(); <-done })
	return srv
}

// dialerAt is a dialling transport bound to a given loopback address.
func dialerAt(t *testing.T, hostport string) *Transport {
	t.Helper()
	tr, err := newTransport(mustIdentity(t), hostport, false, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// Connections over the per-address cap are refused, those from other
// addresses are not, and a closed connection frees its place.
func TestConnectionCaps(t *testing.T) {
	srv := listenWith(t, Config{MaxConnsPerIP: 4, MaxConns: 6}, echo)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func(host string) (*Conn, error) {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		defer dcancel()
		c, err := dialerAt(t, host+":0").Dial(dctx, srv.Address())
		if err == nil {
			// A refused connection can look established to the dialler
			// until its first request.
			_, err = CallFor[*HeartbeatReply](dctx, c, &Heartbeat{Pieces: 1})
		}
		return c, err
	}
	var open []*Conn
	refused := 0
	for i := range 10 { // ten identities from one address
		c, err := dial("127.0.0.1")
		if err != nil {
			refused++
			continue
		}
		if i >= 4 {
			t.Errorf("connection %d from one address accepted over the cap of 4", i+1)
		}
		open = append(open, c)
	}
	if len(open) != 4 || refused != 6 {
		t.Fatalf("from one address: %d accepted, %d refused; want 4 and 6", len(open), refused)
	}
	if st := srv.Stats(); st.RefusedConns < 6 || st.Conns != 4 {
		t.Fatalf("stats %+v", st)
	}
	// Other addresses fill the total cap of 6.
	for _, host := range []string{"127.0.0.2", "127.0.0.3"} {
		c, err := dial(host)
		if err != nil {
			t.Fatalf("from %s: %v", host, err)
		}
		open = append(open, c)
	}
	if _, err := dial("127.0.0.4"); err == nil {
		t.Fatal("a connection over the total cap was accepted")
	}
	// Closing one frees its place.
	open[0].Close()
	deadline := time.Now().Add(30 * time.Second)
	for srv.Stats().Conns > 5 {
		if time.Now().After(deadline) {
			t.Fatalf("closed connection still counted: %+v", srv.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, err := dial("127.0.0.1")
	if err != nil {
		t.Fatalf("after a close: %v", err)
	}
	c.Close()
}

// A peer over its request rate is answered busy without being read; one
// within it is served; the bucket refills.
func TestRequestRate(t *testing.T) {
	srv := listenWith(t, Config{RequestRate: 1, RequestBurst: 5, IPRequestRate: 1000, IPRequestBurst: 1000}, echo)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	greedy, err := dialerAt(t, "127.0.0.1:0").Dial(ctx, srv.Address())
	if err != nil {
		t.Fatal(err)
	}
	busy, ok := 0, 0
	for range 40 {
		_, err := CallFor[*HeartbeatReply](ctx, greedy, &Heartbeat{Pieces: 1})
		switch {
		case errors.Is(err, ErrBusy):
			busy++
		case err == nil:
			ok++
		default:
			t.Fatal(err)
		}
	}
	// 5 of burst plus what refills at 1/s while the loop runs.
	if busy == 0 || ok < 5 {
		t.Fatalf("40 quick requests: %d served, %d busy", ok, busy)
	}
	if srv.Stats().Throttled != uint64(busy) {
		t.Fatalf("throttled %d, busy replies %d", srv.Stats().Throttled, busy)
	}
	// Another peer on the same address is not held back by the first.
	other, err := dialerAt(t, "127.0.0.1:0").Dial(ctx, srv.Address())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CallFor[*HeartbeatReply](ctx, other, &Heartbeat{Pieces: 1}); err != nil {
		t.Fatalf("another peer: %v", err)
	}
	// The bucket refills.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := CallFor[*HeartbeatReply](ctx, greedy, &Heartbeat{Pieces: 1})
		if err == nil {
			break
		}
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			t.Fatalf("after waiting: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The per-address bucket holds back many identities from one address.
	srv2 := listenWith(t, Config{RequestRate: 1000, RequestBurst: 1000, IPRequestRate: 0.5, IPRequestBurst: 5}, echo)
	busy = 0
	for i := range 20 {
		c, err := dialerAt(t, "127.0.0.1:0").Dial(ctx, srv2.Address())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := CallFor[*HeartbeatReply](ctx, c, &Heartbeat{Pieces: uint64(i)}); errors.Is(err, ErrBusy) {
			busy++
		} else if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if busy == 0 {
		t.Fatal("20 identities from one address: none held back by the address's rate")
	}
}

func FuzzReadMessageOf(f *testing.F) {
	for _, m := range sampleMessages(f) {
		b, _ := EncodeAnyFrame(m)
		f.Add(b, uint8(0))
	}
	f.Add(header(TypeChallengeResponse, MaxBody), uint8(1))
	f.Add(header(TypeGetRequest, MaxControlBody+1), uint8(2))
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		accept := []func(MsgType) bool{knownType, IsRequest, OneOf(TypeGetReply, TypeError)}[int(which)%3]
		r := &countingReader{r: iotestOneByte{bytes.NewReader(b)}}
		m, err := ReadMessageOf(r, accept)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.EOF) {
				t.Fatalf("error is neither malformed nor EOF: %v", err)
			}
			return
		}
		if !accept(m.Type()) {
			t.Fatalf("%s accepted", TypeName(m.Type()))
		}
		if r.n > HeaderSize+BodyLimit(m.Type()) {
			t.Fatalf("read %d bytes for a %s", r.n, TypeName(m.Type()))
		}
		if _, err := EncodeAnyFrame(m); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

// FuzzClientReplies feeds arbitrary bytes to the client's handling of a
// node's or the mediator's reply to each request: it fails cleanly, never
// reads past the limit of the reply it expects, and a Get reply it accepts
// announces exactly what was asked.
func FuzzClientReplies(f *testing.F) {
	for _, m := range sampleMessages(f) {
		b, _ := EncodeAnyFrame(m)
		f.Add(b, uint16(100), uint8(0))
	}
	rep, _ := EncodeFrame(&GetReply{Length: 100})
	f.Add(append(rep, make([]byte, 100)...), uint16(100), uint8(0))
	rep, _ = EncodeFrame(&GetReply{Length: 1 << 40})
	f.Add(rep, uint16(100), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, size uint16, req uint8) {
		reqs := []MsgType{TypeGetRequest, TypePutRequest, TypeStatRequest, TypeDeleteRequest, TypeChallengeRequest,
			TypeRegisterRequest, TypeHeartbeat, TypeLiveRequest, TypeDamageReport, TypePlacementRequest,
			TypeCommitRequest, TypeSegmentRequest, TypeHealthRequest, TypeBalanceRequest, TypeSnapshotGetRequest}
		rt := reqs[int(req)%len(reqs)]
		r := &countingReader{r: bytes.NewReader(b)}
		if rt == TypeGetRequest {
			g := &GetRequest{Ticket: SignedTicket{Ticket: Ticket{Size: int64(size)}}}
			n, err := CheckGetReply(r, g)
			if err == nil && n != uint64(size) {
				t.Fatalf("accepted %d bytes for a %d-byte ticket", n, size)
			}
			if r.n > HeaderSize+MaxControlBody {
				t.Fatalf("read %d bytes of a get reply", r.n)
			}
			return
		}
		m, err := readReply(r, ReplyType(rt))
		if err != nil {
			var re *RemoteError
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.EOF) && !errors.As(err, &re) {
				t.Fatalf("reply to %s: %v", TypeName(rt), err)
			}
			if r.n > HeaderSize+max(BodyLimit(ReplyType(rt)), BodyLimit(TypeError)) {
				t.Fatalf("read %d bytes of a refused reply", r.n)
			}
			return
		}
		if m.Type() != ReplyType(rt) {
			t.Fatalf("reply to %s: got %s", TypeName(rt), TypeName(m.Type()))
		}
	})
}

// Buckets outlive their connections until refilled (reconnecting buys no
// fresh burst), and unused refilled ones are swept so that many identities
// cannot grow the limiter without bound.
func TestLimiterBucketsAreBounded(t *testing.T) {
	l := newLimiter(Config{RequestRate: 10, RequestBurst: 10, IPRequestRate: 100, IPRequestBurst: 100}.withDefaults())
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	ip := netip.MustParseAddr("127.0.0.9")
	var peer NodeID
	release := l.attach(peer, ip)
	for range 10 {
		if !l.allow(peer, ip) {
			t.Fatal("within the burst: refused")
		}
	}
	release()
	l.attach(peer, ip) // reconnect: same, empty bucket
	if l.allow(peer, ip) {
		t.Fatal("a reconnect got a fresh burst")
	}
	now = now.Add(time.Second)
	if !l.allow(peer, ip) {
		t.Fatal("refilled bucket refused")
	}
	for i := range 5000 {
		var p NodeID
		binary.BigEndian.PutUint32(p[:], uint32(i+1))
		l.attach(p, ip)()
		l.allow(p, ip)
		now = now.Add(10 * time.Millisecond)
	}
	if n := len(l.peers); n > 2*sweepAt+200 {
		t.Fatalf("%d buckets kept for 5000 identities that came and went", n)
	}
}
