package mediator

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	fnet "github.com/fincrypt/fincrypt/net"
)

// transportNodes is the NodeClient over QUIC. It keeps one connection per
// node and dials again when a connection has closed.
type transportNodes struct {
	tr    *fnet.Transport
	mu    sync.Mutex
	conns map[fnet.NodeID]*fnet.Conn
}

func newTransportNodes(tr *fnet.Transport) *transportNodes {
	return &transportNodes{tr: tr, conns: map[fnet.NodeID]*fnet.Conn{}}
}

func (t *transportNodes) conn(ctx context.Context, addr fnet.Address) (*fnet.Conn, error) {
	t.mu.Lock()
	c := t.conns[addr.ID]
	t.mu.Unlock()
	if c != nil && c.Context().Err() == nil {
		return c, nil
	}
	c, err := t.tr.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.conns[addr.ID]; cur != nil && cur.Context().Err() == nil {
		c.Close() // another call dialled meanwhile: share its connection
		return cur, nil
	}
	t.conns[addr.ID] = c
	return c, nil
}

// drop forgets a connection after a transport error, so that the next call
// dials again (the node may have restarted on the same address).
func (t *transportNodes) drop(id fnet.NodeID, c *fnet.Conn) {
	t.mu.Lock()
	if t.conns[id] == c {
		delete(t.conns, id)
	}
	t.mu.Unlock()
	c.Close()
}

// call runs fn on a connection to addr, dropping the connection if fn fails
// with anything but a remote error.
func (t *transportNodes) call(ctx context.Context, addr fnet.Address, fn func(*fnet.Conn) error) error {
	c, err := t.conn(ctx, addr)
	if err != nil {
		return err
	}
	err = fn(c)
	if err != nil {
		var re *fnet.RemoteError
		if !asRemote(err, &re) {
			t.drop(addr.ID, c)
		}
	}
	return err
}

func (t *transportNodes) Challenge(ctx context.Context, addr fnet.Address, req *fnet.ChallengeRequest) (*fnet.ChallengeResponse, error) {
	var resp *fnet.ChallengeResponse
	err := t.call(ctx, addr, func(c *fnet.Conn) error {
		var err error
		resp, err = fnet.CallFor[*fnet.ChallengeResponse](ctx, c, req)
		return err
	})
	return resp, err
}

func (t *transportNodes) Get(ctx context.Context, addr fnet.Address, tk fnet.SignedTicket) ([]byte, error) {
	var data []byte
	err := t.call(ctx, addr, func(c *fnet.Conn) error {
		r, n, err := c.Get(ctx, &fnet.GetRequest{Piece: tk.Piece, Ticket: tk})
		if err != nil {
			return err
		}
		defer r.Close()
		if n != tk.Size {
			return fmt.Errorf("get %s: node sends %d bytes, contract says %d", tk.Piece, n, tk.Size)
		}
		data, err = io.ReadAll(r)
		return err
	})
	return data, err
}

func (t *transportNodes) Put(ctx context.Context, addr fnet.Address, tk fnet.SignedTicket, data []byte) error {
	return t.call(ctx, addr, func(c *fnet.Conn) error {
		return c.Put(ctx, &fnet.PutRequest{Piece: tk.Piece, Ticket: tk}, bytes.NewReader(data))
	})
}

func (t *transportNodes) Delete(ctx context.Context, addr fnet.Address, tk fnet.SignedTicket) error {
	return t.call(ctx, addr, func(c *fnet.Conn) error {
		_, err := fnet.CallFor[*fnet.DeleteReply](ctx, c, &fnet.DeleteRequest{Piece: tk.Piece, Ticket: tk})
		return err
	})
}

func (t *transportNodes) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, c := range t.conns {
		c.Close()
		delete(t.conns, id)
	}
}
