package net

// The listening side's limits at their edges, on the limiter itself with
// a clock of the test's own (no sockets, no sleeps): written against the
// mutants of limits.go and transport.go that lived (docs/TESTING.md).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/big"
	stdnet "net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func udpFrom(ip string, port int) *stdnet.UDPAddr {
	return &stdnet.UDPAddr{IP: stdnet.ParseIP(ip), Port: port}
}

// TestConnCapsAtTheirEdge: the cap'th connection is admitted, the next is
// refused with ErrConnLimit; a closed connection's place (and its address's
// entry) is given back.
func TestConnCapsAtTheirEdge(t *testing.T) {
	l := newLimiter(Config{MaxConns: 4, MaxConnsPerIP: 2}.withDefaults())
	admit := func(ip string, port int) (context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(context.Background())
		_, err := l.connContext(ctx, &quic.ClientInfo{RemoteAddr: udpFrom(ip, port)})
		if err != nil {
			cancel()
			return nil, err
		}
		return cancel, nil
	}
	var closes []context.CancelFunc
	for port := range 2 {
		c, err := admit("10.0.0.1", 1000+port)
		if err != nil {
			t.Fatalf("connection %d of 2 from one address: %v", port+1, err)
		}
		closes = append(closes, c)
	}
	if _, err := admit("10.0.0.1", 1002); !errors.Is(err, ErrConnLimit) {
		t.Fatalf("third connection from one address: %v, want ErrConnLimit", err)
	}
	// An IPv4-mapped IPv6 source is the same address.
	if _, err := admit("::ffff:10.0.0.1", 1003); !errors.Is(err, ErrConnLimit) {
		t.Fatalf("the same address, IPv4-mapped: %v, want ErrConnLimit", err)
	}
	for _, ip := range []string{"10.0.0.2", "10.0.0.3"} {
		c, err := admit(ip, 1)
		if err != nil {
			t.Fatalf("from %s, total %d of 4: %v", ip, l.total, err)
		}
		closes = append(closes, c)
	}
	if _, err := admit("10.0.0.4", 1); !errors.Is(err, ErrConnLimit) {
		t.Fatalf("fifth connection: %v, want ErrConnLimit", err)
	}
	if got := l.refused.Load(); got != 3 {
		t.Fatalf("refused %d, want 3", got)
	}
	// Closing every connection gives back every place and forgets the
	// addresses.
	for _, c := range closes {
		c()
	}
	waitFor(t, "every place given back", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.total == 0 && len(l.perIP) == 0
	})
	for port := range 2 {
		if _, err := admit("10.0.0.1", 2000+port); err != nil {
			t.Fatalf("after the close, connection %d from one address: %v", port+1, err)
		}
	}
}

// waitFor polls cond (the release of a place runs in its own goroutine
// when the connection's context ends) with a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 20 s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestVerifySourceFromHalfTheCap: address validation starts exactly when
// half of MaxConns is in use.
func TestVerifySourceFromHalfTheCap(t *testing.T) {
	l := newLimiter(Config{MaxConns: 6}.withDefaults())
	for total, want := range []bool{false, false, false, true, true, true} {
		l.total = total
		if got := l.verifySource(nil); got != want {
			t.Errorf("%d of 6 in use: verify %v, want %v", total, got, want)
		}
	}
}

// TestBucketAtItsEdges: a bucket refills at its rate up to its burst, and a
// request is allowed with exactly one token left.
func TestBucketAtItsEdges(t *testing.T) {
	var peer NodeID
	ip := netip.MustParseAddr("10.0.0.1")
	// emptied is a limiter (rate 2/s, burst 3, no address bucket) whose
	// peer has just spent its burst, and its clock.
	emptied := func() (*limiter, *time.Time) {
		l := newLimiter(Config{RequestRate: 2, RequestBurst: 3, IPRequestRate: -1}.withDefaults())
		now := time.Unix(5000, 0)
		l.now = func() time.Time { return now }
		l.attach(peer, ip)
		for i := range 3 {
			if !l.allow(peer, ip) {
				t.Fatalf("request %d of a burst of 3 refused", i+1)
			}
		}
		return l, &now
	}
	l, now := emptied()
	if l.allow(peer, ip) {
		t.Fatal("a fourth request within the same instant allowed")
	}
	// At 2/s one token takes 500 ms: not there at 499 ms, there at 500.
	l, now = emptied()
	*now = now.Add(499 * time.Millisecond)
	if l.allow(peer, ip) {
		t.Fatal("allowed 499 ms after the bucket emptied (rate 2/s)")
	}
	l, now = emptied()
	*now = now.Add(500 * time.Millisecond)
	if !l.allow(peer, ip) {
		t.Fatal("refused 500 ms after the bucket emptied (rate 2/s): one token is there")
	}
	if l.allow(peer, ip) {
		t.Fatal("two requests from one refilled token")
	}
	// A long pause refills to the burst, not beyond.
	*now = now.Add(time.Hour)
	for i := range 3 {
		if !l.allow(peer, ip) {
			t.Fatalf("after an hour, request %d of the burst of 3 refused", i+1)
		}
	}
	if l.allow(peer, ip) {
		t.Fatal("after an hour, more than the burst allowed")
	}
	if got := l.throttled.Load(); got != 2 {
		t.Fatalf("throttled %d, want 2", got)
	}
	// The address's bucket is disabled (negative rate): only the peer's
	// counts. Another peer from the same address has a full burst.
	var other NodeID
	other[0] = 1
	l.attach(other, ip)
	for i := range 3 {
		if !l.allow(other, ip) {
			t.Fatalf("another peer, request %d: refused", i+1)
		}
	}
	// The address's bucket holds back every peer from it.
	l = newLimiter(Config{RequestRate: -1, IPRequestRate: 2, IPRequestBurst: 2}.withDefaults())
	l.now = func() time.Time { return *now }
	l.attach(peer, ip)
	l.attach(other, ip)
	if !l.allow(peer, ip) || !l.allow(other, ip) || l.allow(peer, ip) || l.allow(other, ip) {
		t.Fatal("an address's burst of 2 over two peers: not exactly 2 allowed")
	}
	*now = now.Add(500 * time.Millisecond)
	if !l.allow(other, ip) || l.allow(peer, ip) {
		t.Fatal("the address's bucket 500 ms later (rate 2/s): not exactly 1 allowed")
	}
}

// TestSweepKeepsWhatHoldsHistory: from 2*sweepAt buckets on, attach drops
// the buckets no connection uses that have refilled to their burst, and
// only those.
func TestSweepKeepsWhatHoldsHistory(t *testing.T) {
	cfg := Config{RequestRate: 10, RequestBurst: 10, IPRequestRate: 10, IPRequestBurst: 10}.withDefaults()
	now := time.Unix(5000, 0)
	fill := func(l *limiter, n int) {
		for i := range n {
			var p NodeID
			p[0], p[1] = byte(i>>8), byte(i)
			p[2] = 0xff
			l.peers[p] = &bucket{tokens: 10, last: now}
		}
	}
	// One fewer than 2*sweepAt buckets: nothing is swept.
	l := newLimiter(cfg)
	fill(l, 2*sweepAt-1)
	l.sweep(now)
	if len(l.peers) != 2*sweepAt-1 {
		t.Fatalf("below the threshold: %d of %d buckets kept", len(l.peers), 2*sweepAt-1)
	}
	// At 2*sweepAt the full, unused ones go; these stay: one in use, one
	// 0.1 token short of full; and one that is exactly full by now goes.
	l = newLimiter(cfg)
	fill(l, 2*sweepAt-4) // with the 3 below and one address: exactly 2*sweepAt
	inUse, short, exact := NodeID{1}, NodeID{2}, NodeID{3}
	l.peers[inUse] = &bucket{tokens: 10, last: now, refs: 1}
	l.peers[short] = &bucket{tokens: 8.9, last: now.Add(-100 * time.Millisecond)}
	l.peers[exact] = &bucket{tokens: 9, last: now.Add(-100 * time.Millisecond)}
	ipShort := netip.MustParseAddr("10.0.0.1")
	l.ips[ipShort] = &bucket{tokens: 0, last: now}
	l.sweep(now)
	if _, ok := l.peers[inUse]; !ok {
		t.Error("a bucket in use was swept")
	}
	if _, ok := l.peers[short]; !ok {
		t.Error("a bucket short of its burst was swept (a reconnect would get a fresh burst)")
	}
	if _, ok := l.peers[exact]; ok {
		t.Error("a bucket refilled exactly to its burst was kept")
	}
	if _, ok := l.ips[ipShort]; !ok {
		t.Error("an address's empty bucket was swept")
	}
	if len(l.peers) != 2 {
		t.Errorf("%d peer buckets kept, want the 2 that hold history", len(l.peers))
	}
	// With a rate of 0 nothing refills: any unused bucket may go.
	l = newLimiter(cfg)
	l.cfg.RequestRate = 0
	fill(l, 2*sweepAt)
	l.peers[short] = &bucket{tokens: 0, last: now}
	l.sweep(now)
	if len(l.peers) != 0 {
		t.Errorf("rate 0: %d unused buckets kept", len(l.peers))
	}
}

// TestConfigDefaults: zero and negative settings take the documented
// defaults; a rate above the default burst's half raises its burst to two
// seconds of it.
func TestConfigDefaults(t *testing.T) {
	for _, in := range []Config{{}, {MaxIdleTimeout: -1, KeepAlivePeriod: -1, HandshakeTimeout: -1, MaxIncomingStreams: -1,
		MaxConns: -1, MaxConnsPerIP: -1, RequestBurst: -1, IPRequestBurst: -1}} {
		c := in.withDefaults()
		if c.MaxIdleTimeout != 60*time.Second || c.KeepAlivePeriod != 15*time.Second || c.HandshakeTimeout != 10*time.Second ||
			c.MaxIncomingStreams != 64 || c.MaxConns != DefaultMaxConns || c.MaxConnsPerIP != DefaultMaxConnsPerIP ||
			c.RequestRate != DefaultRequestRate || c.RequestBurst != DefaultRequestBurst ||
			c.IPRequestRate != DefaultIPRequestRate || c.IPRequestBurst != DefaultIPRequestBurst || c.Logger == nil {
			t.Errorf("defaults of %+v: %+v", in, c)
		}
	}
	set := Config{MaxIdleTimeout: 1, KeepAlivePeriod: 2, HandshakeTimeout: 3, MaxIncomingStreams: 4, MaxConns: 5,
		MaxConnsPerIP: 6, RequestRate: 7, RequestBurst: 8, IPRequestRate: 9, IPRequestBurst: 10, Logger: slog.Default()}
	if got := set.withDefaults(); got != set {
		t.Errorf("set values changed: %+v", got)
	}
	c := Config{RequestRate: 3000, IPRequestRate: 5000}.withDefaults()
	if c.RequestBurst != 6000 || c.IPRequestBurst != 10000 {
		t.Errorf("bursts for rates 3000 and 5000: %d and %d, want 6000 and 10000", c.RequestBurst, c.IPRequestBurst)
	}
	// A negative rate disables the bucket (and keeps the default burst).
	c = Config{RequestRate: -1, IPRequestRate: -1}.withDefaults()
	if c.RequestRate != -1 || c.IPRequestRate != -1 {
		t.Errorf("negative rates: %v %v", c.RequestRate, c.IPRequestRate)
	}
}

type oddAddr string

func (a oddAddr) Network() string { return "odd" }
func (a oddAddr) String() string  { return string(a) }

// TestAddrIP: the limits key a connection by its source IP (IPv4-mapped
// addresses as IPv4) whatever the kind of address; one without an IP is
// the zero address. A handler sees the same IP through RemoteIP.
func TestAddrIP(t *testing.T) {
	v4 := netip.MustParseAddr("10.1.2.3")
	for _, c := range []struct {
		a    stdnet.Addr
		want netip.Addr
	}{
		{udpFrom("10.1.2.3", 9), v4},
		{udpFrom("::ffff:10.1.2.3", 9), v4},
		{&stdnet.TCPAddr{IP: stdnet.ParseIP("10.1.2.3"), Port: 9}, v4},
		{oddAddr("[::ffff:10.1.2.3]:9"), v4},
		{oddAddr("[fd00::1]:9"), netip.MustParseAddr("fd00::1")},
		{oddAddr("no address"), netip.Addr{}},
	} {
		if got := addrIP(c.a); got != c.want {
			t.Errorf("addrIP(%s) = %v, want %v", c.a, got, c.want)
		}
	}
	if ip, ok := RemoteIP(context.Background()); ok {
		t.Errorf("outside a served stream: %v", ip)
	}
	if ip, ok := RemoteIP(WithRemoteIP(context.Background(), netip.MustParseAddr("::ffff:10.1.2.3"))); !ok || ip != v4 {
		t.Errorf("RemoteIP: %v %v, want %v", ip, ok, v4)
	}
	if ip, ok := RemoteIP(withRemote(context.Background(), oddAddr("no address"))); ok {
		t.Errorf("RemoteIP of an address without an IP: %v", ip)
	}
}

// TestPeerKey: a peer is its certificate's ed25519 key; no certificate, an
// unparsable one or one with another kind of key authenticates nobody.
func TestPeerKey(t *testing.T) {
	id := mustIdentity(t)
	cert, err := selfSigned(id)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := peerKey(cert.Certificate); err != nil || got != id.ID() {
		t.Fatalf("own certificate: %s, %v; want %s", got, err, id.ID())
	}
	if _, err := peerKey(nil); !errors.Is(err, ErrNotEd25519) {
		t.Errorf("no certificate: %v", err)
	}
	if _, err := peerKey([][]byte{[]byte("not a certificate")}); err == nil || !strings.Contains(err.Error(), "peer certificate") {
		t.Errorf("garbage: %v", err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ek.PublicKey, ek)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := peerKey([][]byte{der}); !errors.Is(err, ErrNotEd25519) {
		t.Errorf("an ECDSA certificate: %v", err)
	}
	// Only the first certificate counts.
	if got, err := peerKey([][]byte{cert.Certificate[0], der}); err != nil || got != id.ID() {
		t.Errorf("a chain: %s, %v", got, err)
	}
}

// TestSweepSparesBucketsInUse: while a peer or an address is connected its
// bucket is kept however many others come and go (else its next requests
// would find no bucket and go unlimited); once they have all gone, the
// buckets of addresses are swept like those of peers.
func TestSweepSparesBucketsInUse(t *testing.T) {
	for _, perIP := range []bool{false, true} {
		cfg := Config{RequestRate: 1, RequestBurst: 3, IPRequestRate: -1}
		if perIP {
			cfg = Config{RequestRate: -1, IPRequestRate: 1, IPRequestBurst: 3}
		}
		l := newLimiter(cfg.withDefaults())
		now := time.Unix(5000, 0)
		l.now = func() time.Time { return now }
		held, heldIP := NodeID{0xee}, netip.MustParseAddr("10.9.9.9")
		release := l.attach(held, heldIP)
		now = now.Add(time.Hour) // its bucket is full: only its use keeps it
		for i := range 3 * sweepAt {
			var p NodeID
			binary.BigEndian.PutUint32(p[:], uint32(i+1))
			ip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
			l.attach(p, ip)()
			now = now.Add(time.Millisecond)
		}
		for i := range 3 {
			if !l.allow(held, heldIP) {
				t.Fatalf("per address %v: request %d of the burst of 3 refused", perIP, i+1)
			}
		}
		if l.allow(held, heldIP) {
			t.Fatalf("per address %v: a connected peer's bucket was swept: a fourth request allowed", perIP)
		}
		release()
		if n := len(l.peers) + len(l.ips); n > 2*sweepAt+2 {
			t.Fatalf("per address %v: %d buckets kept for %d peers and addresses that came and went", perIP, n, 3*sweepAt)
		}
	}
}

// TestServeReturnsNilOnShutdown: Serve ends without an error when its
// context is cancelled or its transport closed (the daemons report any
// other error as a failure), and a dialer has nothing to accept.
func TestServeReturnsNilOnShutdown(t *testing.T) {
	for _, byClose := range []bool{false, true} {
		srv, err := Listen(mustIdentity(t), "127.0.0.1:0", Config{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, echo) }()
		// A served call first, so that Serve is running.
		cli := dialerAt(t, "127.0.0.1:0")
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := cli.Dial(cctx, srv.Address())
		if err == nil {
			_, err = CallFor[*HeartbeatReply](cctx, c, &Heartbeat{Pieces: 1})
		}
		ccancel()
		if err != nil {
			t.Fatal(err)
		}
		if byClose {
			srv.Close()
		} else {
			cancel()
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve after the %s: %v, want nil", map[bool]string{true: "transport closed", false: "context cancelled"}[byClose], err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Serve did not return within 30 s")
		}
		cancel()
		srv.Close()
	}
	d := dialerAt(t, "127.0.0.1:0")
	if _, err := d.Accept(context.Background()); err == nil {
		t.Error("a dialer accepted a connection")
	}
}

// TestNoUnidirectionalStreams: no side reads unidirectional streams, so a
// peer may not open any (they would sit unread).
func TestNoUnidirectionalStreams(t *testing.T) {
	srv := listenWith(t, Config{}, echo)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := dialerAt(t, "127.0.0.1:0").Dial(ctx, srv.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := CallFor[*HeartbeatReply](ctx, c, &Heartbeat{Pieces: 1}); err != nil {
		t.Fatal(err)
	}
	if s, err := c.qc.OpenUniStream(); err == nil {
		s.Close()
		t.Fatal("opened a unidirectional stream to a node")
	}
}
