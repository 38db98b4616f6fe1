package storagenode

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// definedID is a piece's id computed as docs/FORMAT.md §4 defines it,
// with crypto/sha256 alone: none of the challenge package's batched
// hashing (16 leaves or two at a time), which a node's Put uses.
func definedID(data []byte) challenge.PieceID {
	var level []challenge.Hash
	for off := 0; off < len(data); off += challenge.LeafSize {
		level = append(level, sha256.Sum256(append([]byte{0}, data[off:min(off+challenge.LeafSize, len(data))]...)))
	}
	for len(level) > 1 {
		var next []challenge.Hash
		for i := 0; i < len(level); i += 2 {
			if i+1 < len(level) {
				next = append(next, sha256.Sum256(append(append([]byte{1}, level[i][:]...), level[i+1][:]...)))
			} else {
				next = append(next, level[i])
			}
		}
		level = next
	}
	return challenge.PieceID(level[0])
}

// TestPutLargePieceIDAsDefined: a piece large enough that a node hashes
// it in batches of leaves (here 3 MiB and a partial leaf, in pipeCopy's
// 1 MiB writes) is stored under the id the format defines, and refused,
// and not stored, when one byte differs: in the first leaf, in the second
// of a pair, at a block boundary, in a leaf's last byte (the hash's final
// block), in the partial leaf.
func TestPutLargePieceIDAsDefined(t *testing.T) {
	data, _ := randPiece(t, 41, 3<<20+100)
	id := definedID(data)
	ctx := context.Background()
	for _, at := range []int{0, challenge.LeafSize + 1, 17*challenge.LeafSize + 63, 33*challenge.LeafSize - 1, 3<<20 + 99} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			s := open(t, t.TempDir(), 1<<30)
			defer s.Close()
			bad := bytes.Clone(data)
			bad[at] ^= 0x40
			if err := s.Put(ctx, id, int64(len(bad)), fnet.AccountID{}, bytes.NewReader(bad)); !errors.Is(err, ErrMismatch) {
				t.Fatalf("byte %d changed: put %v, want a mismatch", at, err)
			}
			if _, err := s.Stat(id); err == nil {
				t.Fatalf("byte %d changed: the piece is stored", at)
			}
		})
	}
	s := open(t, t.TempDir(), 1<<30)
	defer s.Close()
	if err := s.Put(ctx, id, int64(len(data)), fnet.AccountID{}, bytes.NewReader(data)); err != nil {
		t.Fatalf("the piece under its defined id: %v", err)
	}
	if _, err := s.Stat(id); err != nil {
		t.Fatal(err)
	}
}
