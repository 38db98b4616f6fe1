package net

import (
	"context"
	"errors"
	"fmt"
	stdnet "net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Defaults of the listening side's limits (Config). They bound what peers
// that have not yet shown a ticket or a registration can make a daemon
// hold: every check here runs before a request is read, let alone before
// a signature is verified.
const (
	DefaultMaxConns       = 4096
	DefaultMaxConnsPerIP  = 64
	DefaultRequestRate    = 500 // requests per second per peer identity
	DefaultRequestBurst   = 1000
	DefaultIPRequestRate  = 2000 // requests per second per source address
	DefaultIPRequestBurst = 4000
)

// ErrConnLimit is the reason a connection is refused at a connection cap.
var ErrConnLimit = errors.New("connection limit reached")

// TransportStats counts what the listening side's limits did.
type TransportStats struct {
	Conns        int    // incoming connections open (handshakes included)
	RefusedConns uint64 // connections refused at MaxConns or MaxConnsPerIP
	Throttled    uint64 // requests answered "busy" by the request rate limits
}

// bucket is a token bucket: rate tokens a second up to burst.
type bucket struct {
	tokens float64
	last   time.Time
	refs   int // connections using it; it is dropped at zero
}

func (b *bucket) take(now time.Time, rate, burst float64) bool {
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// limiter enforces the connection caps and the request rates of one
// Transport.
type limiter struct {
	cfg Config
	now func() time.Time

	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
	peers map[NodeID]*bucket
	ips   map[netip.Addr]*bucket

	refused   atomic.Uint64
	throttled atomic.Uint64
}

func newLimiter(cfg Config) *limiter {
	return &limiter{cfg: cfg, now: time.Now, perIP: map[netip.Addr]int{},
		peers: map[NodeID]*bucket{}, ips: map[netip.Addr]*bucket{}}
}

func addrIP(a stdnet.Addr) netip.Addr {
	if ua, ok := a.(*stdnet.UDPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ua.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// connContext is quic.Transport.ConnContext: it admits a new incoming
// connection (from its first packet, before the handshake) under the caps
// and releases its place when the connection's context ends.
func (l *limiter) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	ip := addrIP(info.RemoteAddr)
	l.mu.Lock()
	if l.total >= l.cfg.MaxConns || l.perIP[ip] >= l.cfg.MaxConnsPerIP {
		l.mu.Unlock()
		l.refused.Add(1)
		l.cfg.Logger.Debug("refused connection", "remote", info.RemoteAddr, "err", ErrConnLimit)
		return nil, fmt.Errorf("%w (%s)", ErrConnLimit, ip)
	}
	l.total++
	l.perIP[ip]++
	l.mu.Unlock()
	context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.total--
		if l.perIP[ip]--; l.perIP[ip] <= 0 {
			delete(l.perIP, ip)
		}
		l.mu.Unlock()
	})
	return ctx, nil
}

// verifySource asks for QUIC address validation (a Retry round trip) once
// half of MaxConns is in use, so that spoofed source addresses cannot hold
// the remaining places.
func (l *limiter) verifySource(stdnet.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total >= l.cfg.MaxConns/2
}

// attach registers a connection's use of its peer's and address's buckets;
// the returned func releases it. A bucket outlives its connections until it
// has refilled, so that reconnecting does not buy a fresh burst.
func (l *limiter) attach(peer NodeID, ip netip.Addr) func() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweep(now)
	pb := l.peers[peer]
	if pb == nil {
		pb = &bucket{tokens: float64(l.cfg.RequestBurst), last: now}
		l.peers[peer] = pb
	}
	pb.refs++
	ib := l.ips[ip]
	if ib == nil {
		ib = &bucket{tokens: float64(l.cfg.IPRequestBurst), last: now}
		l.ips[ip] = ib
	}
	ib.refs++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		pb.refs--
		ib.refs--
	}
}

// sweep drops unused buckets that have refilled (they hold no history),
// once the maps have grown; l.mu is held.
func (l *limiter) sweep(now time.Time) {
	if len(l.peers)+len(l.ips) < 2*sweepAt {
		return
	}
	full := func(b *bucket, rate float64, burst int) bool {
		return b.refs <= 0 && (rate <= 0 || b.tokens+now.Sub(b.last).Seconds()*rate >= float64(burst))
	}
	for k, b := range l.peers {
		if full(b, l.cfg.RequestRate, l.cfg.RequestBurst) {
			delete(l.peers, k)
		}
	}
	for k, b := range l.ips {
		if full(b, l.cfg.IPRequestRate, l.cfg.IPRequestBurst) {
			delete(l.ips, k)
		}
	}
}

// sweepAt is the bucket count from which attach sweeps.
const sweepAt = 1024

// allow takes one request from the peer's and the address's buckets.
func (l *limiter) allow(peer NodeID, ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	ok := true
	if l.cfg.RequestRate > 0 {
		if b := l.peers[peer]; b != nil && !b.take(now, l.cfg.RequestRate, float64(l.cfg.RequestBurst)) {
			ok = false
		}
	}
	if ok && l.cfg.IPRequestRate > 0 {
		if b := l.ips[ip]; b != nil && !b.take(now, l.cfg.IPRequestRate, float64(l.cfg.IPRequestBurst)) {
			ok = false
		}
	}
	if !ok {
		l.throttled.Add(1)
	}
	return ok
}

// refuseBusy answers a stream over the request rate without reading it.
func refuseBusy(s *quic.Stream) {
	s.SetWriteDeadline(time.Now().Add(time.Second))
	WriteMessage(s, &ErrorReply{Code: CodeBusy, Message: "request rate limit: retry later"})
	s.Close()
	s.CancelRead(0)
}

// Stats reports the limits' counters.
func (t *Transport) Stats() TransportStats {
	t.lim.mu.Lock()
	n := t.lim.total
	t.lim.mu.Unlock()
	return TransportStats{Conns: n, RefusedConns: t.lim.refused.Load(), Throttled: t.lim.throttled.Load()}
}
