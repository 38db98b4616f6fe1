package net

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/quic-go/quic-go"
)

// Stream error codes used when a side abandons a stream.
const (
	StreamCancelled quic.StreamErrorCode = 1
)

// openRequest opens a stream bound to ctx: its deadline becomes the
// stream's, and cancelling ctx cancels the stream. The returned stop must
// be called when the stream is done.
func (c *Conn) openRequest(ctx context.Context) (*quic.Stream, func(), error) {
	s, err := c.OpenStream(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open stream to %s: %w", c.peer, err)
	}
	if d, ok := ctx.Deadline(); ok {
		s.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() {
		s.CancelRead(StreamCancelled)
		s.CancelWrite(StreamCancelled)
	})
	return s, func() { stop() }, nil
}

// readReply reads one reply of type want (or an ErrorReply, which it turns
// into a *RemoteError); any other type is refused before its body is read,
// so that a peer cannot make this side read a body of another type's limit.
func readReply(s io.Reader, want MsgType) (Message, error) {
	m, err := ReadMessageOf(s, OneOf(want, TypeError))
	if err != nil {
		return nil, fmt.Errorf("reply: %w", err)
	}
	if e, ok := m.(*ErrorReply); ok {
		return nil, &RemoteError{Code: e.Code, Message: e.Message}
	}
	return m, nil
}

func expect[T Message](m Message, err error) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	t, ok := m.(T)
	if !ok {
		return zero, fmt.Errorf("%w: unexpected reply %s", ErrMalformed, m.Type())
	}
	return t, nil
}

// Call sends one request on its own stream and returns the reply. An
// ErrorReply comes back as a *RemoteError.
func (c *Conn) Call(ctx context.Context, req Message) (Message, error) {
	s, stop, err := c.openRequest(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()
	defer s.CancelRead(StreamCancelled)
	if err := WriteMessage(s, req); err != nil {
		s.CancelWrite(StreamCancelled)
		return nil, fmt.Errorf("%s to %s: %w", req.Type(), c.peer, err)
	}
	s.Close()
	m, err := readReply(s, ReplyType(req.Type()))
	if err != nil {
		return nil, fmt.Errorf("%s to %s: %w", req.Type(), c.peer, err)
	}
	return m, nil
}

// CallFor is Call expecting a reply of type T.
func CallFor[T Message](ctx context.Context, c *Conn, req Message) (T, error) {
	return expect[T](c.Call(ctx, req))
}

// Put uploads req.Ticket.Size bytes read from data.
func (c *Conn) Put(ctx context.Context, req *PutRequest, data io.Reader) error {
	s, stop, err := c.openRequest(ctx)
	if err != nil {
		return err
	}
	defer stop()
	defer s.CancelRead(StreamCancelled)
	werr := WriteMessage(s, req)
	if werr == nil {
		var n int64
		if br, ok := data.(*bytes.Reader); ok && int64(br.Len()) == req.Ticket.Size {
			// A piece in memory goes to the stream in one Write: quic-go
			// packs its frames straight from it, with no 32 KiB copies in
			// between and full packets up to the last.
			n, werr = br.WriteTo(s)
		} else {
			n, werr = io.CopyN(s, data, req.Ticket.Size)
		}
		if werr != nil && n < req.Ticket.Size {
			if errors.Is(werr, io.EOF) {
				werr = fmt.Errorf("data ended after %d of %d bytes", n, req.Ticket.Size)
			}
		}
	}
	if werr != nil {
		s.CancelWrite(StreamCancelled)
		// The node may have refused early; its reply says why.
		s.SetReadDeadline(time.Now().Add(2 * time.Second))
		m, rerr := readReply(s, TypePutReply)
		var re *RemoteError
		if errors.As(rerr, &re) {
			return fmt.Errorf("put %s: %w", req.Piece, re)
		}
		if _, ok := m.(*PutReply); ok && rerr == nil {
			return nil // the node already held the piece and stopped reading
		}
		return fmt.Errorf("put %s: %w", req.Piece, werr)
	}
	s.Close()
	if _, err := expect[*PutReply](readReply(s, TypePutReply)); err != nil {
		return fmt.Errorf("put %s: %w", req.Piece, err)
	}
	return nil
}

// ErrReplyLength means a node announced another number of bytes than the
// request asked for: the reply is refused before any of them is read.
var ErrReplyLength = fmt.Errorf("%w: reply length", ErrMalformed)

// WantLength is the number of bytes a GetRequest asks for: Length, or
// with Length 0 the ticket's piece size less Offset. A reply announcing
// anything else is refused (CheckGetReply).
func (m *GetRequest) WantLength() (uint64, error) {
	size := uint64(max(m.Ticket.Size, 0))
	if m.Offset > size {
		return 0, fmt.Errorf("%w: offset %d beyond the ticket's %d bytes", ErrBadRequest, m.Offset, size)
	}
	if m.Length == 0 {
		return size - m.Offset, nil
	}
	if m.Length > size-m.Offset {
		return 0, fmt.Errorf("%w: range %d+%d beyond the ticket's %d bytes", ErrBadRequest, m.Offset, m.Length, size)
	}
	return m.Length, nil
}

// CheckGetReply reads a node's answer to req from r and checks the length
// it announces against what req asked for, before any byte of the piece is
// read. It returns the length.
func CheckGetReply(r io.Reader, req *GetRequest) (uint64, error) {
	want, err := req.WantLength()
	if err != nil {
		return 0, err
	}
	rep, err := expect[*GetReply](readReply(r, TypeGetReply))
	if err != nil {
		return 0, err
	}
	if rep.Length != want {
		return 0, fmt.Errorf("%w: node announces %d bytes, the request asked for %d", ErrReplyLength, rep.Length, want)
	}
	return want, nil
}

// Get reads a piece or a range of it. The node's reply must announce
// exactly the bytes asked for (CheckGetReply); the reader returns that
// many bytes and then io.EOF (io.ErrUnexpectedEOF if the node stops
// short), and never reads past them. Close it when done.
func (c *Conn) Get(ctx context.Context, req *GetRequest) (io.ReadCloser, int64, error) {
	if _, err := req.WantLength(); err != nil {
		return nil, 0, fmt.Errorf("get %s: %w", req.Piece, err)
	}
	s, stop, err := c.openRequest(ctx)
	if err != nil {
		return nil, 0, err
	}
	if err := WriteMessage(s, req); err != nil {
		stop()
		s.CancelRead(StreamCancelled)
		s.CancelWrite(StreamCancelled)
		return nil, 0, fmt.Errorf("get %s: %w", req.Piece, err)
	}
	s.Close()
	n, err := CheckGetReply(s, req)
	if err != nil {
		stop()
		s.CancelRead(StreamCancelled)
		return nil, 0, fmt.Errorf("get %s: %w", req.Piece, err)
	}
	return &getReader{s: s, left: int64(n), stop: stop}, int64(n), nil
}

type getReader struct {
	s    *quic.Stream
	left int64
	stop func()
}

func (g *getReader) Read(p []byte) (int, error) {
	if g.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n, err := g.s.Read(p)
	g.left -= int64(n)
	if errors.Is(err, io.EOF) && g.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && g.left == 0 {
		err = io.EOF
	}
	return n, err
}

func (g *getReader) Close() error {
	g.stop()
	g.s.CancelRead(StreamCancelled)
	return nil
}
