package testplanet

import fnet "github.com/fincrypt/fincrypt/net"

// Address is the mediator's NODEID@host:port; it stays the same across
// StopMediator and RestartMediator.
func (m *Mediator) Address() fnet.Address { return m.address }
