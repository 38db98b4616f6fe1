package net

import (
	"errors"
	"fmt"

	"github.com/fincrypt/fincrypt/challenge"
)

// Per-piece outcomes of CheckChallenge besides challenge.ErrProof.
var (
	ErrPieceMissing  = errors.New("node reports the piece missing")
	ErrPieceFailed   = errors.New("node could not read the piece")
	ErrResponseShape = errors.New("challenge response does not match the request")
)

// CheckChallenge verifies a node's answer to req, for a verifier (the
// mediator) that knows each requested piece's size (sizes[i] for
// req.Pieces[i]). It returns one result per piece in request order: nil if
// the proof verifies, else ErrPieceMissing, ErrPieceFailed or an error
// wrapping challenge.ErrProof. The second result is ErrResponseShape when
// the response as a whole is unusable (wrong nonce, count or piece order).
func CheckChallenge(req *ChallengeRequest, rep *ChallengeResponse, sizes []int64) ([]error, error) {
	if len(sizes) != len(req.Pieces) {
		return nil, fmt.Errorf("check challenge: %d sizes for %d pieces", len(sizes), len(req.Pieces))
	}
	if rep.Nonce != req.Nonce {
		return nil, fmt.Errorf("%w: nonce differs", ErrResponseShape)
	}
	if len(rep.Proofs) != len(req.Pieces) {
		return nil, fmt.Errorf("%w: %d proofs for %d pieces", ErrResponseShape, len(rep.Proofs), len(req.Pieces))
	}
	out := make([]error, len(req.Pieces))
	for i, id := range req.Pieces {
		p := rep.Proofs[i]
		if p.Proof.Piece != id {
			return nil, fmt.Errorf("%w: proof %d is for piece %s, want %s", ErrResponseShape, i, p.Proof.Piece, id)
		}
		switch p.Status {
		case ProofMissing:
			out[i] = fmt.Errorf("piece %s: %w", id, ErrPieceMissing)
		case ProofFailed:
			out[i] = fmt.Errorf("piece %s: %w", id, ErrPieceFailed)
		default:
			out[i] = challenge.Verify(id, sizes[i], req.Nonce, int(req.Openings), p.Proof)
		}
	}
	return out, nil
}
