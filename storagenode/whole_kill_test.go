package storagenode

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	fnet "github.com/fincrypt/fincrypt/net"
)

// TestOpenRefusesHeaderSizeMismatch: a piece whose file header names
// another size than its index entry is refused as corrupt when opened, not
// served with the header's size.
func TestOpenRefusesHeaderSizeMismatch(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20)
	defer s.Close()
	data, id := randPiece(t, 3, 1000)
	if err := s.Put(context.Background(), id, int64(len(data)), fnet.AccountID{7}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(id)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Open(id)
	if err != nil {
		t.Fatalf("the piece as stored: %v", err)
	}
	p.Close()
	info.Size++
	if err := s.db.Set(indexKey(id), encodeIndex(info), s.writeOpts()); err != nil {
		t.Fatal(err)
	}
	p, err = s.Open(id)
	if err == nil {
		p.Close()
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "header size 1000, index 1001") {
		t.Fatalf("a header of 1000 bytes under an index entry of 1001: %v, want ErrCorrupt", err)
	}
}
