package net

import (
	"errors"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
)

// TestTicketExpiresAtItsSecond: a ticket is good until, not through, its
// expiry: at the exact second it names it is refused, a nanosecond before
// it is accepted, on Verify and on VerifyFrom alike.
func TestTicketExpiresAtItsSecond(t *testing.T) {
	med := mustIdentity(t)
	node := mustIdentity(t).ID()
	piece := challenge.PieceID{7}
	expires := time.Unix(time.Now().Add(time.Hour).Unix(), 0)
	tk := SignTicket(med, Ticket{Node: node, Piece: piece, Op: OpGet, Size: 1, Expires: expires})
	if err := tk.Verify(med.ID(), node, piece, OpGet, expires.Add(-time.Nanosecond)); err != nil {
		t.Fatalf("a nanosecond before expiry: %v", err)
	}
	for _, at := range []time.Time{expires, expires.Add(time.Nanosecond), expires.Add(time.Second)} {
		if err := tk.Verify(med.ID(), node, piece, OpGet, at); !errors.Is(err, ErrTicketExpired) {
			t.Errorf("at %s (expires %s): %v, want expired", at, expires, err)
		}
	}
}

// TestProofWithFewerOpeningsThanAsked: a well-formed proof that opens fewer
// leaves than the challenge asked for (a prover sampling less of a piece it
// partly lost) fails, even with its digest and paths right.
func TestProofWithFewerOpeningsThanAsked(t *testing.T) {
	data := make([]byte, 40*challenge.LeafSize+5)
	for i := range data {
		data[i] = byte(i * 7)
	}
	b, _ := challenge.NewBuilder(int64(len(data)))
	b.Write(data)
	tree, _ := b.Tree()
	id := tree.Root()
	src := challenge.MemSource{Data: data, Tree: tree}
	for asked := 2; asked <= 8; asked++ {
		req := &ChallengeRequest{Nonce: challenge.Nonce{byte(asked)}, Openings: uint8(asked), Pieces: []challenge.PieceID{id}}
		full, err := challenge.Prove(src, id, int64(len(data)), req.Nonce, asked)
		if err != nil {
			t.Fatal(err)
		}
		short, err := challenge.Prove(src, id, int64(len(data)), req.Nonce, asked-1)
		if err != nil {
			t.Fatal(err)
		}
		// The short proof is the full one's prefix, digest recomputed:
		// everything it does open is right.
		if err := challenge.Verify(id, int64(len(data)), req.Nonce, asked-1, short); err != nil {
			t.Fatalf("the short proof is not even valid for what it opens: %v", err)
		}
		for name, p := range map[string]challenge.Proof{"full": full, "short": short} {
			rep := &ChallengeResponse{Nonce: req.Nonce, Proofs: []PieceProof{{Status: ProofOK, Proof: p}}}
			res, err := CheckChallenge(req, rep, []int64{int64(len(data))})
			if err != nil {
				t.Fatal(err)
			}
			if ok := res[0] == nil; ok != (name == "full") {
				t.Errorf("asked %d openings: %s proof of %d openings: %v", asked, name, len(p.Openings), res[0])
			}
		}
	}
}

// TestWantLengthBounds: a get may ask for any range inside the ticket's
// piece, to its last byte exactly, and nothing past it.
func TestWantLengthBounds(t *testing.T) {
	const size = 1000
	for _, c := range []struct {
		offset, length, want uint64
		ok                   bool
	}{
		{0, 0, size, true},
		{size, 0, 0, true}, // an empty range at the end
		{size + 1, 0, 0, false},
		{0, size, size, true},
		{0, size + 1, 0, false},
		{300, size - 300, size - 300, true}, // to the last byte
		{300, size - 299, 0, false},         // one past it
		{300, 0, size - 300, true},
	} {
		r := &GetRequest{Offset: c.offset, Length: c.length}
		r.Ticket.Size = size
		got, err := r.WantLength()
		if c.ok != (err == nil) || (c.ok && got != c.want) {
			t.Fatalf("offset %d length %d of %d: %d, %v; want %d, ok %v", c.offset, c.length, size, got, err, c.want, c.ok)
		}
		if err != nil && !errors.Is(err, ErrBadRequest) {
			t.Fatalf("offset %d length %d: %v, want ErrBadRequest", c.offset, c.length, err)
		}
	}
}
