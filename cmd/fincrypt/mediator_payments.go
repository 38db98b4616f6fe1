package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/wallet"
)

// paymentsConfig maps the mediator's payment flags onto mediator.Payments.
// The passphrase comes from --wallet-passphrase-file or
// $FINCRYPT_WALLET_PASSPHRASE; a prompt only when --btcd-rpc asks for
// payments.
func paymentsConfig(c *cli.Context) (mediator.Payments, error) {
	p := mediator.Payments{
		PSBT: c.Bool("payout-psbt"), MinConf: c.Int("min-conf"), PayoutThreshold: c.Int64("payout-threshold"),
		FeeRate: c.Int64("fee-rate"), FeeBPS: uint32(c.Uint("fee-bps")), EscrowGrace: c.Duration("escrow-grace"),
		SyncInterval: c.Duration("sync-interval"), StartHeight: c.Int64("start-height"),
		PriceNotice: c.Duration("price-notice"), RunwayPeriods: c.Int("runway-periods"), RPCTimeout: c.Duration("rpc-timeout"),
	}
	if c.Uint("fee-bps") > wallet.MaxFeeBPS {
		return p, userErr(exitUsage, "--fee-bps %d: at most %d", c.Uint("fee-bps"), wallet.MaxFeeBPS)
	}
	if host := c.String("btcd-rpc"); host != "" {
		p.RPC = &wallet.RPCConfig{Host: host, User: c.String("btcd-rpc-user"), Pass: c.String("btcd-rpc-pass"), CertFile: c.String("btcd-rpc-cert")}
		if c.String("network") == "" {
			return p, userErr(exitUsage, "--btcd-rpc needs --network (mainnet, testnet, regtest or simnet)")
		}
	}
	file := c.String("wallet-passphrase-file")
	if file != "" || os.Getenv("FINCRYPT_WALLET_PASSPHRASE") != "" || p.RPC != nil || p.PSBT {
		pw, err := passwordFrom(file, "FINCRYPT_WALLET_PASSPHRASE", "Wallet passphrase", false)
		if err != nil {
			return p, err
		}
		p.Passphrase = pw
	}
	return p, nil
}

var mediatorLedgerCommand = &cli.Command{
	Name:  "ledger",
	Usage: "show the escrow ledger's balances and journal, from the running mediator",
	Description: "Asks the mediator running in DIR (over DIR/control.sock) for every non-zero\n" +
		"ledger balance (escrow:<account>, node:<node>, paid:<node>, fees:mediator,\n" +
		"unmetered:<node>, ...; docs/WALLET.md §5) and the journal entries from --from.\n" +
		"Amounts are satoshis. With --json: {metered, network, balances, entries,\n" +
		"on_chain, spendable}.",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "dir", Usage: "the mediator's `DIR`", Required: true},
		&cli.Uint64Flag{Name: "from", Usage: "first journal entry `SEQ`"},
		&cli.IntFlag{Name: "limit", Usage: "at most `N` journal entries", Value: 50},
		&cli.BoolFlag{Name: "json", Usage: "print JSON"},
	},
	Action: func(c *cli.Context) error {
		ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
		defer cancel()
		rep, err := mediator.ReadLedger(ctx, c.String("dir"), c.Uint64("from"), c.Int("limit"))
		if err != nil {
			return controlErr(err)
		}
		out := c.App.Writer
		if c.Bool("json") {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(rep)
		}
		mode := "payments on"
		if !rep.Metered {
			mode = "no payments (unmetered: earnings recorded, nothing charged or paid)"
		}
		fmt.Fprintf(out, "network %s, %s\nwallet outputs %d sat, %d sat spendable\n\n", rep.Network, mode, rep.OnChain, rep.Spendable)
		names := make([]string, 0, len(rep.Balances))
		for k := range rep.Balances {
			names = append(names, k)
		}
		sort.Strings(names)
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ACCOUNT\tBALANCE (sat)")
		for _, k := range names {
			fmt.Fprintf(tw, "%s\t%d\n", k, rep.Balances[k])
		}
		tw.Flush()
		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tKEY\tPOSTINGS")
		for _, e := range rep.Entries {
			var ps []string
			for _, p := range e.Postings {
				ps = append(ps, fmt.Sprintf("%s %+d", p.Account, p.Amount))
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", e.Seq, e.Time.UTC().Format(time.RFC3339), e.Key, strings.Join(ps, ", "))
		}
		return tw.Flush()
	},
}

// PayoutJSON is one line of `fincrypt mediator payouts --json`.
type payoutJSON struct {
	ID            uint64                `json:"id"`
	State         string                `json:"state"`
	TxID          string                `json:"txid"`
	Amount        int64                 `json:"amount"`
	Fee           int64                 `json:"fee"`
	Confirmations int64                 `json:"confirmations"`
	Created       time.Time             `json:"created"`
	PSBTFile      string                `json:"psbt_file,omitempty"`
	Nodes         []wallet.PayoutOutput `json:"nodes"`
	LastError     string                `json:"last_error,omitempty"`
}

var mediatorPayoutsCommand = &cli.Command{
	Name:  "payouts",
	Usage: "list the payouts to storage nodes, from the running mediator (abandon: a conflicted one)",
	Description: "Each payout is one batched transaction: its txid, the amount paid to the\n" +
		"nodes, the miner fee, its confirmations and state (signed, broadcast, psbt,\n" +
		"mined, confirmed, conflicted, abandoned), and the nodes paid with their\n" +
		"address, debit, fee share and amount. With --json: a list of {id, state, txid,\n" +
		"amount, fee, confirmations, created, psbt_file, nodes: [{node, address, debit,\n" +
		"fee_share, amount, vout}]}.\n\n" +
		"A payout is conflicted when another transaction spent one of its inputs (the\n" +
		"wallet's seed used elsewhere): it can never confirm, and its nodes stay debited\n" +
		"until `fincrypt mediator payouts abandon --dir DIR ID` gives their balances\n" +
		"back (docs/WALLET.md §8.3).",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "dir", Usage: "the mediator's `DIR` (required)"},
		&cli.BoolFlag{Name: "json", Usage: "print JSON"},
	},
	Subcommands: []*cli.Command{mediatorPayoutsAbandonCommand},
	Action: func(c *cli.Context) error {
		if c.String("dir") == "" {
			return userErr(exitUsage, "fincrypt mediator payouts: --dir is required")
		}
		if c.Args().Present() {
			return userErr(exitUsage, "fincrypt mediator payouts: unexpected argument %q (subcommand: abandon)", c.Args().First())
		}
		ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
		defer cancel()
		list, err := mediator.ReadPayouts(ctx, c.String("dir"))
		if err != nil {
			return controlErr(err)
		}
		out := c.App.Writer
		if c.Bool("json") {
			js := make([]payoutJSON, 0, len(list))
			for _, p := range list {
				js = append(js, payoutJSON{ID: p.ID, State: p.State, TxID: p.TxID, Amount: p.Amount, Fee: p.Fee,
					Confirmations: p.Confirmations, Created: p.Created.UTC(), PSBTFile: p.PSBTFile, Nodes: p.Outputs, LastError: p.LastError})
			}
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(js)
		}
		if len(list) == 0 {
			fmt.Fprintln(out, "no payouts yet")
			return nil
		}
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tCONF\tAMOUNT\tFEE\tTXID\tNODES PAID")
		for _, p := range list {
			var nodes []string
			for _, o := range p.Outputs {
				nodes = append(nodes, fmt.Sprintf("%s:%d", o.Node[:min(12, len(o.Node))], o.Amount))
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%s\t%s\n", p.ID, p.State, p.Confirmations, p.Amount, p.Fee, p.TxID, strings.Join(nodes, " "))
		}
		return tw.Flush()
	},
}

var mediatorPayoutsAbandonCommand = &cli.Command{
	Name:      "abandon",
	Usage:     "give the nodes of a conflicted payout their balances back",
	ArgsUsage: "ID",
	Description: "Asks the mediator running in DIR (over DIR/control.sock) to abandon payout\n" +
		"ID (see `fincrypt mediator payouts`). Only a conflicted payout can be\n" +
		"abandoned: another transaction spent one of its inputs, and that transaction\n" +
		"has --min-conf confirmations. Its nodes get their debits back in their\n" +
		"balances and are paid by the next payout; its inputs still the wallet's are\n" +
		"released. Should the abandoned transaction be mined after all, the nodes are\n" +
		"debited again (docs/WALLET.md §8.3).\n\n" +
		"Exit codes: 4 no mediator is running in DIR, it runs without payments, or\n" +
		"there is no payout ID; 8 the payout is not conflicted, or its conflict needs\n" +
		"more confirmations (the message says how many). With --json: {payout,\n" +
		"returned: [{node, amount, balance}], released, spent}.",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "dir", Usage: "the mediator's `DIR` (required)"},
		&cli.BoolFlag{Name: "json", Usage: "print JSON"},
	},
	Action: func(c *cli.Context) error {
		dir := ""
		for _, ctx := range c.Lineage() { // --dir given here or to payouts
			if slices.Contains(ctx.LocalFlagNames(), "dir") {
				dir = ctx.String("dir")
				break
			}
		}
		if dir == "" {
			return userErr(exitUsage, "fincrypt mediator payouts abandon: --dir is required")
		}
		if c.NArg() != 1 {
			return userErr(exitUsage, "fincrypt mediator payouts abandon: give one payout ID (fincrypt mediator payouts lists them)")
		}
		id, err := strconv.ParseUint(c.Args().First(), 10, 64)
		if err != nil {
			return userErr(exitUsage, "fincrypt mediator payouts abandon: payout ID %q is not a number", c.Args().First())
		}
		ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
		defer cancel()
		rep, err := mediator.AbandonPayout(ctx, dir, id)
		var na *wallet.NotAbandonableError
		switch {
		case errors.Is(err, wallet.ErrNoSuchPayout):
			return userErr(exitNotFound, "%v (fincrypt mediator payouts lists them)", err)
		case errors.As(err, &na):
			return userErr(exitRefused, "nothing changed: %v", err)
		case err != nil:
			return controlErr(err)
		}
		out := c.App.Writer
		if c.Bool("json") {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(rep)
		}
		p := rep.Payout
		fmt.Fprintf(out, "payout %d (%s) abandoned; it was conflicted by %s at height %d\n", p.ID, p.TxID, p.ConflictTx, p.ConflictHeight)
		fmt.Fprintln(out, "\nreturned to the nodes' balances (the next payout pays them):")
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tRETURNED (sat)\tBALANCE NOW (sat)")
		for _, r := range rep.Returned {
			fmt.Fprintf(tw, "%s\t%d\t%d\n", r.Node, r.Amount, r.Balance)
		}
		tw.Flush()
		list := func(what string, ops []string) {
			if len(ops) == 0 {
				fmt.Fprintf(out, "\n%s: none\n", what)
				return
			}
			fmt.Fprintf(out, "\n%s:\n  %s\n", what, strings.Join(ops, "\n  "))
		}
		list("inputs released (spendable again)", rep.Released)
		list("inputs spent by another transaction (gone)", rep.Spent)
		return nil
	},
}

// controlErr maps control-socket errors to user errors.
func controlErr(err error) error {
	switch {
	case errors.Is(err, mediator.ErrNotRunning):
		return userErr(exitNotFound, "%v", err)
	case errors.Is(err, mediator.ErrNoPayments):
		return userErr(exitNotFound, "%v", err)
	}
	return userErr(exitFailure, "%v", err)
}

// printSchedule prints the schedule's line of `fincrypt mediator status`:
// periods without a round, rounds run again, the last round and settlement.
func printSchedule(out io.Writer, st *mediator.Status) {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(out, "periods without a round %d, rounds run again after a crash %d, last round %s, settled through %s\n",
		st.PeriodGaps, st.RoundsRerun, ts(st.LastRound), ts(st.SettledThrough))
}
