package testplanet

import (
	"net"
	"sync"
	"sync/atomic"
)

// relay forwards UDP datagrams between the peers that dial a storage node
// and the node, on loopback. A frozen relay drops everything in both ways:
// the node looks hung (connections stay open but nothing comes back), the
// fault that a node which is slow or stuck presents and that a stopped
// node (whose peers get errors at once) does not.
type relay struct {
	front  *net.UDPConn // what peers dial: the node's advertised address
	target atomic.Pointer[net.UDPAddr]
	frozen atomic.Bool

	mu    sync.Mutex
	backs map[string]*net.UDPConn // per peer address: the socket towards the node
}

// newRelay listens on ip, the node's own address (the mediator checks
// that a node is reachable at the address it connects from).
func newRelay(ip string) (*relay, error) {
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		return nil, err
	}
	r := &relay{front: front, backs: map[string]*net.UDPConn{}}
	go r.forward()
	return r, nil
}

// Addr is the address peers dial.
func (r *relay) Addr() string { return r.front.LocalAddr().String() }

// setTarget points the relay at the node's real address.
func (r *relay) setTarget(hostPort string) error {
	a, err := net.ResolveUDPAddr("udp", hostPort)
	if err != nil {
		return err
	}
	r.target.Store(a)
	return nil
}

// forward carries peers' datagrams to the node, one socket per peer so
// that the node's answers find their way back.
func (r *relay) forward() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := r.front.ReadFromUDP(buf)
		if err != nil {
			return // closed
		}
		to := r.target.Load()
		if r.frozen.Load() || to == nil {
			continue
		}
		back, err := r.backFor(from)
		if err != nil {
			continue
		}
		back.WriteToUDP(buf[:n], to)
	}
}

func (r *relay) backFor(peer *net.UDPAddr) (*net.UDPConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.backs[peer.String()]; c != nil {
		return c, nil
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	r.backs[peer.String()] = c
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				return // closed
			}
			if !r.frozen.Load() {
				r.front.WriteToUDP(buf[:n], peer)
			}
		}
	}()
	return c, nil
}

// Close stops the relay.
func (r *relay) Close() {
	r.front.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.backs {
		c.Close()
	}
}
