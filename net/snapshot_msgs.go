package net

// Snapshot pointer messages (docs/PROTOCOL.md, part "Index snapshots"). A
// client backs its encrypted index up as ordinary segments and keeps, at the
// mediator, one pointer per account to its newest snapshot. The pointer is
// signed by the account key, which the mediator does not have, so the
// mediator can withhold or roll back a pointer but cannot forge one.

import (
	"crypto/ed25519"
	"errors"
	"fmt"
)

// Snapshot message types (0x58..0x5b).
const (
	TypeSnapshotPutRequest MsgType = 0x58
	TypeSnapshotPutReply   MsgType = 0x59
	TypeSnapshotGetRequest MsgType = 0x5a
	TypeSnapshotGetReply   MsgType = 0x5b
)

// Limits of a snapshot pointer.
const (
	// MaxPointerKeyFile bounds the vault key file a pointer carries.
	MaxPointerKeyFile = 4 << 10
	// MaxPointerSealed bounds the sealed segment list.
	MaxPointerSealed = 32 << 10
)

// ErrBadSignature means a snapshot pointer's signature does not verify
// under its account key.
var ErrBadSignature = errors.New("snapshot pointer signature does not verify")

var snapshotTypeNames = map[MsgType]string{
	TypeSnapshotPutRequest: "SnapshotPutRequest", TypeSnapshotPutReply: "SnapshotPutReply",
	TypeSnapshotGetRequest: "SnapshotGetRequest", TypeSnapshotGetReply: "SnapshotGetReply",
}

func newSnapshotMessage(t MsgType) Message {
	switch t {
	case TypeSnapshotPutRequest:
		return &SnapshotPutRequest{}
	case TypeSnapshotPutReply:
		return &SnapshotPutReply{}
	case TypeSnapshotGetRequest:
		return &SnapshotGetRequest{}
	case TypeSnapshotGetReply:
		return &SnapshotGetReply{}
	}
	return nil
}

// SnapshotPointer names an account's newest index snapshot. KeyFile is the
// vault's key file (the Argon2id-wrapped master key), which a restore needs
// before it can derive any key; Sealed is the list of the snapshot's
// segments, sealed under the vault's segment key. Seq orders pointers (the
// mediator keeps the highest). Sig is the account key's ed25519 signature
// over SigningBytes.
type SnapshotPointer struct {
	Account AccountID
	Seq     uint64
	KeyFile []byte
	Sealed  []byte
	Sig     []byte
}

func (p *SnapshotPointer) encodeBody(e *encoder, withSig bool) {
	e.fixed(p.Account[:])
	e.u64(p.Seq)
	e.bytes(p.KeyFile)
	e.bytes(p.Sealed)
	if withSig {
		e.bytes(p.Sig)
	}
}

func (p *SnapshotPointer) decode(d *decoder) {
	d.fixed(p.Account[:])
	p.Seq = d.u64()
	p.KeyFile = d.bytes(MaxPointerKeyFile)
	p.Sealed = d.bytes(MaxPointerSealed)
	p.Sig = d.bytes(ed25519.SignatureSize)
}

// SigningBytes is what the account key signs.
func (p *SnapshotPointer) SigningBytes() []byte {
	e := &encoder{b: []byte("fincrypt snapshot pointer v1\x00")}
	p.encodeBody(e, false)
	return e.b
}

// Sign signs the pointer with the account identity, whose id becomes the
// pointer's account.
func (p *SnapshotPointer) Sign(id *Identity) {
	p.Account = AccountID(id.ID())
	p.Sig = id.Sign(p.SigningBytes())
}

// Verify checks the signature under the pointer's account key.
func (p *SnapshotPointer) Verify() error {
	if len(p.KeyFile) > MaxPointerKeyFile || len(p.Sealed) > MaxPointerSealed {
		return fmt.Errorf("%w: pointer fields too large", ErrMalformed)
	}
	if len(p.Sig) != ed25519.SignatureSize || !ed25519.Verify(NodeID(p.Account).PublicKey(), p.SigningBytes(), p.Sig) {
		return ErrBadSignature
	}
	return nil
}

// SnapshotPutRequest stores the connection's account's newest pointer.
type SnapshotPutRequest struct{ Pointer SnapshotPointer }

// Type implements Message.
func (*SnapshotPutRequest) Type() MsgType       { return TypeSnapshotPutRequest }
func (m *SnapshotPutRequest) encode(e *encoder) { m.Pointer.encodeBody(e, true) }
func (m *SnapshotPutRequest) decode(d *decoder) { m.Pointer.decode(d) }

// SnapshotPutReply acknowledges a stored pointer.
type SnapshotPutReply struct{}

// Type implements Message.
func (*SnapshotPutReply) Type() MsgType     { return TypeSnapshotPutReply }
func (*SnapshotPutReply) encode(e *encoder) {}
func (*SnapshotPutReply) decode(d *decoder) {}

// SnapshotGetRequest asks for an account's newest pointer. Any peer may ask:
// a restoring client has no account key until the pointer's key file is
// unwrapped with the password.
type SnapshotGetRequest struct{ Account AccountID }

// Type implements Message.
func (*SnapshotGetRequest) Type() MsgType       { return TypeSnapshotGetRequest }
func (m *SnapshotGetRequest) encode(e *encoder) { e.fixed(m.Account[:]) }
func (m *SnapshotGetRequest) decode(d *decoder) { d.fixed(m.Account[:]) }

// SnapshotGetReply carries the pointer.
type SnapshotGetReply struct{ Pointer SnapshotPointer }

// Type implements Message.
func (*SnapshotGetReply) Type() MsgType       { return TypeSnapshotGetReply }
func (m *SnapshotGetReply) encode(e *encoder) { m.Pointer.encodeBody(e, true) }
func (m *SnapshotGetReply) decode(d *decoder) { m.Pointer.decode(d) }
