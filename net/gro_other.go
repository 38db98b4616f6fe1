//go:build !linux

package net

import stdnet "net"

// withGRO is c itself: UDP_GRO is Linux's.
func withGRO(c *stdnet.UDPConn) stdnet.PacketConn { return c }
