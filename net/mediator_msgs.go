package net

// Messages between clients and the mediator (docs/PROTOCOL.md, part
// "Mediator protocol"). They share the frame format of every other message
// but are decoded here, by ReadAnyMessage, so that this file is all the
// mediator protocol adds to the package. The account acting is always the
// connection's authenticated peer: a client dials the mediator with its
// account identity, so only the holder of the key acts on the account.

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
)

// Mediator message types (0x40..0x4f).
const (
	TypeAccountRequest   MsgType = 0x40
	TypeAccountReply     MsgType = 0x41
	TypePlacementRequest MsgType = 0x42
	TypePlacementReply   MsgType = 0x43
	TypeCommitRequest    MsgType = 0x44
	TypeCommitReply      MsgType = 0x45
	TypeReleaseRequest   MsgType = 0x46
	TypeReleaseReply     MsgType = 0x47
	TypeSegmentRequest   MsgType = 0x48
	TypeSegmentReply     MsgType = 0x49
	TypeHealthRequest    MsgType = 0x4a
	TypeHealthReply      MsgType = 0x4b
)

// Limits of mediator messages.
const (
	// MaxSegmentPieces bounds N in a placement.
	MaxSegmentPieces = 64
	// MaxMediatorBody bounds the body of every mediator message.
	MaxMediatorBody = 64 << 10
	// MaxHealthBatch bounds the segments of one HealthRequest.
	MaxHealthBatch = 2048
)

// SegmentID names a contracted segment (assigned by the mediator).
type SegmentID [16]byte

func newMediatorMessage(t MsgType) Message {
	switch t {
	case TypeAccountRequest:
		return &AccountRequest{}
	case TypeAccountReply:
		return &AccountReply{}
	case TypePlacementRequest:
		return &PlacementRequest{}
	case TypePlacementReply:
		return &PlacementReply{}
	case TypeCommitRequest:
		return &CommitRequest{}
	case TypeCommitReply:
		return &CommitReply{}
	case TypeReleaseRequest:
		return &ReleaseRequest{}
	case TypeReleaseReply:
		return &ReleaseReply{}
	case TypeSegmentRequest:
		return &SegmentRequest{}
	case TypeSegmentReply:
		return &SegmentReply{}
	case TypeHealthRequest:
		return &HealthRequest{}
	case TypeHealthReply:
		return &HealthReply{}
	}
	if m := newWalletMessage(t); m != nil {
		return m
	}
	return newSnapshotMessage(t)
}

var mediatorTypeNames = map[MsgType]string{
	TypeAccountRequest: "AccountRequest", TypeAccountReply: "AccountReply",
	TypePlacementRequest: "PlacementRequest", TypePlacementReply: "PlacementReply",
	TypeCommitRequest: "CommitRequest", TypeCommitReply: "CommitReply",
	TypeReleaseRequest: "ReleaseRequest", TypeReleaseReply: "ReleaseReply",
	TypeSegmentRequest: "SegmentRequest", TypeSegmentReply: "SegmentReply",
	TypeHealthRequest: "HealthRequest", TypeHealthReply: "HealthReply",
}

// TypeName names any message type, mediator types included.
func TypeName(t MsgType) string {
	if n, ok := mediatorTypeNames[t]; ok {
		return n
	}
	if n, ok := walletTypeNames[t]; ok {
		return n
	}
	if n, ok := snapshotTypeNames[t]; ok {
		return n
	}
	return t.String()
}

// EncodeAnyFrame frames any message, mediator messages included.
func EncodeAnyFrame(m Message) ([]byte, error) {
	if newMediatorMessage(m.Type()) == nil {
		return EncodeFrame(m)
	}
	e := &encoder{b: make([]byte, HeaderSize, 256)}
	m.encode(e)
	body := len(e.b) - HeaderSize
	if body > MaxMediatorBody {
		return nil, fmt.Errorf("%s: %w: body of %d bytes exceeds %d", TypeName(m.Type()), ErrTooLarge, body, MaxMediatorBody)
	}
	e.b[0] = Version
	e.b[1] = byte(m.Type())
	binary.BigEndian.PutUint32(e.b[2:], uint32(body))
	return e.b, nil
}

// WriteAnyMessage writes one frame of any type.
func WriteAnyMessage(w io.Writer, m Message) error {
	b, err := EncodeAnyFrame(m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// DecodeAnyFrame decodes exactly one whole frame of any type.
func DecodeAnyFrame(b []byte) (Message, error) {
	if len(b) >= HeaderSize && b[0] == Version && newMediatorMessage(MsgType(b[1])) != nil {
		n := binary.BigEndian.Uint32(b[2:])
		if int64(n) != int64(len(b)-HeaderSize) {
			return nil, fmt.Errorf("%s: %w: body %d bytes, header says %d", TypeName(MsgType(b[1])), ErrTruncated, len(b)-HeaderSize, n)
		}
		return decodeMediatorBody(MsgType(b[1]), b[HeaderSize:])
	}
	return DecodeFrame(b)
}

func decodeMediatorBody(t MsgType, body []byte) (Message, error) {
	m := newMediatorMessage(t)
	d := &decoder{b: body}
	m.decode(d)
	if err := d.done(); err != nil {
		return nil, fmt.Errorf("%s: %w", TypeName(t), err)
	}
	return m, nil
}

// ReadAnyMessage reads one frame of any type (mediator, wallet and snapshot
// messages included). Servers read with ReadMessageOf, which refuses types
// that do not belong at that point before reading their bodies.
func ReadAnyMessage(r io.Reader) (Message, error) {
	return ReadMessageOf(r, knownType)
}

// CallAny is Conn.Call for requests whose reply may be a mediator message.
func (c *Conn) CallAny(ctx context.Context, req Message) (Message, error) {
	s, stop, err := c.openRequest(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()
	defer s.CancelRead(StreamCancelled)
	if err := WriteAnyMessage(s, req); err != nil {
		s.CancelWrite(StreamCancelled)
		return nil, fmt.Errorf("%s to %s: %w", TypeName(req.Type()), c.peer, err)
	}
	s.Close()
	m, err := ReadMessageOf(s, OneOf(ReplyType(req.Type()), TypeError))
	if err != nil {
		return nil, fmt.Errorf("%s to %s: reply: %w", TypeName(req.Type()), c.peer, err)
	}
	if e, ok := m.(*ErrorReply); ok {
		return nil, fmt.Errorf("%s to %s: %w", TypeName(req.Type()), c.peer, &RemoteError{Code: e.Code, Message: e.Message})
	}
	return m, nil
}

// CallAnyFor is CallAny expecting a reply of type T.
func CallAnyFor[T Message](ctx context.Context, c *Conn, req Message) (T, error) {
	m, err := c.CallAny(ctx, req)
	var zero T
	if err != nil {
		return zero, err
	}
	t, ok := m.(T)
	if !ok {
		return zero, fmt.Errorf("%s to %s: %w: unexpected reply %s", TypeName(req.Type()), c.peer, ErrMalformed, TypeName(m.Type()))
	}
	return t, nil
}

// AccountRequest registers the connection's peer as a client account
// (idempotent).
type AccountRequest struct{}

func (*AccountRequest) Type() MsgType   { return TypeAccountRequest }
func (*AccountRequest) encode(*encoder) {}
func (*AccountRequest) decode(*decoder) {}

// AccountReply confirms the account; Created is false if it existed.
type AccountReply struct{ Created bool }

func (*AccountReply) Type() MsgType       { return TypeAccountReply }
func (m *AccountReply) encode(e *encoder) { e.boolean(m.Created) }
func (m *AccountReply) decode(d *decoder) { m.Created = d.boolean() }

// PlacementRequest asks where to store the N pieces of one segment, each
// PieceSize bytes; Pieces are their ids (Merkle roots) in piece order.
type PlacementRequest struct {
	K, N      uint8
	PieceSize uint64
	Pieces    []challenge.PieceID
}

func (*PlacementRequest) Type() MsgType { return TypePlacementRequest }
func (m *PlacementRequest) encode(e *encoder) {
	e.u8(m.K)
	e.u8(m.N)
	e.u64(m.PieceSize)
	e.u32(uint32(len(m.Pieces)))
	for _, p := range m.Pieces {
		e.fixed(p[:])
	}
}
func (m *PlacementRequest) decode(d *decoder) {
	m.K = d.u8()
	m.N = d.u8()
	m.PieceSize = d.u64()
	n := d.count(MaxSegmentPieces, challenge.HashSize)
	if n > 0 {
		m.Pieces = make([]challenge.PieceID, n)
	}
	for i := range n {
		d.fixed(m.Pieces[i][:])
	}
}

// Target is where one piece goes (or is read from), with the ticket the
// node honours.
type Target struct {
	Address string // NODEID@host:port
	Ticket  SignedTicket
}

// PlacementReply assigns a segment id and one target per piece, in order.
// The placement must be committed before Expires.
type PlacementReply struct {
	Segment SegmentID
	Expires time.Time // second precision
	Targets []Target
}

func (*PlacementReply) Type() MsgType { return TypePlacementReply }
func (m *PlacementReply) encode(e *encoder) {
	e.fixed(m.Segment[:])
	e.i64(m.Expires.Unix())
	e.u32(uint32(len(m.Targets)))
	for i := range m.Targets {
		e.str(m.Targets[i].Address)
		m.Targets[i].Ticket.encode(e)
	}
}
func (m *PlacementReply) decode(d *decoder) {
	d.fixed(m.Segment[:])
	m.Expires = time.Unix(d.i64(), 0)
	n := d.count(MaxSegmentPieces, 2+TicketBodySize+64)
	if n > 0 {
		m.Targets = make([]Target, n)
	}
	for i := range n {
		m.Targets[i].Address = d.str(MaxAddressText)
		m.Targets[i].Ticket.decode(d)
	}
}

// StoredPiece is the client's receipt for one uploaded piece: the node
// that acknowledged it, its id and its size.
type StoredPiece struct {
	Index uint8
	Node  NodeID
	Piece challenge.PieceID
	Size  uint64
}

// CommitRequest turns a placement into a contract. Pieces lists those that
// were stored (at least K); the others count as lost and get repaired.
type CommitRequest struct {
	Segment SegmentID
	Pieces  []StoredPiece
}

func (*CommitRequest) Type() MsgType { return TypeCommitRequest }
func (m *CommitRequest) encode(e *encoder) {
	e.fixed(m.Segment[:])
	e.u32(uint32(len(m.Pieces)))
	for _, p := range m.Pieces {
		e.u8(p.Index)
		e.fixed(p.Node[:])
		e.fixed(p.Piece[:])
		e.u64(p.Size)
	}
}
func (m *CommitRequest) decode(d *decoder) {
	d.fixed(m.Segment[:])
	n := d.count(MaxSegmentPieces, 1+NodeIDSize+challenge.HashSize+8)
	if n > 0 {
		m.Pieces = make([]StoredPiece, n)
	}
	for i := range n {
		p := &m.Pieces[i]
		p.Index = d.u8()
		d.fixed(p.Node[:])
		d.fixed(p.Piece[:])
		p.Size = d.u64()
	}
}

// CommitReply confirms that the contract is durable.
type CommitReply struct{}

func (*CommitReply) Type() MsgType   { return TypeCommitReply }
func (*CommitReply) encode(*encoder) {}
func (*CommitReply) decode(*decoder) {}

// ReleaseRequest ends a contract; the mediator deletes the pieces.
type ReleaseRequest struct{ Segment SegmentID }

func (*ReleaseRequest) Type() MsgType       { return TypeReleaseRequest }
func (m *ReleaseRequest) encode(e *encoder) { e.fixed(m.Segment[:]) }
func (m *ReleaseRequest) decode(d *decoder) { d.fixed(m.Segment[:]) }

// ReleaseReply confirms the release (the contract is gone).
type ReleaseReply struct{}

func (*ReleaseReply) Type() MsgType   { return TypeReleaseReply }
func (*ReleaseReply) encode(*encoder) {}
func (*ReleaseReply) decode(*decoder) {}

// SegmentRequest asks where a contracted segment's pieces are, with get
// tickets (the read path and repair checks).
type SegmentRequest struct{ Segment SegmentID }

func (*SegmentRequest) Type() MsgType       { return TypeSegmentRequest }
func (m *SegmentRequest) encode(e *encoder) { e.fixed(m.Segment[:]) }
func (m *SegmentRequest) decode(d *decoder) { d.fixed(m.Segment[:]) }

// HealthRequest asks how many pieces of each of the account's segments
// are healthy: the client's periodic check, many segments a call and no
// tickets signed.
type HealthRequest struct{ Segments []SegmentID }

func (*HealthRequest) Type() MsgType { return TypeHealthRequest }
func (m *HealthRequest) encode(e *encoder) {
	e.u32(uint32(len(m.Segments)))
	for i := range m.Segments {
		e.fixed(m.Segments[i][:])
	}
}
func (m *HealthRequest) decode(d *decoder) {
	n := d.count(MaxHealthBatch, len(SegmentID{}))
	if n > 0 {
		m.Segments = make([]SegmentID, n)
	}
	for i := range n {
		d.fixed(m.Segments[i][:])
	}
}

// SegmentHealth is one segment of a HealthReply. Known is false for a
// segment the mediator has no contract for under this account (released,
// lost, or never committed); Healthy and N are then zero.
type SegmentHealth struct {
	Known      bool
	Healthy, N uint8
}

// HealthReply answers a HealthRequest, one entry per segment, in order.
type HealthReply struct{ Segments []SegmentHealth }

func (*HealthReply) Type() MsgType { return TypeHealthReply }
func (m *HealthReply) encode(e *encoder) {
	e.u32(uint32(len(m.Segments)))
	for _, s := range m.Segments {
		e.boolean(s.Known)
		e.u8(s.Healthy)
		e.u8(s.N)
	}
}
func (m *HealthReply) decode(d *decoder) {
	n := d.count(MaxHealthBatch, 3)
	if n > 0 {
		m.Segments = make([]SegmentHealth, n)
	}
	for i := range n {
		s := &m.Segments[i]
		s.Known = d.boolean()
		s.Healthy = d.u8()
		s.N = d.u8()
	}
}

// SegmentPiece is one piece of a SegmentReply; a lost piece carries no
// target (only healthy pieces are encoded with an address and a ticket).
type SegmentPiece struct {
	Piece   challenge.PieceID
	Healthy bool
	Target  Target
}

// SegmentReply describes a contract.
type SegmentReply struct {
	K, N      uint8
	PieceSize uint64
	Repaired  uint32
	Pieces    []SegmentPiece
}

func (*SegmentReply) Type() MsgType { return TypeSegmentReply }
func (m *SegmentReply) encode(e *encoder) {
	e.u8(m.K)
	e.u8(m.N)
	e.u64(m.PieceSize)
	e.u32(m.Repaired)
	e.u32(uint32(len(m.Pieces)))
	for i := range m.Pieces {
		p := &m.Pieces[i]
		e.fixed(p.Piece[:])
		e.boolean(p.Healthy)
		if p.Healthy {
			e.str(p.Target.Address)
			p.Target.Ticket.encode(e)
		}
	}
}
func (m *SegmentReply) decode(d *decoder) {
	m.K = d.u8()
	m.N = d.u8()
	m.PieceSize = d.u64()
	m.Repaired = d.u32()
	n := d.count(MaxSegmentPieces, challenge.HashSize+1)
	if n > 0 {
		m.Pieces = make([]SegmentPiece, n)
	}
	for i := range n {
		p := &m.Pieces[i]
		d.fixed(p.Piece[:])
		p.Healthy = d.boolean()
		if p.Healthy {
			p.Target.Address = d.str(MaxAddressText)
			p.Target.Ticket.decode(d)
		}
	}
}
