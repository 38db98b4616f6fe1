package net

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// Tests written against the mutants that lived in the tenth session's
// whole-package run by mutant schemata (docs/TESTING.md).

// TestClientPinsInTheHandshake: the dialling side's certificate check
// accepts only the pinned node id's key, so a client refuses an impostor
// during the handshake, before its own certificate's proof is sent
// (kills `err != nil` → `err == nil` after peerKey in clientTLS, which
// returned nil, accepting any key, for every well-formed certificate;
// Dial's check after the handshake still refused the impostor, so no
// test through Dial told them apart).
func TestClientPinsInTheHandshake(t *testing.T) {
	want, other := mustIdentity(t), mustIdentity(t)
	wantCert, err := selfSigned(want)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, err := selfSigned(other)
	if err != nil {
		t.Fatal(err)
	}
	verify := (&Transport{}).clientTLS(want.ID()).VerifyPeerCertificate
	if err := verify(wantCert.Certificate, nil); err != nil {
		t.Fatalf("the pinned key's certificate: %v", err)
	}
	if err := verify(otherCert.Certificate, nil); !errors.Is(err, ErrPeerMismatch) {
		t.Fatalf("another key's certificate: %v, want ErrPeerMismatch", err)
	}
	for name, raw := range map[string][][]byte{"none": nil, "garbage": {{0x30, 0x03, 1, 2, 3}}} {
		if err := verify(raw, nil); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
}

// TestNodeIDIsZero: only the unset id is zero (kills `id == NodeID{}`
// negated in IsZero, which no net test reached).
func TestNodeIDIsZero(t *testing.T) {
	if !(NodeID{}).IsZero() {
		t.Fatal("the unset id is not zero")
	}
	if id := mustIdentity(t).ID(); id.IsZero() {
		t.Fatalf("node id %s is zero", id)
	}
	var one NodeID
	one[len(one)-1] = 1
	if one.IsZero() {
		t.Fatal("an id with one bit set is zero")
	}
}

// TestCallAnyFor: a mediator request over a connection gets its reply
// back; an error reply, a reply of another type than asked for, a request
// too large to frame and a closed connection each give an error, the
// right one (kills the five `err != nil` negations of WriteAnyMessage,
// CallAny and CallAnyFor, which no net test reached: under each a failed
// call returned no error, or a good one failed).
func TestCallAnyFor(t *testing.T) {
	srv := startServer(t, HandlerFunc(func(ctx context.Context, peer NodeID, s *quic.Stream) {
		defer s.Close()
		m, err := ReadAnyMessage(s)
		if err != nil {
			WriteMessage(s, NewErrorReply(err))
			return
		}
		switch m := m.(type) {
		case *AccountRequest:
			WriteAnyMessage(s, &AccountReply{Created: true})
		case *HealthRequest:
			if len(m.Segments) == 0 {
				WriteMessage(s, NewErrorReply(ErrBadRequest))
				return
			}
			WriteAnyMessage(s, &HealthReply{Segments: make([]SegmentHealth, len(m.Segments))})
		}
	}))
	ctx, c := dialServer(t, srv, 20*time.Second)
	rep, err := CallAnyFor[*AccountReply](ctx, c, &AccountRequest{})
	if err != nil || !rep.Created {
		t.Fatalf("account: %+v, %v", rep, err)
	}
	h, err := CallAnyFor[*HealthReply](ctx, c, &HealthRequest{Segments: make([]SegmentID, 3)})
	if err != nil || len(h.Segments) != 3 {
		t.Fatalf("health: %+v, %v", h, err)
	}
	var re *RemoteError
	if _, err := CallAnyFor[*HealthReply](ctx, c, &HealthRequest{}); !errors.As(err, &re) || !errors.Is(err, ErrBadRequest) {
		t.Fatalf("error reply: %v, want a RemoteError for ErrBadRequest", err)
	}
	// An AccountRequest is answered with an AccountReply, not the type asked for.
	if got, err := CallAnyFor[*HealthReply](ctx, c, &AccountRequest{}); !errors.Is(err, ErrMalformed) || got != nil {
		t.Fatalf("reply of another type: %v, %v; want ErrMalformed", got, err)
	}
	big := &HealthRequest{Segments: make([]SegmentID, MaxMediatorBody/len(SegmentID{})+1)}
	if _, err := CallAnyFor[*HealthReply](ctx, c, big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized request: %v, want ErrTooLarge", err)
	}
	var buf bytes.Buffer
	if err := WriteAnyMessage(&buf, big); !errors.Is(err, ErrTooLarge) || buf.Len() != 0 {
		t.Fatalf("WriteAnyMessage of an oversized request: %v, %d bytes written", err, buf.Len())
	}
	if err := WriteAnyMessage(&buf, &AccountReply{Created: true}); err != nil {
		t.Fatal(err)
	}
	if m, err := ReadAnyMessage(&buf); err != nil || !m.(*AccountReply).Created {
		t.Fatalf("WriteAnyMessage's frame read back: %v, %v", m, err)
	}
	c.Close()
	if _, err := CallAnyFor[*AccountReply](ctx, c, &AccountRequest{}); err == nil {
		t.Fatal("call on a closed connection: no error")
	}
}
