package net

import (
	"errors"
	"fmt"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
)

// MsgType identifies a message; see docs/PROTOCOL.md for each.
type MsgType uint8

// Message types. Requests have even low nibbles, their replies the next
// value; ErrorReply answers any request.
const (
	TypeError             MsgType = 0x01
	TypePutRequest        MsgType = 0x10
	TypePutReply          MsgType = 0x11
	TypeGetRequest        MsgType = 0x12
	TypeGetReply          MsgType = 0x13
	TypeStatRequest       MsgType = 0x14
	TypeStatReply         MsgType = 0x15
	TypeDeleteRequest     MsgType = 0x16
	TypeDeleteReply       MsgType = 0x17
	TypeChallengeRequest  MsgType = 0x20
	TypeChallengeResponse MsgType = 0x21
	TypeRegisterRequest   MsgType = 0x30
	TypeRegisterReply     MsgType = 0x31
	TypeHeartbeat         MsgType = 0x32
	TypeHeartbeatReply    MsgType = 0x33
	TypeLiveRequest       MsgType = 0x34
	TypeLiveReply         MsgType = 0x35
	TypeDamageReport      MsgType = 0x36
	TypeDamageReply       MsgType = 0x37
)

// Limits of message fields.
const (
	MaxErrorText        = 1024
	MaxAddressText      = 300
	MaxPayoutAddress    = 128
	MaxNetworkName      = 16
	MaxChallengePieces  = 32
	MaxLivePieces       = 8192
	MaxDamagePieces     = 1024
	maxPathLen          = 32
	maxChallengeBody    = MaxBody
	maxLiveRequestBody  = 4 + MaxLivePieces*challenge.HashSize
	maxLiveReplyBody    = 4 + MaxLivePieces
	maxDamageReportBody = 4 + MaxDamagePieces*challenge.HashSize
	maxControlBodyLimit = MaxControlBody
)

var typeNames = map[MsgType]string{
	TypeError: "Error", TypePutRequest: "PutRequest", TypePutReply: "PutReply",
	TypeGetRequest: "GetRequest", TypeGetReply: "GetReply", TypeStatRequest: "StatRequest",
	TypeStatReply: "StatReply", TypeDeleteRequest: "DeleteRequest", TypeDeleteReply: "DeleteReply",
	TypeChallengeRequest: "ChallengeRequest", TypeChallengeResponse: "ChallengeResponse",
	TypeRegisterRequest: "RegisterRequest", TypeRegisterReply: "RegisterReply",
	TypeHeartbeat: "Heartbeat", TypeHeartbeatReply: "HeartbeatReply",
	TypeLiveRequest: "LiveRequest", TypeLiveReply: "LiveReply",
	TypeDamageReport: "DamageReport", TypeDamageReply: "DamageReply",
}

func (t MsgType) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(0x%02x)", uint8(t))
}

func newMessage(t MsgType) Message {
	switch t {
	case TypeError:
		return &ErrorReply{}
	case TypePutRequest:
		return &PutRequest{}
	case TypePutReply:
		return &PutReply{}
	case TypeGetRequest:
		return &GetRequest{}
	case TypeGetReply:
		return &GetReply{}
	case TypeStatRequest:
		return &StatRequest{}
	case TypeStatReply:
		return &StatReply{}
	case TypeDeleteRequest:
		return &DeleteRequest{}
	case TypeDeleteReply:
		return &DeleteReply{}
	case TypeChallengeRequest:
		return &ChallengeRequest{}
	case TypeChallengeResponse:
		return &ChallengeResponse{}
	case TypeRegisterRequest:
		return &RegisterRequest{}
	case TypeRegisterReply:
		return &RegisterReply{}
	case TypeHeartbeat:
		return &Heartbeat{}
	case TypeHeartbeatReply:
		return &HeartbeatReply{}
	case TypeLiveRequest:
		return &LiveRequest{}
	case TypeLiveReply:
		return &LiveReply{}
	case TypeDamageReport:
		return &DamageReport{}
	case TypeDamageReply:
		return &DamageReply{}
	}
	return nil
}

func bodyLimit(t MsgType) int {
	switch t {
	case TypeChallengeResponse:
		return maxChallengeBody
	case TypeLiveRequest:
		return maxLiveRequestBody
	case TypeLiveReply:
		return maxLiveReplyBody
	case TypeDamageReport:
		return maxDamageReportBody
	}
	return maxControlBodyLimit
}

// ErrorCode classifies an ErrorReply.
type ErrorCode uint16

// Error codes and the sentinels a RemoteError unwraps to.
const (
	CodeBadRequest    ErrorCode = 1
	CodeUnauthorized  ErrorCode = 2
	CodeNotFound      ErrorCode = 3
	CodeFull          ErrorCode = 4
	CodeMismatch      ErrorCode = 5
	CodeTooLarge      ErrorCode = 6
	CodeInternal      ErrorCode = 7
	CodeUnsupported   ErrorCode = 8
	CodeNotRegistered ErrorCode = 9
	CodeBusy          ErrorCode = 10
)

// Sentinels for remote errors (errors.Is(err, ErrNotFound), ...).
var (
	ErrBadRequest    = errors.New("bad request")
	ErrUnauthorized  = errors.New("unauthorized")
	ErrNotFound      = errors.New("piece not found")
	ErrFull          = errors.New("storage node is full")
	ErrMismatch      = errors.New("bytes do not match the piece id")
	ErrPieceTooLarge = errors.New("piece too large")
	ErrInternal      = errors.New("internal error")
	ErrUnsupported   = errors.New("unsupported")
	ErrNotRegistered = errors.New("node not registered")
	ErrBusy          = errors.New("busy")
)

var codeErrors = map[ErrorCode]error{
	CodeBadRequest: ErrBadRequest, CodeUnauthorized: ErrUnauthorized, CodeNotFound: ErrNotFound,
	CodeFull: ErrFull, CodeMismatch: ErrMismatch, CodeTooLarge: ErrPieceTooLarge,
	CodeInternal: ErrInternal, CodeUnsupported: ErrUnsupported, CodeNotRegistered: ErrNotRegistered,
	CodeBusy: ErrBusy,
}

// CodeOf maps an error to the code sent to the peer (CodeInternal if none).
func CodeOf(err error) ErrorCode {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	if errors.Is(err, ErrTicket) {
		return CodeUnauthorized
	}
	if errors.Is(err, ErrMalformed) {
		return CodeBadRequest
	}
	for c, e := range codeErrors {
		if errors.Is(err, e) {
			return c
		}
	}
	return CodeInternal
}

// RemoteError is an ErrorReply received from a peer.
type RemoteError struct {
	Code    ErrorCode
	Message string
}

func (e *RemoteError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("remote: %v", e.Unwrap())
	}
	return "remote: " + e.Message
}

// Unwrap returns the sentinel for the code.
func (e *RemoteError) Unwrap() error {
	if s, ok := codeErrors[e.Code]; ok {
		return s
	}
	return ErrInternal
}

// ErrorReply answers any request that failed.
type ErrorReply struct {
	Code    ErrorCode
	Message string
}

// NewErrorReply builds the reply for err, truncating the text.
func NewErrorReply(err error) *ErrorReply {
	msg := err.Error()
	if len(msg) > MaxErrorText {
		msg = msg[:MaxErrorText]
	}
	return &ErrorReply{Code: CodeOf(err), Message: msg}
}

func (*ErrorReply) Type() MsgType { return TypeError }
func (m *ErrorReply) encode(e *encoder) {
	e.u16(uint16(m.Code))
	e.str(m.Message)
}
func (m *ErrorReply) decode(d *decoder) {
	m.Code = ErrorCode(d.u16())
	m.Message = d.str(MaxErrorText)
}

// PutRequest uploads a piece: exactly Ticket.Size bytes follow the frame
// on the same stream, then the client closes its side.
type PutRequest struct {
	Piece  challenge.PieceID
	Ticket SignedTicket
}

func (*PutRequest) Type() MsgType       { return TypePutRequest }
func (m *PutRequest) encode(e *encoder) { e.fixed(m.Piece[:]); m.Ticket.encode(e) }
func (m *PutRequest) decode(d *decoder) { d.fixed(m.Piece[:]); m.Ticket.decode(d) }

// PutReply acknowledges a piece that is durably stored.
type PutReply struct{}

func (*PutReply) Type() MsgType   { return TypePutReply }
func (*PutReply) encode(*encoder) {}
func (*PutReply) decode(*decoder) {}

// GetRequest reads Length bytes at Offset (Length 0: to the end).
type GetRequest struct {
	Piece  challenge.PieceID
	Ticket SignedTicket
	Offset uint64
	Length uint64
}

func (*GetRequest) Type() MsgType { return TypeGetRequest }
func (m *GetRequest) encode(e *encoder) {
	e.fixed(m.Piece[:])
	m.Ticket.encode(e)
	e.u64(m.Offset)
	e.u64(m.Length)
}
func (m *GetRequest) decode(d *decoder) {
	d.fixed(m.Piece[:])
	m.Ticket.decode(d)
	m.Offset = d.u64()
	m.Length = d.u64()
}

// GetReply is followed by exactly Length bytes of the piece.
type GetReply struct{ Length uint64 }

func (*GetReply) Type() MsgType       { return TypeGetReply }
func (m *GetReply) encode(e *encoder) { e.u64(m.Length) }
func (m *GetReply) decode(d *decoder) { m.Length = d.u64() }

// StatRequest asks whether a piece is held.
type StatRequest struct {
	Piece  challenge.PieceID
	Ticket SignedTicket
}

func (*StatRequest) Type() MsgType       { return TypeStatRequest }
func (m *StatRequest) encode(e *encoder) { e.fixed(m.Piece[:]); m.Ticket.encode(e) }
func (m *StatRequest) decode(d *decoder) { d.fixed(m.Piece[:]); m.Ticket.decode(d) }

// StatReply describes a held piece.
type StatReply struct {
	Size     uint64
	StoredAt time.Time // nanosecond precision
}

func (*StatReply) Type() MsgType { return TypeStatReply }
func (m *StatReply) encode(e *encoder) {
	e.u64(m.Size)
	e.i64(m.StoredAt.UnixNano())
}
func (m *StatReply) decode(d *decoder) {
	m.Size = d.u64()
	m.StoredAt = time.Unix(0, d.i64())
}

// DeleteRequest removes a piece.
type DeleteRequest struct {
	Piece  challenge.PieceID
	Ticket SignedTicket
}

func (*DeleteRequest) Type() MsgType       { return TypeDeleteRequest }
func (m *DeleteRequest) encode(e *encoder) { e.fixed(m.Piece[:]); m.Ticket.encode(e) }
func (m *DeleteRequest) decode(d *decoder) { d.fixed(m.Piece[:]); m.Ticket.decode(d) }

// DeleteReply confirms a delete (also when the piece was already gone).
type DeleteReply struct{}

func (*DeleteReply) Type() MsgType   { return TypeDeleteReply }
func (*DeleteReply) encode(*encoder) {}
func (*DeleteReply) decode(*decoder) {}

// ChallengeRequest asks the node to prove it holds Pieces: for each, open
// Openings leaves chosen by challenge.Indices(Nonce, piece, size, Openings).
// Only the mediator the node registered with may send it.
type ChallengeRequest struct {
	Nonce    challenge.Nonce
	Openings uint8
	Pieces   []challenge.PieceID
}

func (*ChallengeRequest) Type() MsgType { return TypeChallengeRequest }
func (m *ChallengeRequest) encode(e *encoder) {
	e.fixed(m.Nonce[:])
	e.u8(m.Openings)
	e.u32(uint32(len(m.Pieces)))
	for _, p := range m.Pieces {
		e.fixed(p[:])
	}
}
func (m *ChallengeRequest) decode(d *decoder) {
	d.fixed(m.Nonce[:])
	m.Openings = d.u8()
	if d.err == nil && (m.Openings < 1 || m.Openings > challenge.MaxOpenings) {
		d.fail("%d openings (want 1..%d)", m.Openings, challenge.MaxOpenings)
	}
	n := d.count(MaxChallengePieces, challenge.HashSize)
	if n > 0 {
		m.Pieces = make([]challenge.PieceID, n)
	}
	for i := range n {
		d.fixed(m.Pieces[i][:])
	}
}

// ProofStatus says whether a node could answer for one piece.
type ProofStatus uint8

// Proof statuses.
const (
	ProofOK      ProofStatus = 0 // Proof is filled in
	ProofMissing ProofStatus = 1 // the node does not hold the piece
	ProofFailed  ProofStatus = 2 // the node holds it but could not read it
)

// PieceProof is the answer for one challenged piece.
type PieceProof struct {
	Status ProofStatus
	Proof  challenge.Proof // Proof.Piece is always set
}

// ChallengeResponse answers a ChallengeRequest, one entry per piece in
// request order.
type ChallengeResponse struct {
	Nonce  challenge.Nonce
	Proofs []PieceProof
}

func (*ChallengeResponse) Type() MsgType { return TypeChallengeResponse }
func (m *ChallengeResponse) encode(e *encoder) {
	e.fixed(m.Nonce[:])
	e.u32(uint32(len(m.Proofs)))
	for _, p := range m.Proofs {
		e.u8(uint8(p.Status))
		e.fixed(p.Proof.Piece[:])
		e.u32(uint32(len(p.Proof.Openings)))
		for _, o := range p.Proof.Openings {
			e.u32(o.Index)
			e.bytes(o.Leaf)
			e.u32(uint32(len(o.Path)))
			for _, h := range o.Path {
				e.fixed(h[:])
			}
		}
		e.fixed(p.Proof.Digest[:])
	}
}
func (m *ChallengeResponse) decode(d *decoder) {
	d.fixed(m.Nonce[:])
	n := d.count(MaxChallengePieces, 1+2*challenge.HashSize+4)
	if n > 0 {
		m.Proofs = make([]PieceProof, n)
	}
	for i := range n {
		p := &m.Proofs[i]
		p.Status = ProofStatus(d.u8())
		if d.err == nil && p.Status > ProofFailed {
			d.fail("proof status %d", p.Status)
		}
		d.fixed(p.Proof.Piece[:])
		no := d.count(challenge.MaxOpenings, 12)
		if no > 0 {
			p.Proof.Openings = make([]challenge.Opening, no)
		}
		for j := range no {
			o := &p.Proof.Openings[j]
			o.Index = d.u32()
			o.Leaf = d.bytes(challenge.LeafSize)
			np := d.count(maxPathLen, challenge.HashSize)
			if np > 0 {
				o.Path = make([]challenge.Hash, np)
			}
			for k := range np {
				d.fixed(o.Path[k][:])
			}
		}
		d.fixed(p.Proof.Digest[:])
	}
}

// RegisterRequest announces a storage node to its mediator. Node must be
// the id the connection authenticated.
type RegisterRequest struct {
	Node          NodeID
	Address       string // NODEID@host:port others dial
	Capacity      uint64 // bytes offered
	Used          uint64 // bytes held
	Pieces        uint64
	Price         uint64 // satoshis per GiB per month
	PayoutAddress string
	Network       string // mainnet, testnet3, regtest, simnet
}

func (*RegisterRequest) Type() MsgType { return TypeRegisterRequest }
func (m *RegisterRequest) encode(e *encoder) {
	e.fixed(m.Node[:])
	e.str(m.Address)
	e.u64(m.Capacity)
	e.u64(m.Used)
	e.u64(m.Pieces)
	e.u64(m.Price)
	e.str(m.PayoutAddress)
	e.str(m.Network)
}
func (m *RegisterRequest) decode(d *decoder) {
	d.fixed(m.Node[:])
	m.Address = d.str(MaxAddressText)
	m.Capacity = d.u64()
	m.Used = d.u64()
	m.Pieces = d.u64()
	m.Price = d.u64()
	m.PayoutAddress = d.str(MaxPayoutAddress)
	m.Network = d.str(MaxNetworkName)
}

// NodePolicy is what a mediator tells a node on every registration and
// heartbeat. Durations travel as milliseconds.
type NodePolicy struct {
	HeartbeatInterval time.Duration
	// GracePeriod: a piece the mediator reports as without a live contract
	// is deleted once it has been so for this long. 0 disables collection.
	GracePeriod time.Duration
	// GCInterval: how often the node asks which of its pieces are live.
	GCInterval time.Duration
}

func (p *NodePolicy) encode(e *encoder) {
	e.u64(uint64(p.HeartbeatInterval.Milliseconds()))
	e.u64(uint64(p.GracePeriod.Milliseconds()))
	e.u64(uint64(p.GCInterval.Milliseconds()))
}

func (p *NodePolicy) decode(d *decoder) {
	dur := func() time.Duration {
		v := d.u64()
		if v > uint64(100*365*24*time.Hour/time.Millisecond) {
			d.fail("duration %d ms", v)
			return 0
		}
		return time.Duration(v) * time.Millisecond
	}
	p.HeartbeatInterval = dur()
	p.GracePeriod = dur()
	p.GCInterval = dur()
}

// RegisterReply accepts a registration.
type RegisterReply struct{ Policy NodePolicy }

func (*RegisterReply) Type() MsgType       { return TypeRegisterReply }
func (m *RegisterReply) encode(e *encoder) { m.Policy.encode(e) }
func (m *RegisterReply) decode(d *decoder) { m.Policy.decode(d) }

// Heartbeat reports a registered node's state; a mediator that does not
// know the node answers CodeNotRegistered and the node registers again.
type Heartbeat struct {
	Capacity uint64
	Used     uint64
	Pieces   uint64
}

func (*Heartbeat) Type() MsgType { return TypeHeartbeat }
func (m *Heartbeat) encode(e *encoder) {
	e.u64(m.Capacity)
	e.u64(m.Used)
	e.u64(m.Pieces)
}
func (m *Heartbeat) decode(d *decoder) {
	m.Capacity = d.u64()
	m.Used = d.u64()
	m.Pieces = d.u64()
}

// HeartbeatReply carries the current policy.
type HeartbeatReply struct{ Policy NodePolicy }

func (*HeartbeatReply) Type() MsgType       { return TypeHeartbeatReply }
func (m *HeartbeatReply) encode(e *encoder) { m.Policy.encode(e) }
func (m *HeartbeatReply) decode(d *decoder) { m.Policy.decode(d) }

// LiveRequest asks which of these pieces have a live contract.
type LiveRequest struct{ Pieces []challenge.PieceID }

func (*LiveRequest) Type() MsgType { return TypeLiveRequest }
func (m *LiveRequest) encode(e *encoder) {
	e.u32(uint32(len(m.Pieces)))
	for _, p := range m.Pieces {
		e.fixed(p[:])
	}
}
func (m *LiveRequest) decode(d *decoder) {
	n := d.count(MaxLivePieces, challenge.HashSize)
	if n > 0 {
		m.Pieces = make([]challenge.PieceID, n)
	}
	for i := range n {
		d.fixed(m.Pieces[i][:])
	}
}

// LiveReply answers a LiveRequest: Live[i] for Pieces[i].
type LiveReply struct{ Live []bool }

func (*LiveReply) Type() MsgType { return TypeLiveReply }
func (m *LiveReply) encode(e *encoder) {
	e.u32(uint32(len(m.Live)))
	for _, l := range m.Live {
		e.boolean(l)
	}
}
func (m *LiveReply) decode(d *decoder) {
	n := d.count(MaxLivePieces, 1)
	if n > 0 {
		m.Live = make([]bool, n)
	}
	for i := range n {
		m.Live[i] = d.boolean()
	}
}

// DamageReport tells the mediator that the node found these pieces damaged
// on its own disk (its scrubber re-read them) and no longer holds them: the
// mediator marks them lost and the node forgoes pay for them.
type DamageReport struct{ Pieces []challenge.PieceID }

func (*DamageReport) Type() MsgType { return TypeDamageReport }
func (m *DamageReport) encode(e *encoder) {
	e.u32(uint32(len(m.Pieces)))
	for _, p := range m.Pieces {
		e.fixed(p[:])
	}
}
func (m *DamageReport) decode(d *decoder) {
	n := d.count(MaxDamagePieces, challenge.HashSize)
	if n > 0 {
		m.Pieces = make([]challenge.PieceID, n)
	}
	for i := range n {
		d.fixed(m.Pieces[i][:])
	}
}

// DamageReply acknowledges a DamageReport: Accepted pieces were under a
// contract on the node and are now lost; Ignored ones were not (unknown,
// already lost or moved). Either way the node is done with all of them.
type DamageReply struct {
	Accepted uint32
	Ignored  uint32
}

func (*DamageReply) Type() MsgType { return TypeDamageReply }
func (m *DamageReply) encode(e *encoder) {
	e.u32(m.Accepted)
	e.u32(m.Ignored)
}
func (m *DamageReply) decode(d *decoder) {
	m.Accepted = d.u32()
	m.Ignored = d.u32()
}
