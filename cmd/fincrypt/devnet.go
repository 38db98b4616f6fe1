package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/devnet"
	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/mediator"
)

func init() {
	register(&cli.Command{
		Name:  "devnet",
		Usage: "run a mediator, storage nodes and a bitcoin node on loopback, in one process",
		Description: "Starts a whole Fincrypt network on 127.0.0.1 for trying things out: a\n" +
			"mediator, --nodes storage nodes and a btcd in simnet that devnet mines itself,\n" +
			"so payments run their whole cycle (deposits, settlement every period, batched\n" +
			"payouts). Everything lives in --dir D:\n\n" +
			"  D/mediator.addr   the mediator's address, for `fincrypt init --mediator`\n" +
			"  D/mediator        the mediator (fincrypt mediator status|ledger|payouts --dir D/mediator)\n" +
			"  D/node-1..N       the storage nodes\n" +
			"  D/btcd            btcd's chain; D/logs: one log per part\n\n" +
			"Restarting on the same D resumes the same network (same ids and ports). Stop\n" +
			"it with Ctrl-C. Fund an account's escrow with\n" +
			"`fincrypt devnet fund --dir D --address $(fincrypt wallet deposit-address)`.\n\n" +
			"The erasure scheme leaves a spare node for repair: with 5 nodes it is 2/4 with\n" +
			"repair threshold 4 (the mediator's own 2/5 default would leave no node to\n" +
			"rebuild a lost piece on); in general N = nodes-1 (at most 4), K = N/2.\n" +
			"Each node offers --capacity; by default a quarter of the disk space free in\n" +
			"--dir, shared by the nodes (64 MiB to 64 GiB each). At start the devnet says,\n" +
			"and writes to D/summary.txt, how much of a user's data the network holds.\n\n" +
			"Prices: node 1 asks --price (default 10 000 000 sat, 0.1 devnet BTC, per\n" +
			"GiB-month of pieces), each further node 10% more, so a demo's charge shows\n" +
			"every period; `devnet fund` deposits 1 BTC by default, which at the default\n" +
			"price keeps 10 GiB of data (20 GiB of pieces at 2/4) for about 13 days. The\n" +
			"mediator refuses nodes above 10 times --price (--max-price of `fincrypt\n" +
			"mediator`) and warns clients 10 periods before their escrow runs out.\n" +
			"btcd is $FINCRYPT_BTCD, btcd in $PATH, or tools/bin/btcd of the source tree\n" +
			"(`make tools`); --no-bitcoin runs without payments.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "the devnet's `DIR` (required)"},
			&cli.IntFlag{Name: "nodes", Usage: "number of storage nodes", Value: devnet.DefaultNodes},
			&cli.DurationFlag{Name: "period", Usage: "challenge and settlement period", Value: devnet.DefaultPeriod},
			&cli.StringFlag{Name: "scheme", Usage: "erasure scheme `K/N` (default: see above)"},
			&cli.IntFlag{Name: "repair-threshold", Usage: "repair below `T` healthy pieces (default: N)"},
			&cli.BoolFlag{Name: "no-bitcoin", Usage: "no btcd: a private network without payments"},
			&cli.Uint64Flag{Name: "price", Usage: "node 1's price in `SAT` per GiB-month (node i asks 10% more per node)", Value: devnet.DefaultPrice},
			&cli.StringFlag{Name: "capacity", Usage: "each storage node's capacity, `SIZE` like 2GiB", DefaultText: "a quarter of the free disk, shared by the nodes, at most 64GiB each"},
		},
		Action: runDevnet,
		Subcommands: []*cli.Command{{
			Name:  "fund",
			Usage: "send devnet bitcoin to an address (an account's deposit address) and mine a block",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "the running devnet's `DIR`", Required: true},
				&cli.StringFlag{Name: "address", Usage: "simnet `ADDRESS` to pay (from `fincrypt wallet deposit-address`)", Required: true},
				&cli.StringFlag{Name: "amount", Usage: "`BTC` to send", Value: strconv.FormatFloat(devnet.DemoDeposit/1e8, 'f', -1, 64)},
			},
			Action: func(c *cli.Context) error {
				btc, err := strconv.ParseFloat(c.String("amount"), 64)
				if err != nil || btc <= 0 || btc > 10 {
					return userErr(exitUsage, "--amount %q: want a number of BTC above 0, at most 10", c.String("amount"))
				}
				ctx, cancel := context.WithTimeout(c.Context, time.Minute)
				defer cancel()
				txid, err := devnet.Fund(ctx, c.String("dir"), c.String("address"), int64(math.Round(btc*1e8)))
				if errors.Is(err, devnet.ErrNoBitcoin) {
					return userErr(exitNotFound, "%v", err)
				}
				if err != nil {
					return userErr(exitFailure, "%v", err)
				}
				fmt.Fprintln(c.App.Writer, txid)
				return nil
			},
		}},
	})
}

func runDevnet(c *cli.Context) error {
	if c.String("dir") == "" {
		return userErr(exitUsage, "--dir is required")
	}
	if c.Args().Present() {
		return userErr(exitUsage, "unexpected argument %q (subcommand: fund)", c.Args().First())
	}
	cfg := devnet.Config{Dir: c.String("dir"), Nodes: c.Int("nodes"), Period: c.Duration("period"), NoBitcoin: c.Bool("no-bitcoin"),
		Price: c.Uint64("price"), LogJSON: c.String("log-format") == "json"}
	if cfg.Price == 0 || cfg.Price > mediator.MaxMaxPrice/10 {
		return userErr(exitUsage, "--price %d: want 1 to %d sat per GiB-month", cfg.Price, uint64(mediator.MaxMaxPrice/10))
	}
	if s := c.String("scheme"); s != "" {
		scheme, err := erasure.ParseScheme(s)
		if err != nil {
			return userErr(exitUsage, "--scheme: %v", err)
		}
		cfg.Scheme, cfg.RepairThreshold = scheme, c.Int("repair-threshold")
		if cfg.RepairThreshold == 0 {
			cfg.RepairThreshold = scheme.N
		}
	}
	if cfg.Period <= 0 {
		return userErr(exitUsage, "--period must be positive")
	}
	if c.IsSet("capacity") {
		size, err := units.ParseSize(c.String("capacity"))
		if err != nil || size < devnet.MinCapacity || size > math.MaxInt64 {
			return userErr(exitUsage, "--capacity %q: want a size of at least %s, like 2GiB", c.String("capacity"), units.HumanSize(devnet.MinCapacity))
		}
		cfg.Capacity = int64(size)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := devnet.Start(cfg)
	if err != nil {
		return userErr(exitFailure, "devnet: %v", err)
	}
	stopMetrics, err := startMonitor(c, devnetRegistry(n), devnetPage(n))
	if err != nil {
		n.Close()
		return err
	}
	defer stopMetrics()
	fmt.Fprintf(c.App.ErrWriter, "devnet running: mediator %s, %d storage nodes; logs in %s/logs. Ctrl-C stops it.\n%s\n",
		n.Mediator.Address(), len(n.Nodes), cfg.Dir, n.Summary())
	runErr := n.Run(ctx)
	closeErr := n.Close()
	if runErr != nil {
		return userErr(exitFailure, "devnet: %v", runErr)
	}
	if closeErr != nil {
		return userErr(exitFailure, "devnet: stopping: %v", closeErr)
	}
	fmt.Fprintln(c.App.ErrWriter, "devnet stopped")
	return nil
}
