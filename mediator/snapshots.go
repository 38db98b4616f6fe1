package mediator

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/fincrypt/fincrypt/internal/fsutil"
	"os"
	"path/filepath"

	fnet "github.com/fincrypt/fincrypt/net"
)

// Index snapshot pointers (docs/PROTOCOL.md, "Index snapshots"): one per
// account, the newest by sequence number, in DIR/snapshots/<account hex>,
// each the encoded SnapshotPutRequest as received. The mediator checks the
// account signature before it keeps a pointer, so what it serves verifies.

// ErrNoSnapshot means the account has stored no snapshot pointer.
var ErrNoSnapshot = fmt.Errorf("no snapshot for this account (%w)", fnet.ErrNotFound)

// ErrStaleSnapshot means a pointer is not newer than the one kept.
var ErrStaleSnapshot = fmt.Errorf("snapshot pointer is not newer than the stored one (%w)", fnet.ErrBadRequest)

func (c *core) snapshotPath(acct fnet.AccountID) string {
	return filepath.Join(c.cfg.Dir, "snapshots", hex.EncodeToString(acct[:]))
}

func (c *core) readSnapshot(acct fnet.AccountID) (*fnet.SnapshotPointer, error) {
	b, err := os.ReadFile(c.snapshotPath(acct))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoSnapshot
	}
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot pointer: %v", fnet.ErrInternal, err)
	}
	m, err := fnet.DecodeAnyFrame(b)
	if err != nil {
		return nil, fmt.Errorf("%w: stored snapshot pointer: %v", fnet.ErrInternal, err)
	}
	req, ok := m.(*fnet.SnapshotPutRequest)
	if !ok {
		return nil, fmt.Errorf("%w: stored snapshot pointer is a %s", fnet.ErrInternal, fnet.TypeName(m.Type()))
	}
	return &req.Pointer, nil
}

// PutSnapshot keeps the account's pointer if it is signed by the account
// and newer than the one kept.
func (c *core) PutSnapshot(ctx context.Context, acct fnet.AccountID, m *fnet.SnapshotPutRequest) error {
	if err := c.requireAccount(ctx, acct); err != nil {
		return err
	}
	if m.Pointer.Account != acct {
		return fmt.Errorf("%w: pointer names another account", fnet.ErrUnauthorized)
	}
	if err := m.Pointer.Verify(); err != nil {
		return fmt.Errorf("%w: %v", fnet.ErrBadRequest, err)
	}
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	old, err := c.readSnapshot(acct)
	switch {
	case errors.Is(err, ErrNoSnapshot):
	case err != nil:
		return err
	case old.Seq >= m.Pointer.Seq:
		return ErrStaleSnapshot
	}
	b, err := fnet.EncodeAnyFrame(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.snapshotPath(acct)), 0o700); err != nil {
		return fmt.Errorf("%w: %v", fnet.ErrInternal, err)
	}
	if err := fsutil.WriteFileAtomic(c.snapshotPath(acct), b, 0o600); err != nil {
		return fmt.Errorf("%w: %v", fnet.ErrInternal, err)
	}
	c.log.Info("snapshot pointer stored", "account", fnet.NodeID(acct), "seq", m.Pointer.Seq)
	return nil
}

// GetSnapshot returns an account's newest pointer. Any peer may ask (see
// docs/SECURITY.md: this serves the account's wrapped key file).
func (c *core) GetSnapshot(ctx context.Context, acct fnet.AccountID) (*fnet.SnapshotGetReply, error) {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	p, err := c.readSnapshot(acct)
	if err != nil {
		return nil, err
	}
	return &fnet.SnapshotGetReply{Pointer: *p}, nil
}

// PutSnapshot signs p with the client's account key and stores it as the
// account's newest snapshot pointer.
func (c *Client) PutSnapshot(ctx context.Context, p *fnet.SnapshotPointer) error {
	p.Sign(c.id)
	if _, err := callMediator[*fnet.SnapshotPutReply](ctx, c, &fnet.SnapshotPutRequest{Pointer: *p}); err != nil {
		return fmt.Errorf("store snapshot pointer: %w", err)
	}
	return nil
}

// GetSnapshot fetches account's newest snapshot pointer and checks its
// signature; the client may dial under any identity.
func (c *Client) GetSnapshot(ctx context.Context, acct fnet.AccountID) (*fnet.SnapshotPointer, error) {
	rep, err := callMediator[*fnet.SnapshotGetReply](ctx, c, &fnet.SnapshotGetRequest{Account: acct})
	if err != nil {
		return nil, fmt.Errorf("snapshot pointer: %w", err)
	}
	if rep.Pointer.Account != acct {
		return nil, fmt.Errorf("snapshot pointer: names another account: %w", fnet.ErrBadSignature)
	}
	if err := rep.Pointer.Verify(); err != nil {
		return nil, fmt.Errorf("snapshot pointer: %w", err)
	}
	return &rep.Pointer, nil
}
