package net

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
)

func sampleMediatorMessages(t testing.TB) []Message {
	med := mustIdentity(t)
	tk := SignTicket(med, Ticket{Node: mustIdentity(t).ID(), Piece: challenge.PieceID{7}, Op: OpPut, Account: AccountID{3}, Size: 4096, Expires: time.Unix(1900000000, 0)})
	addr := Address{ID: med.ID(), HostPort: "127.0.0.1:7777"}.String()
	return []Message{
		&AccountRequest{},
		&AccountReply{Created: true},
		&PlacementRequest{K: 2, N: 5, PieceSize: 4096, Pieces: []challenge.PieceID{{1}, {2}, {3}, {4}, {5}}},
		&PlacementReply{Segment: SegmentID{9}, Expires: time.Unix(1900000000, 0), Targets: []Target{{Address: addr, Ticket: tk}, {Address: addr, Ticket: tk}}},
		&CommitRequest{Segment: SegmentID{9}, Pieces: []StoredPiece{{Index: 1, Node: med.ID(), Piece: challenge.PieceID{2}, Size: 4096}}},
		&CommitReply{},
		&ReleaseRequest{Segment: SegmentID{1, 2}},
		&ReleaseReply{},
		&SegmentRequest{Segment: SegmentID{3}},
		&SegmentReply{K: 2, N: 5, PieceSize: 10, Repaired: 2, Pieces: []SegmentPiece{
			{Piece: challenge.PieceID{1}, Healthy: true, Target: Target{Address: addr, Ticket: tk}},
			{Piece: challenge.PieceID{2}},
		}},
		&HealthRequest{Segments: []SegmentID{{1}, {2}, {3}}},
		&HealthReply{Segments: []SegmentHealth{{Known: true, Healthy: 4, N: 4}, {}, {Known: true, Healthy: 1, N: 4}}},
	}
}

func TestMediatorMessagesRoundTrip(t *testing.T) {
	for _, m := range sampleMediatorMessages(t) {
		name := TypeName(m.Type())
		b, err := EncodeAnyFrame(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := DecodeAnyFrame(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%s: round trip\n got %#v\nwant %#v", name, got, m)
		}
		r, err := ReadAnyMessage(bytes.NewReader(b))
		if err != nil || !reflect.DeepEqual(r, m) {
			t.Fatalf("%s: ReadAnyMessage: %v", name, err)
		}
		for cut := 0; cut < len(b); cut++ {
			if _, err := DecodeAnyFrame(b[:cut]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s cut at %d: %v", name, cut, err)
			}
			if _, err := ReadAnyMessage(bytes.NewReader(b[:cut])); err == nil {
				t.Fatalf("%s cut at %d: ReadAnyMessage accepted", name, cut)
			}
		}
		if _, err := DecodeAnyFrame(append(bytes.Clone(b), 0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: trailing byte accepted", name)
		}
		// The storage node's decoder does not know mediator messages.
		if _, err := DecodeFrame(b); !errors.Is(err, ErrUnknownType) {
			t.Fatalf("%s: DecodeFrame: %v", name, err)
		}
	}
	// ReadAnyMessage still reads every other message.
	hb := &Heartbeat{Capacity: 5, Used: 2, Pieces: 1}
	b, _ := EncodeFrame(hb)
	if m, err := ReadAnyMessage(bytes.NewReader(b)); err != nil || !reflect.DeepEqual(m, hb) {
		t.Fatalf("heartbeat through ReadAnyMessage: %v %v", m, err)
	}
	// Limits: too many pieces, an oversized body.
	big := &PlacementRequest{K: 1, N: 2, Pieces: make([]challenge.PieceID, MaxSegmentPieces+1)}
	b, _ = EncodeAnyFrame(big)
	if _, err := DecodeAnyFrame(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("too many pieces: %v", err)
	}
	b, _ = EncodeAnyFrame(&HealthRequest{Segments: make([]SegmentID, MaxHealthBatch+1)})
	if _, err := DecodeAnyFrame(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("too many segments in a health request: %v", err)
	}
	hdr := []byte{Version, byte(TypePlacementReply), 0x00, 0x10, 0x00, 0x01}
	if _, err := ReadAnyMessage(bytes.NewReader(hdr)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized body: %v", err)
	}
}

func FuzzReadAnyMessage(f *testing.F) {
	for _, m := range sampleMediatorMessages(f) {
		b, _ := EncodeAnyFrame(m)
		f.Add(b)
	}
	// Node messages the mediator reads through ReadAnyMessage too.
	for _, m := range []Message{&DamageReport{Pieces: []challenge.PieceID{{1}, {2}}}, &DamageReply{Accepted: 1}, &LiveRequest{}} {
		b, _ := EncodeAnyFrame(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ReadAnyMessage(bytes.NewReader(b))
		if err != nil {
			return
		}
		out, err := EncodeAnyFrame(m)
		if err != nil {
			t.Fatalf("decoded %s does not encode: %v", TypeName(m.Type()), err)
		}
		if _, err := DecodeAnyFrame(out); err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", TypeName(m.Type()), err)
		}
	})
}
