package storagenode

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	fnet "github.com/fincrypt/fincrypt/net"
)

// TestPowerLossPutOverDamage stores a piece again after the scrubber
// dropped it as damaged (its damage entry not yet reported) and cuts the
// power at once: the piece keeps its index entry and account, and its
// damage entry stays gone (reported late, it would make the mediator count
// the new copy lost). indexPut commits both in one batch, with pebble.Sync.
func TestPowerLossPutOverDamage(t *testing.T) {
	fsys := vfs.NewCrashableMem()
	const dir = "/srv/node"
	opts := DiskStoreOptions{Capacity: 1 << 20, Logger: quiet, FS: fsys}
	s, err := OpenDiskStore(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	data, id := randPiece(t, 71, 4000)
	if err := s.Put(context.Background(), id, 4000, fnet.AccountID{1}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	checked, err := s.Stat(id)
	if err != nil {
		t.Fatal(err)
	}
	if dropped, err := s.dropDamaged(checked, errors.New("found damaged")); !dropped || err != nil {
		t.Fatalf("drop of the damaged piece: %v %v", dropped, err)
	}
	if err := s.Put(context.Background(), id, 4000, fnet.AccountID{2}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	after := fsys.CrashClone(vfs.CrashCloneCfg{})
	s.Close()

	opts.FS = after
	s, err = OpenDiskStore(dir, opts)
	if err != nil {
		t.Fatalf("reopen after the power cut: %v", err)
	}
	defer s.Close()
	if info, err := s.Stat(id); err != nil || info.Account != (fnet.AccountID{2}) {
		t.Fatalf("piece stored again over its damage entry, after the power cut: %+v, %v; want account 2", info, err)
	}
	dmg, err := s.Damaged(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dmg) != 0 {
		t.Fatalf("damage entries after the power cut: %+v; the piece stored again is whole", dmg)
	}
}
