package storagenode

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	fnet "github.com/fincrypt/fincrypt/net"
)

// TestPieceFilesPrivate: on a node's disk a stored piece and the store's
// directories are the operator's alone (0600 and 0700, whatever the
// umask): other users of the machine cannot list which pieces it holds or
// read them.
func TestPieceFilesPrivate(t *testing.T) {
	old := syscall.Umask(0o002) // as permissive as a shared machine's
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "data")
	s := open(t, dir, 1<<20)
	defer s.Close()
	data, id := randPiece(t, 3, 5000)
	if err := s.Put(context.Background(), id, int64(len(data)), fnet.AccountID{7}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		want os.FileMode
	}{
		{s.piecePath(id), 0o600},
		{filepath.Dir(s.piecePath(id)), 0o700},
		{filepath.Join(dir, piecesDir), 0o700},
		{dir, 0o700},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != c.want {
			t.Errorf("%s: mode %o, want %o", c.path, got, c.want)
		}
	}
}
