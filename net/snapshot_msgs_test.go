package net

import (
	"bytes"
	"errors"
	"testing"
)

func TestSnapshotPointerRoundTrip(t *testing.T) {
	id, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	p := SnapshotPointer{Seq: 42, KeyFile: []byte(`{"format":1}`), Sealed: bytes.Repeat([]byte{9}, 100)}
	p.Sign(id)
	if err := p.Verify(); err != nil {
		t.Fatal(err)
	}
	b, err := EncodeAnyFrame(&SnapshotPutRequest{Pointer: p})
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeAnyFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	got := m.(*SnapshotPutRequest).Pointer
	if got.Account != p.Account || got.Seq != 42 || !bytes.Equal(got.KeyFile, p.KeyFile) || !bytes.Equal(got.Sealed, p.Sealed) {
		t.Fatalf("decoded %+v, want %+v", got, p)
	}
	if err := got.Verify(); err != nil {
		t.Fatal(err)
	}
	if TypeName(TypeSnapshotGetReply) != "SnapshotGetReply" {
		t.Fatalf("type name %q", TypeName(TypeSnapshotGetReply))
	}

	// Any change to a signed field breaks the signature.
	for name, edit := range map[string]func(*SnapshotPointer){
		"seq":     func(q *SnapshotPointer) { q.Seq++ },
		"keyfile": func(q *SnapshotPointer) { q.KeyFile = append([]byte(nil), q.KeyFile...); q.KeyFile[0] ^= 1 },
		"sealed":  func(q *SnapshotPointer) { q.Sealed = q.Sealed[1:] },
		"account": func(q *SnapshotPointer) { other, _ := GenerateIdentity(); q.Account = AccountID(other.ID()) },
		"sig":     func(q *SnapshotPointer) { q.Sig = q.Sig[:10] },
	} {
		q := got
		edit(&q)
		if err := q.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s changed: Verify = %v, want ErrBadSignature", name, err)
		}
	}

	// Truncated and oversized frames are refused.
	if _, err := DecodeAnyFrame(b[:len(b)-1]); err == nil {
		t.Fatal("truncated pointer decoded")
	}
	big := SnapshotPointer{KeyFile: make([]byte, MaxPointerKeyFile+1)}
	big.Sign(id)
	bb, err := EncodeAnyFrame(&SnapshotPutRequest{Pointer: big})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeAnyFrame(bb); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized key file: %v", err)
	}
}
