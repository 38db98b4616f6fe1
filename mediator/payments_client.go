package mediator

import (
	"context"
	"fmt"

	fnet "github.com/fincrypt/fincrypt/net"
)

// DepositAddress asks the mediator for the account's escrow deposit address
// (registering the account first). A mediator without payments answers an
// error that wraps fnet.ErrUnsupported.
func (c *Client) DepositAddress(ctx context.Context) (*fnet.DepositAddressReply, error) {
	if _, err := c.RegisterAccount(ctx); err != nil {
		return nil, err
	}
	rep, err := callMediator[*fnet.DepositAddressReply](ctx, c, &fnet.DepositAddressRequest{})
	if err != nil {
		return nil, fmt.Errorf("deposit address: %w", err)
	}
	return rep, nil
}

// Balance asks the mediator for the account's escrow standing; Metered is
// false on a mediator without payments.
func (c *Client) Balance(ctx context.Context) (*fnet.BalanceReply, error) {
	if _, err := c.RegisterAccount(ctx); err != nil {
		return nil, err
	}
	rep, err := callMediator[*fnet.BalanceReply](ctx, c, &fnet.BalanceRequest{})
	if err != nil {
		return nil, fmt.Errorf("balance: %w", err)
	}
	return rep, nil
}
