package mediator

import (
	"context"
	"errors"
	"fmt"

	fnet "github.com/fincrypt/fincrypt/net"
)

// RegisterAccount creates the account of the connection's peer; it is
// idempotent and reports whether the account is new. Only the holder of the
// account key can open such a connection, so only it acts on the account.
func (c *core) RegisterAccount(ctx context.Context, acct fnet.AccountID) (bool, error) {
	err := c.store.CreateAccount(ctx, &Account{ID: acct, Created: c.now()})
	if errors.Is(err, ErrExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("account %s: %w", fnet.NodeID(acct), err)
	}
	c.log.Info("account registered", "account", fnet.NodeID(acct))
	return true, nil
}

func (c *core) requireAccount(ctx context.Context, acct fnet.AccountID) error {
	_, err := c.store.GetAccount(ctx, acct)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrUnknownAccount, fnet.NodeID(acct))
	}
	return err
}
