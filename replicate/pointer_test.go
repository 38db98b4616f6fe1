package replicate

import (
	"errors"
	"testing"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestSnapshotPointerAtMediator: the mediator keeps the newest pointer an
// account signed, refuses stale and forged ones, and serves it to anyone.
func TestSnapshotPointerAtMediator(t *testing.T) {
	p := testplanet.New(t, testplanet.Config{StorageNodes: 1})
	owner := p.Client
	ctx := p.Context()
	acct := owner.Account()

	anonID, _ := fnet.GenerateIdentity()
	anon, err := mediator.NewClient(anonID, p.Mediator.Address(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.GetSnapshot(ctx, acct); !errors.Is(err, fnet.ErrNotFound) {
		t.Fatalf("get before any put: %v", err)
	}
	if err := owner.PutSnapshot(ctx, &fnet.SnapshotPointer{Seq: 10, KeyFile: []byte("k1"), Sealed: []byte("s1")}); err != nil {
		t.Fatal(err)
	}
	if err := owner.PutSnapshot(ctx, &fnet.SnapshotPointer{Seq: 10, KeyFile: []byte("k2")}); !errors.Is(err, fnet.ErrBadRequest) {
		t.Fatalf("stale pointer: %v", err)
	}
	got, err := anon.GetSnapshot(ctx, acct)
	if err != nil || got.Seq != 10 || string(got.KeyFile) != "k1" {
		t.Fatalf("get: %+v, %v", got, err)
	}

	// Another registered account cannot store a pointer for this one, and
	// its own pointer must carry its own signature.
	otherID, _ := fnet.GenerateIdentity()
	other, err := mediator.NewClient(otherID, p.Mediator.Address(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.RegisterAccount(ctx); err != nil {
		t.Fatal(err)
	}
	conn := mustDial(t, p, otherID)
	forged := &fnet.SnapshotPointer{Seq: 11, KeyFile: []byte("evil")}
	forged.Sign(otherID)
	forged.Account = acct
	if _, err := fnet.CallAnyFor[*fnet.SnapshotPutReply](ctx, conn, &fnet.SnapshotPutRequest{Pointer: *forged}); !errors.Is(err, fnet.ErrUnauthorized) {
		t.Fatalf("pointer for another account: %v", err)
	}
	badSig := &fnet.SnapshotPointer{Seq: 11, KeyFile: []byte("evil")}
	badSig.Sign(anonID)
	badSig.Account = fnet.AccountID(otherID.ID())
	if _, err := fnet.CallAnyFor[*fnet.SnapshotPutReply](ctx, conn, &fnet.SnapshotPutRequest{Pointer: *badSig}); !errors.Is(err, fnet.ErrBadRequest) {
		t.Fatalf("pointer with a foreign signature: %v", err)
	}
	if got, _ := anon.GetSnapshot(ctx, acct); got == nil || got.Seq != 10 {
		t.Fatalf("pointer changed by a refused put: %+v", got)
	}
}

// mustDial opens a raw connection to the mediator as identity id.
func mustDial(t *testing.T, p *testplanet.Planet, id *fnet.Identity) *fnet.Conn {
	t.Helper()
	tr, err := fnet.NewDialer(id, fnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	conn, err := tr.Dial(p.Context(), p.Mediator.Address())
	if err != nil {
		t.Fatal(err)
	}
	return conn
}
