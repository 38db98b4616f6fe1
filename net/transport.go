package net

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	stdnet "net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// ALPN is the TLS application protocol of every Fincrypt connection.
const ALPN = "fincrypt/1"

// Sentinel errors of the transport.
var (
	ErrPeerMismatch = errors.New("peer's key does not match the node id dialled")
	ErrNotEd25519   = errors.New("peer certificate does not carry an ed25519 key")
)

// Config tunes QUIC. Zero fields take the defaults below.
type Config struct {
	// MaxIdleTimeout closes a connection without any traffic (default 60s).
	MaxIdleTimeout time.Duration
	// KeepAlivePeriod sends a PING on an otherwise idle connection so that
	// long-lived connections (node -> mediator) survive NATs (default 15s).
	KeepAlivePeriod time.Duration
	// HandshakeTimeout bounds the TLS handshake (default 10s).
	HandshakeTimeout time.Duration
	// MaxIncomingStreams bounds concurrent requests per connection (default 64).
	MaxIncomingStreams int64
	// MaxConns bounds the incoming connections open at once, handshakes
	// included (default DefaultMaxConns); MaxConnsPerIP bounds those from
	// one source address (default DefaultMaxConnsPerIP). A connection over
	// either is refused at its first packet.
	MaxConns      int
	MaxConnsPerIP int
	// RequestRate is the requests a second one peer identity may start on
	// this side, over all its connections, with bursts of RequestBurst
	// (defaults DefaultRequestRate, DefaultRequestBurst); IPRequestRate and
	// IPRequestBurst do the same per source address. A request over the
	// rate is answered CodeBusy without being read. Negative disables.
	RequestRate    float64
	RequestBurst   int
	IPRequestRate  float64
	IPRequestBurst int
	// NoGRO reads packets from the socket one at a time, as quic-go does
	// on a socket of its own, instead of with UDP generic receive offload
	// (withGRO): for comparisons. Where the kernel has no UDP_GRO the
	// transport reads without it anyway.
	NoGRO bool
	// Logger, or slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxIdleTimeout <= 0 {
		c.MaxIdleTimeout = 60 * time.Second
	}
	if c.KeepAlivePeriod <= 0 {
		c.KeepAlivePeriod = 15 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.MaxIncomingStreams <= 0 {
		c.MaxIncomingStreams = 64
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxConnsPerIP <= 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.RequestRate == 0 {
		c.RequestRate = DefaultRequestRate
	}
	if c.RequestBurst <= 0 {
		c.RequestBurst = max(DefaultRequestBurst, int(2*c.RequestRate))
	}
	if c.IPRequestRate == 0 {
		c.IPRequestRate = DefaultIPRequestRate
	}
	if c.IPRequestBurst <= 0 {
		c.IPRequestBurst = max(DefaultIPRequestBurst, int(2*c.IPRequestRate))
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) quic() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           c.HandshakeTimeout,
		MaxIdleTimeout:                 c.MaxIdleTimeout,
		KeepAlivePeriod:                c.KeepAlivePeriod,
		MaxIncomingStreams:             c.MaxIncomingStreams,
		MaxIncomingUniStreams:          -1, // unidirectional streams are not used
		InitialStreamReceiveWindow:     1 << 20,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 2 << 20,
		MaxConnectionReceiveWindow:     32 << 20,
	}
}

// Transport is one UDP socket that both accepts connections (when made by
// Listen) and dials others: a mediator serves registrations and dials nodes
// for challenges over the same Transport.
type Transport struct {
	id   *Identity
	cfg  Config
	udp  *stdnet.UDPConn
	tr   *quic.Transport
	ln   *quic.Listener
	cert tls.Certificate
	lim  *limiter
	once sync.Once
}

// Listen binds hostport (port 0 picks a free port) and accepts connections.
func Listen(id *Identity, hostport string, cfg Config) (*Transport, error) {
	return newTransport(id, hostport, true, cfg)
}

// NewDialer makes a Transport that only dials (clients).
func NewDialer(id *Identity, cfg Config) (*Transport, error) {
	return newTransport(id, ":0", false, cfg)
}

// NewDialerAt is NewDialer bound to hostport (a source address of its
// own, as tests on loopback use to stand for another network).
func NewDialerAt(id *Identity, hostport string, cfg Config) (*Transport, error) {
	return newTransport(id, hostport, false, cfg)
}

func newTransport(id *Identity, hostport string, listen bool, cfg Config) (*Transport, error) {
	cfg = cfg.withDefaults()
	cert, err := selfSigned(id)
	if err != nil {
		return nil, err
	}
	ua, err := stdnet.ResolveUDPAddr("udp", hostport)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", hostport, err)
	}
	udp, err := stdnet.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", hostport, err)
	}
	resetKey := id.statelessResetKey()
	var pc stdnet.PacketConn = udp
	if !cfg.NoGRO {
		pc = withGRO(udp)
	}
	t := &Transport{id: id, cfg: cfg, udp: udp, tr: &quic.Transport{Conn: pc, StatelessResetKey: &resetKey}, cert: cert,
		lim: newLimiter(cfg)}
	if listen {
		t.tr.ConnContext = t.lim.connContext
		t.tr.VerifySourceAddress = t.lim.verifySource
		t.ln, err = t.tr.Listen(t.serverTLS(), cfg.quic())
		if err != nil {
			t.tr.Close()
			udp.Close()
			return nil, fmt.Errorf("listen %s: %w", hostport, err)
		}
	}
	return t, nil
}

// Identity is the transport's own identity.
func (t *Transport) Identity() *Identity { return t.id }

// Addr is the bound UDP address.
func (t *Transport) Addr() *stdnet.UDPAddr { return t.udp.LocalAddr().(*stdnet.UDPAddr) }

// Address is this transport's NODEID@host:port, with the bound port.
func (t *Transport) Address() Address {
	return Address{ID: t.id.ID(), HostPort: t.Addr().String()}
}

// Close stops listening and closes every connection.
func (t *Transport) Close() error {
	var err error
	t.once.Do(func() {
		if t.ln != nil {
			t.ln.Close()
		}
		err = t.tr.Close()
		t.udp.Close()
	})
	return err
}

func selfSigned(id *Identity) (tls.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: id.ID().String()},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, id.priv.Public(), id.priv)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: id.priv}, nil
}

// peerKey returns the ed25519 key of the first raw certificate. TLS 1.3's
// CertificateVerify proves the peer holds the matching private key, so the
// key alone is the identity; the certificate's other fields are ignored.
func peerKey(raw [][]byte) (NodeID, error) {
	if len(raw) == 0 {
		return NodeID{}, ErrNotEd25519
	}
	c, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return NodeID{}, fmt.Errorf("peer certificate: %w", err)
	}
	pk, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok || len(pk) != NodeIDSize {
		return NodeID{}, ErrNotEd25519
	}
	return NodeID(pk), nil
}

func (t *Transport) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{t.cert},
		NextProtos:         []string{ALPN},
		ClientAuth:         tls.RequireAnyClientCert,
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := peerKey(raw)
			return err
		},
	}
}

func (t *Transport) clientTLS(want NodeID) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{t.cert},
		NextProtos:         []string{ALPN},
		ServerName:         "fincrypt",
		InsecureSkipVerify: true, // replaced by pinning below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			got, err := peerKey(raw)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("%w: got %s, want %s", ErrPeerMismatch, got, want)
			}
			return nil
		},
	}
}

// Conn is an authenticated connection; Peer is the other side's node id.
type Conn struct {
	qc   *quic.Conn
	peer NodeID
}

func newConn(qc *quic.Conn) (*Conn, error) {
	st := qc.ConnectionState().TLS
	if st.NegotiatedProtocol != ALPN {
		qc.CloseWithError(1, "wrong ALPN")
		return nil, fmt.Errorf("peer %s: ALPN %q, want %q", qc.RemoteAddr(), st.NegotiatedProtocol, ALPN)
	}
	var raw [][]byte
	for _, c := range st.PeerCertificates {
		raw = append(raw, c.Raw)
	}
	id, err := peerKey(raw)
	if err != nil {
		qc.CloseWithError(1, "bad certificate")
		return nil, err
	}
	return &Conn{qc: qc, peer: id}, nil
}

// Dial connects to addr and checks that the peer holds addr.ID's key.
func (t *Transport) Dial(ctx context.Context, addr Address) (*Conn, error) {
	ua, err := stdnet.ResolveUDPAddr("udp", addr.HostPort)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	qc, err := t.tr.Dial(ctx, ua, t.clientTLS(addr.ID), t.cfg.quic())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c, err := newConn(qc)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if c.peer != addr.ID {
		c.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, ErrPeerMismatch)
	}
	return c, nil
}

// Accept waits for the next authenticated connection.
func (t *Transport) Accept(ctx context.Context) (*Conn, error) {
	if t.ln == nil {
		return nil, errors.New("transport does not listen")
	}
	for {
		qc, err := t.ln.Accept(ctx)
		if err != nil {
			return nil, err
		}
		c, err := newConn(qc)
		if err != nil {
			t.cfg.Logger.Debug("refused connection", "remote", qc.RemoteAddr(), "err", err)
			continue
		}
		return c, nil
	}
}

// Peer is the authenticated node id of the other side.
func (c *Conn) Peer() NodeID { return c.peer }

// RemoteAddr is the peer's UDP address.
func (c *Conn) RemoteAddr() stdnet.Addr { return c.qc.RemoteAddr() }

// Context is done when the connection closes.
func (c *Conn) Context() context.Context { return c.qc.Context() }

// OpenStream opens a bidirectional stream for one request; ctx bounds the
// wait at the peer's stream limit.
func (c *Conn) OpenStream(ctx context.Context) (*quic.Stream, error) {
	return c.qc.OpenStreamSync(ctx)
}

// AcceptStream waits for the peer's next stream.
func (c *Conn) AcceptStream(ctx context.Context) (*quic.Stream, error) {
	return c.qc.AcceptStream(ctx)
}

// Close closes the connection.
func (c *Conn) Close() error { return c.qc.CloseWithError(0, "") }

// Handler serves one request stream. peer is authenticated. The stream is
// closed (and its read side cancelled) after HandleStream returns.
type Handler interface {
	HandleStream(ctx context.Context, peer NodeID, s *quic.Stream)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, peer NodeID, s *quic.Stream)

// HandleStream implements Handler.
func (f HandlerFunc) HandleStream(ctx context.Context, peer NodeID, s *quic.Stream) {
	f(ctx, peer, s)
}

// Serve accepts connections and streams until ctx is done or the transport
// is closed, running h for each stream in its own goroutine. A misbehaving
// peer affects only its own streams.
func (t *Transport) Serve(ctx context.Context, h Handler) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := t.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, quic.ErrServerClosed) || errors.Is(err, quic.ErrTransportClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.serveConn(ctx, c, h)
		}()
	}
}

// ServeConn runs h for each stream the peer opens on c until it closes.
func (t *Transport) serveConn(ctx context.Context, c *Conn, h Handler) {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { c.qc.CloseWithError(0, "shutting down") })
	defer stop()
	ip := addrIP(c.RemoteAddr())
	defer t.lim.attach(c.peer, ip)()
	for {
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		if !t.lim.allow(c.peer, ip) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				refuseBusy(s)
			}()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.CancelRead(0)
			defer s.Close()
			h.HandleStream(withRemote(ctx, c.RemoteAddr()), c.peer, s)
		}()
	}
}

// ServeConn runs h on the streams of one connection (e.g. a connection this
// side dialled, on which the peer also opens streams).
func (t *Transport) ServeConn(ctx context.Context, c *Conn, h Handler) { t.serveConn(ctx, c, h) }

func splitHostPort(hp string) (string, string, error) { return stdnet.SplitHostPort(hp) }

type remoteKey struct{}

func withRemote(ctx context.Context, a stdnet.Addr) context.Context {
	return context.WithValue(ctx, remoteKey{}, a)
}

// RemoteIP is the IP address that the connection of the stream being
// served comes from (Handler), and false outside a served stream.
func RemoteIP(ctx context.Context) (netip.Addr, bool) {
	a, _ := ctx.Value(remoteKey{}).(stdnet.Addr)
	if a == nil {
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// WithRemoteIP returns ctx as a Handler sees it for a connection from ip
// (tests that call a handler's logic directly).
func WithRemoteIP(ctx context.Context, ip netip.Addr) context.Context {
	return withRemote(ctx, stdnet.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
}
