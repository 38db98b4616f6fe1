package net

import (
	"encoding/binary"
	stdnet "net"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// groConn is a UDP socket with generic receive offload (UDP_GRO): the
// kernel hands over a run of a peer's packets of one size as one
// datagram, and ReadBatch, which quic-go uses to read its packets,
// splits them again. A piece's packets reach a node as GSO runs of up to
// 14 (quic-go's 20 KiB send batches); without GRO the kernel cuts each run
// into packets before queueing them (on loopback in the sender's sendmsg),
// and the node reads them back 8 at a time. With it, one skb a run and one
// slot of a read.
//
// quic-go reads from one goroutine; mu only guards against a second.
type groConn struct {
	*stdnet.UDPConn
	pc *ipv4.PacketConn

	mu   sync.Mutex
	msgs []ipv4.Message // groBatch datagrams of up to groBufSize bytes
	// The datagrams of the last read not yet handed out: msgs[next:n],
	// the one at next from byte off.
	next, n, off int
	seg          int // the segment size of msgs[next] (its length without GRO)
}

// groBatch datagrams are read at a time; each holds at most a UDP
// datagram's 64 KiB.
const (
	groBatch   = 8
	groBufSize = 1 << 16
	groOOBSize = 128 // quic-go's own: room for TOS, PKTINFO and GRO
)

// withGRO turns on UDP_GRO on c and returns c wrapped so that quic-go
// reads single packets from it, or c itself where the kernel refuses.
func withGRO(c *stdnet.UDPConn) stdnet.PacketConn {
	rc, err := c.SyscallConn()
	if err != nil {
		return c
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		return c
	}
	g := &groConn{UDPConn: c, pc: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, groBatch)}
	for i := range g.msgs {
		g.msgs[i].Buffers = [][]byte{make([]byte, groBufSize)}
		g.msgs[i].OOB = make([]byte, groOOBSize)
	}
	return g
}

// ReadBatch fills ms with the next packets, one packet a message, each
// with its datagram's address and control messages (ECN, packet info).
// It reads from the socket only when the last read's packets are all
// handed out, so it returns at most the packets of one read.
func (g *groConn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.next >= g.n {
		n, err := g.pc.ReadBatch(g.msgs, flags)
		if n == 0 || err != nil {
			return 0, err
		}
		g.next, g.n, g.off = 0, n, 0
		g.seg = segSize(&g.msgs[0])
	}
	i := 0
	for i < len(ms) && g.next < g.n {
		src := &g.msgs[g.next]
		end := min(g.off+g.seg, src.N)
		dst := &ms[i]
		dst.N = copy(dst.Buffers[0], src.Buffers[0][g.off:end])
		dst.NN = copy(dst.OOB, src.OOB[:src.NN])
		dst.Flags = src.Flags
		if end-g.off > len(dst.Buffers[0]) {
			dst.Flags |= unix.MSG_TRUNC // quic-go drops what it cannot decrypt
		}
		dst.Addr = src.Addr
		i++
		g.off = end
		if g.off >= src.N {
			g.next++
			g.off = 0
			if g.next < g.n {
				g.seg = segSize(&g.msgs[g.next])
			}
		}
	}
	return i, nil
}

// segSize is the size of the packets a datagram read with GRO holds: its
// UDP_GRO control message, or, without one, the whole datagram.
func segSize(m *ipv4.Message) int {
	oob := m.OOB[:m.NN]
	for len(oob) > 0 {
		h, body, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && len(body) >= 4 {
			if s := int(binary.NativeEndian.Uint32(body)); s > 0 {
				return s
			}
		}
		oob = rest
	}
	return max(m.N, 1)
}
