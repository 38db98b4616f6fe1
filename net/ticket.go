package net

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
)

// Op is what a ticket allows.
type Op uint8

// Ticket operations.
const (
	OpPut    Op = 1
	OpGet    Op = 2
	OpStat   Op = 3
	OpDelete Op = 4
)

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpGet:
		return "get"
	case OpStat:
		return "stat"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// AccountID names the client account a ticket was issued to (the account's
// ed25519 public key).
type AccountID [32]byte

// TicketVersion is the version byte of a ticket's signed body.
const TicketVersion = 1

// ticketDomain prefixes the signed bytes so that a ticket signature can
// never be mistaken for any other signature made by the same key.
const ticketDomain = "fincrypt-ticket-v1\x00"

// TicketBodySize is the encoded size of a ticket without its signature.
const TicketBodySize = 1 + 32 + 32 + 32 + 1 + 32 + 8 + 8

// Ticket errors; all wrap ErrTicket.
var (
	ErrTicket          = errors.New("ticket refused")
	ErrTicketSignature = fmt.Errorf("%w: bad signature", ErrTicket)
	ErrTicketExpired   = fmt.Errorf("%w: expired", ErrTicket)
	ErrTicketIssuer    = fmt.Errorf("%w: signed by another mediator", ErrTicket)
	ErrTicketScope     = fmt.Errorf("%w: does not cover this request", ErrTicket)
	ErrTicketHolder    = fmt.Errorf("%w: presented by a peer that is neither its account nor its issuer", ErrTicket)
)

// Ticket is a mediator's permission for one operation on one piece at one
// storage node.
type Ticket struct {
	Issuer  NodeID // the mediator that signs it
	Node    NodeID // the storage node that may honour it
	Piece   challenge.PieceID
	Op      Op
	Account AccountID
	Size    int64     // the piece's size in bytes
	Expires time.Time // second precision
}

// SignedTicket is a ticket with the issuer's ed25519 signature.
type SignedTicket struct {
	Ticket
	Signature [ed25519.SignatureSize]byte
}

func (t *Ticket) encode(e *encoder) {
	e.u8(TicketVersion)
	e.fixed(t.Issuer[:])
	e.fixed(t.Node[:])
	e.fixed(t.Piece[:])
	e.u8(uint8(t.Op))
	e.fixed(t.Account[:])
	e.u64(uint64(t.Size))
	e.i64(t.Expires.Unix())
}

func (t *Ticket) decode(d *decoder) {
	if v := d.u8(); d.err == nil && v != TicketVersion {
		d.fail("ticket version %d, want %d", v, TicketVersion)
	}
	d.fixed(t.Issuer[:])
	d.fixed(t.Node[:])
	d.fixed(t.Piece[:])
	t.Op = Op(d.u8())
	d.fixed(t.Account[:])
	t.Size = int64(d.u64())
	t.Expires = time.Unix(d.i64(), 0)
	if d.err == nil && (t.Op < OpPut || t.Op > OpDelete) {
		d.fail("ticket op %d", t.Op)
	}
	if d.err == nil && t.Size < 0 {
		d.fail("ticket size %d", t.Size)
	}
}

func (t *Ticket) signedBytes() []byte {
	e := &encoder{b: []byte(ticketDomain)}
	t.encode(e)
	return e.b
}

// SignTicket signs t as issuer (t.Issuer is set to the issuer's id).
func SignTicket(issuer *Identity, t Ticket) SignedTicket {
	t.Issuer = issuer.ID()
	t.Expires = time.Unix(t.Expires.Unix(), 0)
	st := SignedTicket{Ticket: t}
	copy(st.Signature[:], issuer.Sign(t.signedBytes()))
	return st
}

func (s *SignedTicket) encode(e *encoder) {
	s.Ticket.encode(e)
	e.fixed(s.Signature[:])
}

func (s *SignedTicket) decode(d *decoder) {
	s.Ticket.decode(d)
	d.fixed(s.Signature[:])
}

// VerifyFrom is Verify for a ticket presented over a connection that
// authenticated peer: a ticket is not a bearer token, so peer must also be
// the ticket's account (the client it was issued to) or its issuer (the
// mediator, which fetches pieces for repair and deletes).
func (s *SignedTicket) VerifyFrom(mediator, node, peer NodeID, piece challenge.PieceID, op Op, now time.Time) error {
	if err := s.Verify(mediator, node, piece, op, now); err != nil {
		return err
	}
	if !s.FromIssuer(peer) && AccountID(peer) != s.Account {
		return fmt.Errorf("%w: peer %s, account %s", ErrTicketHolder, peer, NodeID(s.Account))
	}
	return nil
}

// FromIssuer reports whether peer is the mediator that signed the ticket.
func (s *SignedTicket) FromIssuer(peer NodeID) bool { return peer == s.Issuer }

// Verify checks that the ticket is signed by mediator, names this node,
// this piece and this op, and has not expired at now. It does not check who
// presents the ticket: a node serving requests uses VerifyFrom.
func (s *SignedTicket) Verify(mediator, node NodeID, piece challenge.PieceID, op Op, now time.Time) error {
	if s.Issuer != mediator {
		return fmt.Errorf("%w: issuer %s, this node trusts %s", ErrTicketIssuer, s.Issuer, mediator)
	}
	if !ed25519.Verify(mediator.PublicKey(), s.signedBytes(), s.Signature[:]) {
		return ErrTicketSignature
	}
	if s.Node != node {
		return fmt.Errorf("%w: issued for node %s", ErrTicketScope, s.Node)
	}
	if s.Piece != piece {
		return fmt.Errorf("%w: issued for piece %s", ErrTicketScope, s.Piece)
	}
	if s.Op != op {
		return fmt.Errorf("%w: issued for %s, not %s", ErrTicketScope, s.Op, op)
	}
	if !now.Before(s.Expires) {
		return fmt.Errorf("%w at %s", ErrTicketExpired, s.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}
