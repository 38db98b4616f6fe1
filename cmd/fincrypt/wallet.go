package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/mediator"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/replicate"
)

func init() {
	mediatorFlag := &cli.StringFlag{Name: "mediator", Usage: "the mediator's `NODEID@HOST:PORT` (default: the one in the vault's config, set by `fincrypt init --mediator`)"}
	register(&cli.Command{
		Name:  "wallet",
		Usage: "your account's escrow with the mediator: deposit address and balance",
		Description: "On a network with payments, storage is paid from an escrow the mediator keeps\n" +
			"for your account. Deposit bitcoin to the account's address (it never changes);\n" +
			"a deposit counts after the mediator's confirmations. Each period the nodes that\n" +
			"hold your pieces are paid from it; when it runs out, no new data is placed and\n" +
			"after a grace period your data on the network is released.\n\n" +
			"The account is the vault's (its key is derived from the master key): the\n" +
			"commands ask for the vault password (--password-file, $FINCRYPT_PASSWORD, or\n" +
			"a prompt) and work while the vault is mounted.",
		Subcommands: []*cli.Command{{
			Name:  "deposit-address",
			Usage: "print the bitcoin address to deposit escrow to",
			Flags: []cli.Flag{passwordFileFlag, mediatorFlag},
			Action: func(c *cli.Context) error {
				cl, ctx, done, err := walletClient(c)
				if err != nil {
					return err
				}
				defer done()
				rep, err := cl.DepositAddress(ctx)
				if errors.Is(err, fnet.ErrUnsupported) {
					return userErr(exitNotFound, "this mediator runs without payments: storage needs no deposit")
				}
				if err != nil {
					return userErr(exitFailure, "%v", err)
				}
				fmt.Fprintln(c.App.Writer, rep.Address)
				fmt.Fprintf(c.App.ErrWriter, "(%s; a deposit counts after %d confirmations; check with `fincrypt wallet balance`)\n", rep.Network, rep.MinConf)
				return nil
			},
		}, {
			Name:  "balance",
			Usage: "show the account's escrow, pending deposits and how long it lasts",
			Description: "Prints the escrow (credited deposits minus charges), deposits awaiting\n" +
				"confirmations, the last period's charge and how many periods the escrow lasts\n" +
				"at that rate, and warns when it runs low (under the mediator's --warn-runway,\n" +
				"a week by default), ran out, or the\n" +
				"account is in debt. Amounts in satoshis. With --json: the fields of the\n" +
				"mediator's BalanceReply (docs/PROTOCOL.md, wallet messages).",
			Flags: []cli.Flag{passwordFileFlag, mediatorFlag, &cli.BoolFlag{Name: "json", Usage: "print JSON"}},
			Action: func(c *cli.Context) error {
				cl, ctx, done, err := walletClient(c)
				if err != nil {
					return err
				}
				defer done()
				b, err := cl.Balance(ctx)
				if err != nil {
					return userErr(exitFailure, "%v", err)
				}
				out := c.App.Writer
				if c.Bool("json") {
					enc := json.NewEncoder(out)
					enc.SetIndent("", "  ")
					return enc.Encode(b)
				}
				if !b.Metered {
					fmt.Fprintln(out, "This mediator runs without payments: storage needs no escrow.")
					return nil
				}
				fmt.Fprintf(out, "network          %s\n", b.Network)
				fmt.Fprintf(out, "deposit address  %s\n", orDash(b.DepositAddress))
				fmt.Fprintf(out, "escrow           %d sat\n", b.Escrow)
				fmt.Fprintf(out, "pending          %d sat (awaiting confirmations)\n", b.Pending)
				if b.Debt < 0 {
					fmt.Fprintf(out, "debt             %d sat\n", -b.Debt)
				}
				if b.PeriodsLeft >= 0 {
					fmt.Fprintf(out, "last charge      %d sat per %s: lasts about %s\n", b.LastCharge, b.Period, time.Duration(b.PeriodsLeft)*b.Period)
				} else {
					fmt.Fprintln(out, "last charge      nothing charged yet")
				}
				if b.Bytes > 0 {
					fmt.Fprintf(out, "pays             %d sat per GiB-month for %s of pieces: %.1f sat per %s, lasts %s\n",
						b.Price, units.HumanSize(uint64(b.Bytes)), b.PeriodCharge(), b.Period, fnet.HumanDuration(b.Runway))
				}
				if b.Needed > 0 {
					fmt.Fprintf(out, "runway needed    %d sat to store new data or end delinquency\n", b.Needed)
				}
				if b.NoticeCharge > 0 {
					fmt.Fprintf(out, "price notice     +%d sat per %s from %s\n", b.NoticeCharge, b.Period, b.NoticeAt.UTC().Format(time.RFC3339))
				}
				fmt.Fprintln(out, b.Verdict())
				return nil
			},
		}},
	})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// walletClient opens the vault (password), builds the account identity
// from its key and a client for the mediator (--mediator, or the vault's).
func walletClient(c *cli.Context) (*mediator.Client, context.Context, func(), error) {
	v, err := openVault(c, false)
	if err != nil {
		return nil, nil, nil, err
	}
	maddr := c.String("mediator")
	if maddr == "" {
		maddr = v.Config.Mediator
	}
	ident, err := replicate.AccountIdentity(v)
	v.Close()
	if err != nil {
		return nil, nil, nil, userErr(exitFailure, "account identity: %v", err)
	}
	if maddr == "" {
		return nil, nil, nil, userErr(exitUsage, "no mediator: give --mediator NODEID@HOST:PORT (or create the vault with `fincrypt init --mediator`)")
	}
	addr, err := fnet.ParseAddress(maddr)
	if err != nil {
		return nil, nil, nil, userErr(exitUsage, "mediator address: %v", err)
	}
	cl, err := mediator.NewClient(ident, addr, nil)
	if err != nil {
		return nil, nil, nil, userErr(exitFailure, "%v", err)
	}
	ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
	return cl, ctx, func() { cancel(); cl.Close() }, nil
}
