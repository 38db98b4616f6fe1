package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/mediator"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/wallet"
)

func init() {
	register(&cli.Command{
		Name:  "mediator",
		Usage: "run the mediator that places, challenges and repairs",
		Description: "The mediator keeps the registry of storage nodes and client accounts, places\n" +
			"each segment's pieces on the cheapest healthy nodes, challenges every node each\n" +
			"period to prove it still holds its pieces, and rebuilds lost pieces elsewhere.\n\n" +
			"Once listening it writes its NODEID@host:port to DIR/address; give that to\n" +
			"storage nodes (--mediator) and clients. Its state lives in DIR/db and survives\n" +
			"restarts. `fincrypt mediator status --dir DIR` asks the running daemon over the\n" +
			"control socket DIR/control.sock. Stop it with Ctrl-C.\n\n" +
			"Payments. With a wallet passphrase (--wallet-passphrase-file FILE, or\n" +
			"$FINCRYPT_WALLET_PASSPHRASE) the mediator keeps an HD wallet in DIR/wallet (seed\n" +
			"encrypted with the passphrase; back the directory up) and a double-entry ledger.\n" +
			"Without a Bitcoin node it runs a private network without payments: placement\n" +
			"needs no escrow and the ledger records what each node earned. With --btcd-rpc\n" +
			"(a btcd or bitcoind on --network) payments are on: clients deposit to their\n" +
			"address (`fincrypt wallet deposit-address`), credited after --min-conf\n" +
			"confirmations; each period the nodes that passed their challenges are paid\n" +
			"from the clients' escrow (less --fee-bps); balances above --payout-threshold\n" +
			"are paid in one batched transaction, or written as PSBT files to DIR/payouts\n" +
			"with --payout-psbt. An account without escrow gets no placements; after\n" +
			"--escrow-grace its segments are released. Storage nodes' payout addresses\n" +
			"must be of --network. `fincrypt mediator ledger` and `payouts` show the books.\n\n" +
			"Prices. A storage node asks --price satoshis per GiB per month; the mediator\n" +
			"refuses at registration a node asking more than --max-price (default 10 000:\n" +
			"100 times a typical 100 sat, about $0.10 at $100 000 per bitcoin), so that a\n" +
			"typo or a greedy node cannot drain clients' escrow.\n\n" +
			"Example:\n" +
			"  fincrypt mediator --dir /srv/mediator --listen 0.0.0.0:7770 --advertise my.host:7770\n" +
			"  fincrypt mediator --dir /tmp/m --listen 127.0.0.1:0 --period 5s --heartbeat 1s --offline-after 15s\n" +
			"  FINCRYPT_WALLET_PASSPHRASE=... fincrypt mediator --dir /srv/m --network testnet \\\n" +
			"      --btcd-rpc 127.0.0.1:18334 --btcd-rpc-user u --btcd-rpc-pass p --btcd-rpc-cert ~/.btcd/rpc.cert",
		Flags: []cli.Flag{
			// Not Required: urfave/cli would then demand it before `status` too.
			&cli.StringFlag{Name: "dir", Usage: "the mediator's `DIR`: identity, state, address, control socket (required)"},
			mediatorDBFlag,
			&cli.StringFlag{Name: "listen", Usage: "UDP `HOST:PORT` to listen on (port 0: any free port)", Value: "127.0.0.1:7770"},
			&cli.StringFlag{Name: "advertise", Usage: "`HOST:PORT` that others dial, when it differs from --listen"},
			&cli.StringFlag{Name: "scheme", Usage: "default erasure scheme `K/N`: any K of N pieces rebuild a segment (N/K >= 2)", Value: mediator.DefaultScheme.String()},
			&cli.IntFlag{Name: "repair-threshold", Usage: "repair a segment with fewer healthy pieces than `T` (K < T <= N)", DefaultText: "4 for 2/5, else K+(N-K+1)/2"},
			&cli.IntFlag{Name: "repair-workers", Usage: "repair up to `N` segments at once, most endangered first (1.." + fmt.Sprint(mediator.MaxRepairWorkers) + ")", Value: mediator.DefaultRepairWorkers},
			&cli.IntFlag{Name: "repair-node-transfers", Usage: "at most `N` repair transfers at once per storage node, as source or target (1.." + fmt.Sprint(mediator.MaxRepairWorkers) + ")", Value: mediator.DefaultRepairNodeTransfers},
			&cli.DurationFlag{Name: "period", Usage: "time between challenge rounds", Value: mediator.DefaultPeriod},
			&cli.DurationFlag{Name: "offline-after", Usage: "a node silent this long has its pieces counted lost and repaired", Value: mediator.DefaultOfflineAfter},
			&cli.DurationFlag{Name: "heartbeat", Usage: "heartbeat interval asked of nodes", Value: mediator.DefaultHeartbeatInterval},
			&cli.DurationFlag{Name: "online-window", Usage: "a node silent longer counts as offline (heartbeat <= window < offline-after)", DefaultText: "3 heartbeats"},
			&cli.IntFlag{Name: "challenge-sample", Usage: "pieces challenged per node per period", Value: mediator.DefaultChallengeSample},
			&cli.IntFlag{Name: "challenge-openings", Usage: "leaves opened per challenged piece", Value: mediator.DefaultChallengeOpenings},
			&cli.DurationFlag{Name: "challenge-timeout", Usage: "deadline for a node's answer", DefaultText: "min(period/2, 30s)"},
			&cli.DurationFlag{Name: "ticket-ttl", Usage: "lifetime of tickets and uncommitted placements", Value: mediator.DefaultTicketTTL},
			&cli.DurationFlag{Name: "grace-period", Usage: "nodes delete pieces without contract after this long", Value: mediator.DefaultGracePeriod},
			&cli.IntFlag{Name: "max-conns", Usage: "incoming connections at once", Value: fnet.DefaultMaxConns},
			&cli.IntFlag{Name: "max-conns-per-ip", Usage: "incoming connections at once from one address", Value: fnet.DefaultMaxConnsPerIP},
			&cli.Float64Flag{Name: "request-rate", Usage: "requests per second one peer may make (bursts of twice as many); over it the mediator answers busy", Value: fnet.DefaultRequestRate},
			&cli.StringFlag{Name: "network", Usage: "bitcoin network nodes are paid on: mainnet, testnet, regtest or simnet (empty: any; a private network)"},
			&cli.StringFlag{Name: "wallet-passphrase-file", Usage: "read the wallet passphrase from `FILE` (first line); else $FINCRYPT_WALLET_PASSPHRASE; without either, no wallet (a prompt only with --btcd-rpc)"},
			&cli.StringFlag{Name: "btcd-rpc", Usage: "`HOST:PORT` of the bitcoin node's JSON-RPC (btcd or bitcoind): switches payments on"},
			&cli.StringFlag{Name: "btcd-rpc-user", Usage: "RPC `USER`", EnvVars: []string{"FINCRYPT_BTCD_RPC_USER"}},
			&cli.StringFlag{Name: "btcd-rpc-pass", Usage: "RPC `PASSWORD`", EnvVars: []string{"FINCRYPT_BTCD_RPC_PASS"}},
			&cli.StringFlag{Name: "btcd-rpc-cert", Usage: "btcd's rpc.cert `FILE` for TLS (empty: plain HTTP, for loopback or bitcoind)"},
			&cli.BoolFlag{Name: "payout-psbt", Usage: "write payouts as unsigned PSBT files into DIR/payouts instead of broadcasting them"},
			&cli.IntFlag{Name: "min-conf", Usage: "confirmations that credit a deposit and confirm a payout", Value: wallet.DefaultMinConf},
			&cli.Int64Flag{Name: "payout-threshold", Usage: "pay node balances of at least `SAT` satoshis", Value: wallet.DefaultPayoutThreshold},
			&cli.Int64Flag{Name: "fee-rate", Usage: "payout transaction fee rate in `SAT/vB`", Value: wallet.DefaultFeeRate},
			&cli.UintFlag{Name: "fee-bps", Usage: "mediator fee in `BPS` (basis points) of what clients pay", DefaultText: "no fee"},
			&cli.DurationFlag{Name: "escrow-grace", Usage: "an account whose escrow ran out keeps its segments this long", Value: wallet.DefaultGracePeriod},
			&cli.DurationFlag{Name: "sync-interval", Usage: "how often the bitcoin node is polled", Value: mediator.DefaultSyncInterval},
			&cli.Int64Flag{Name: "start-height", Usage: "first block a new wallet scans", DefaultText: "the current height on mainnet, the genesis block elsewhere"},
			&cli.Uint64Flag{Name: "max-price", Usage: "refuse storage nodes asking more than `SAT` satoshis per GiB per month (100 times a typical price of 100 sat)", Value: mediator.DefaultMaxPrice},
			&cli.DurationFlag{Name: "warn-runway", Usage: "warn clients while their escrow lasts less than this at their usage", Value: mediator.DefaultWarnRunway},
			// Placement (docs/SECURITY.md, "Adversaries").
			&cli.BoolFlag{Name: "shared-addresses", Usage: "a private network on one machine or LAN: nodes may share an address or /24, each its own failure domain (never on a public network)"},
			&cli.Uint64Flag{Name: "vetting-challenges", Usage: "challenges a new node must pass before it gets more than one piece of a segment", DefaultText: "16"},
			&cli.DurationFlag{Name: "price-notice", Usage: "a node's price rise applies to the pieces it holds after this notice (new pieces at once)", Value: mediator.DefaultPriceNotice},
			&cli.IntFlag{Name: "runway-periods", Usage: "escrow for `N` periods at the account's charge is needed to place new data and to end delinquency", Value: wallet.DefaultRunwayPeriods},
			&cli.DurationFlag{Name: "rpc-timeout", Usage: "bound on each call to the bitcoin node", Value: wallet.DefaultRPCTimeout},
		},
		Action: runMediator,
		Subcommands: []*cli.Command{mediatorLedgerCommand, mediatorPayoutsCommand, mediatorMigrateCommand, {
			Name:  "status",
			Usage: "show the nodes and the network's health, from the running mediator",
			Description: "Asks the mediator running in DIR over DIR/control.sock. With --json it prints\n" +
				"one object: nodes (id, address, online, capacity, used, price, passed, failed,\n" +
				"...), segments, pieces, healthy, lost, repaired.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "the mediator's `DIR`", Required: true},
				&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			},
			Action: mediatorStatus,
		}},
	})
}

func mediatorConfig(c *cli.Context) (mediator.Config, error) {
	if c.String("dir") == "" {
		return mediator.Config{}, userErr(exitUsage, "--dir is required")
	}
	if c.Args().Present() {
		return mediator.Config{}, userErr(exitUsage, "unexpected argument %q (subcommands: status, ledger, payouts, migrate)", c.Args().First())
	}
	scheme, err := erasure.ParseScheme(c.String("scheme"))
	if err != nil {
		return mediator.Config{}, userErr(exitUsage, "--scheme: %v", err)
	}
	pay, err := paymentsConfig(c)
	if err != nil {
		return mediator.Config{}, err
	}
	cfg := mediator.Config{
		Dir: c.String("dir"), DB: c.String("db"), Listen: c.String("listen"), Advertise: c.String("advertise"),
		Scheme: scheme, RepairThreshold: c.Int("repair-threshold"),
		RepairWorkers: c.Int("repair-workers"), RepairNodeTransfers: c.Int("repair-node-transfers"),
		Period: c.Duration("period"), OfflineAfter: c.Duration("offline-after"),
		HeartbeatInterval: c.Duration("heartbeat"), OnlineWindow: c.Duration("online-window"),
		ChallengeSample: c.Int("challenge-sample"), ChallengeOpenings: c.Int("challenge-openings"),
		ChallengeTimeout: c.Duration("challenge-timeout"), TicketTTL: c.Duration("ticket-ttl"),
		GracePeriod: c.Duration("grace-period"), Network: c.String("network"),
	}
	cfg.Payments = pay
	cfg.MaxPrice, cfg.WarnRunway = c.Uint64("max-price"), c.Duration("warn-runway")
	if cfg.MaxPrice == 0 || cfg.WarnRunway <= 0 {
		return cfg, userErr(exitUsage, "--max-price and --warn-runway must be positive")
	}
	cfg.Placement.SharedAddresses = c.Bool("shared-addresses")
	cfg.Placement.VettingChallenges = c.Uint64("vetting-challenges")
	cfg.Transport.MaxConns, cfg.Transport.MaxConnsPerIP = c.Int("max-conns"), c.Int("max-conns-per-ip")
	cfg.Transport.RequestRate, cfg.Transport.RequestBurst = c.Float64("request-rate"), int(2*c.Float64("request-rate"))
	if cfg.RepairThreshold == 0 && scheme == mediator.DefaultScheme {
		cfg.RepairThreshold = mediator.DefaultRepairThreshold
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return cfg, userErr(exitUsage, "%v", err)
	}
	return cfg, nil
}

func runMediator(c *cli.Context) error {
	cfg, err := mediatorConfig(c)
	if err != nil {
		return err
	}
	ident, err := fnet.LoadOrCreateIdentity(cfg.Dir)
	if err != nil {
		return userErr(exitFailure, "identity: %v", err)
	}
	log := slog.Default().With("mediator", ident.ID().String()[:8])
	peer, err := mediator.New(log, ident, cfg)
	if err != nil {
		switch {
		case errors.Is(err, mediator.ErrConfig):
			return userErr(exitUsage, "%v", err)
		case errors.Is(err, wallet.ErrWrongPassphrase):
			return userErr(exitPassword, "mediator: %v (the passphrase that created %s/wallet)", err, cfg.Dir)
		case errors.Is(err, mediator.ErrLocked):
			return userErr(exitBusy, "mediator: %v", err)
		case errors.Is(err, mediator.ErrStateElsewhere), errors.Is(err, mediator.ErrSchemaNewer):
			return userErr(exitUsage, "mediator: %v", err)
		case errors.Is(err, mediator.ErrListen):
			return userErr(exitUsage, "mediator: %v", err)
		}
		return userErr(exitFailure, "mediator: %v", err)
	}
	defer peer.Close()
	stopMetrics, err := serveDaemonMetrics(c, peer.RegisterMetrics, peer.StatusPage)
	if err != nil {
		return err
	}
	defer stopMetrics()
	defer idleCollector(slog.Default())()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := peer.Run(ctx); err != nil {
		return userErr(exitFailure, "mediator: %v", err)
	}
	return nil
}

func mediatorStatus(c *cli.Context) error {
	ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
	defer cancel()
	st, err := mediator.ReadStatus(ctx, c.String("dir"))
	if errors.Is(err, mediator.ErrNotRunning) {
		return userErr(exitNotFound, "%v", err)
	}
	if err != nil {
		return userErr(exitFailure, "%v", err)
	}
	out := c.App.Writer
	if c.Bool("json") {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintf(out, "mediator %s\nscheme %s, period %s, %d challenge rounds\n", st.Mediator, st.Scheme, st.Period, st.Rounds)
	fmt.Fprintf(out, "segments %d, pieces %d: %d healthy, %d lost, %d repaired so far\n", st.Segments, st.Pieces, st.Healthy, st.Lost, st.Repaired)
	printSchedule(out, st)
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tONLINE\tCAPACITY\tUSED\tPRICE\tPASSED\tFAILED\tADDRESS")
	for _, n := range st.Nodes {
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%d\t%d\t%d\t%s\n", n.ID[:12], n.Online,
			units.HumanSize(n.Capacity), units.HumanSize(n.Used), n.Price, n.Passed, n.Failed, n.Address)
	}
	return tw.Flush()
}
