package net

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/fincrypt/fincrypt/challenge"
)

// onlyReader hides a reader's other methods (WriteTo, Len): Put must copy
// from it the generic way.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// Put sends exactly the ticket's size of bytes, whether the data is a
// bytes.Reader of that size (written to the stream in one go), a longer
// one or any other reader; data that ends short fails without a reply
// being taken for success.
func TestPutSendsExactlyTheTicketsBytes(t *testing.T) {
	got := make(chan []byte, 1)
	srv := startServer(t, HandlerFunc(func(ctx context.Context, _ NodeID, s *quic.Stream) {
		m, err := ReadMessageOf(s, OneOf(TypePutRequest))
		if err != nil {
			t.Errorf("request: %v", err)
			got <- nil
			return
		}
		req := m.(*PutRequest)
		body, err := io.ReadAll(io.LimitReader(s, req.Ticket.Size+1))
		if err != nil || int64(len(body)) != req.Ticket.Size {
			s.CancelWrite(StreamCancelled)
			got <- body
			return
		}
		got <- body
		WriteMessage(s, &PutReply{})
		s.Close()
	}))
	ctx, c := dialServer(t, srv, 30*time.Second)
	piece := make([]byte, 3<<20+17) // several packets' and copy buffers' worth, not a multiple of either
	for i := range piece {
		piece[i] = byte(i*31 + i>>9)
	}
	size := int64(len(piece))
	for _, tc := range []struct {
		name string
		data io.Reader
	}{
		{"bytes.Reader of the size", bytes.NewReader(piece)},
		{"longer bytes.Reader", bytes.NewReader(append(append([]byte{}, piece...), "trailing bytes not to send"...))},
		{"plain reader", onlyReader{bytes.NewReader(piece)}},
	} {
		req := &PutRequest{Ticket: SignedTicket{Ticket: Ticket{Op: OpPut, Size: size}}}
		if err := c.Put(ctx, req, tc.data); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if body := <-got; !bytes.Equal(body, piece) {
			t.Fatalf("%s: node received %d bytes, not the piece's %d", tc.name, len(body), size)
		}
	}
	req := &PutRequest{Ticket: SignedTicket{Ticket: Ticket{Op: OpPut, Size: size}}}
	err := c.Put(ctx, req, bytes.NewReader(piece[:size-1]))
	if err == nil || !strings.Contains(err.Error(), "data ended") {
		t.Fatalf("short data: %v", err)
	}
}

// A node may answer a put before reading its bytes: a refusal comes back as
// the node's error (ErrFull), and a PutReply (it already holds the piece)
// is success, even though the upload itself was cut off.
func TestPutEarlyReplies(t *testing.T) {
	srv := startServer(t, HandlerFunc(func(ctx context.Context, _ NodeID, s *quic.Stream) {
		m, err := ReadMessageOf(s, OneOf(TypePutRequest))
		if err != nil {
			t.Errorf("request: %v", err)
			return
		}
		if m.(*PutRequest).Piece[0] == 1 {
			WriteMessage(s, &ErrorReply{Code: CodeFull, Message: "no room"})
		} else {
			WriteMessage(s, &PutReply{})
		}
		// Returning cancels the stream's read side: the client's
		// remaining bytes are refused.
	}))
	ctx, c := dialServer(t, srv, 60*time.Second)
	// More than the stream's initial flow-control window: the node's
	// refusal to read cuts the upload off.
	const size = 6 << 20
	for _, data := range []func() io.Reader{
		func() io.Reader { return bytes.NewReader(make([]byte, size)) },
		func() io.Reader { return onlyReader{bytes.NewReader(make([]byte, size))} },
	} {
		req := &PutRequest{Piece: challenge.PieceID{1}, Ticket: SignedTicket{Ticket: Ticket{Op: OpPut, Size: size}}}
		if err := c.Put(ctx, req, data()); !errors.Is(err, ErrFull) {
			t.Fatalf("a node that is full: %v, want ErrFull", err)
		}
		req.Piece[0] = 2
		if err := c.Put(ctx, req, data()); err != nil {
			t.Fatalf("a node that already holds the piece: %v", err)
		}
	}
}
