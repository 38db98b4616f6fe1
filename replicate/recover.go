package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/fincrypt/fincrypt/internal/fsutil"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// RecoverOptions say which vault's index to rebuild, and from where.
type RecoverOptions struct {
	// Vault is the unlocked vault, opened with Lock (not mounted).
	Vault *vault.Vault
	// Mediator keeps the account's snapshot pointer.
	Mediator fnet.Address
	// PieceTimeout and HedgeAfter as in Config (zero: defaults).
	PieceTimeout, HedgeAfter time.Duration
	Logger                   *slog.Logger
	// AcceptMismatch rebuilds the index even from a chain whose records
	// do not make its recorded state (ErrStateMismatch; Mismatch is set).
	AcceptMismatch bool
}

// RecoverResult describes a rebuilt index.
type RecoverResult struct {
	RestoreResult
	// Damaged is where the index that was replaced now lies ("" if there
	// was none); nothing in it is deleted.
	Damaged string
}

// RecoverIndex replaces a vault's damaged or lost index with the account's
// newest network snapshot. The chunk store is left as it is: chunks the
// snapshot references are read from it, the others from the network. The
// old index is kept beside the new one (Damaged). Everything written after
// the snapshot was taken is not in the new index; the caller sets aside the
// chunks it does not reference (fs.SetAsideUnreferenced).
func RecoverIndex(ctx context.Context, o RecoverOptions) (*RecoverResult, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.PieceTimeout <= 0 {
		o.PieceTimeout = 30 * time.Second
	}
	if o.HedgeAfter <= 0 {
		o.HedgeAfter = 2 * time.Second
	}
	v := o.Vault
	id, err := AccountIdentity(v)
	if err != nil {
		return nil, err
	}
	acct := fnet.AccountID(id.ID())
	client, err := mediator.NewClient(id, o.Mediator, nil)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	p, err := client.GetSnapshot(ctx, acct)
	if err != nil {
		return nil, fmt.Errorf("the account's snapshot pointer: %w", err)
	}
	rs, err := fetchSnapshot(ctx, client, v, acct, p, o.PieceTimeout, o.HedgeAfter, nil)
	if err != nil {
		return nil, err
	}
	// Build the new index beside the old one; swap only once it is whole.
	building := v.IndexDir() + ".recovering"
	if err := os.RemoveAll(building); err != nil {
		return nil, err
	}
	idx, err := meta.Open(building, v.Keys, meta.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	n := rs.count
	_, mismatch, err := importRestored(idx, p.KeyFile, rs, o.AcceptMismatch)
	if cerr := idx.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.RemoveAll(building)
		return nil, fmt.Errorf("rebuilding the index: %w", err)
	}
	res := &RecoverResult{RestoreResult: RestoreResult{Taken: time.Unix(0, int64(p.Seq)), Segments: rs.segments, Records: n, Mismatch: mismatch}}
	if _, err := os.Stat(v.IndexDir()); err == nil {
		res.Damaged = fmt.Sprintf("%s.damaged-%s", v.IndexDir(), time.Now().UTC().Format("20060102T150405Z"))
		if err := os.Rename(v.IndexDir(), res.Damaged); err != nil {
			os.RemoveAll(building)
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		os.RemoveAll(building)
		return nil, err
	}
	if err := os.Rename(building, v.IndexDir()); err != nil {
		return nil, err
	}
	if err := fsutil.SyncDir(v.Home); err != nil {
		return nil, err
	}
	log.Info("index recovered from the network snapshot", "records", n, "segments", rs.segments, "taken", res.Taken, "damaged", res.Damaged)
	return res, nil
}
