package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/internal/units"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/storagenode"
)

func init() {
	register(&cli.Command{
		Name:  "storage",
		Usage: "run a storage node that sells disk space",
		Description: "Stores encrypted pieces for Fincrypt clients under tickets signed by the\n" +
			"mediator, proves possession when challenged, and is paid in bitcoin.\n\n" +
			"Once listening it writes its NODEID@host:port to DIR/address. It keeps\n" +
			"retrying while the mediator is unreachable, and exits (code 2) if the mediator\n" +
			"refuses its registration for good, e.g. because the payout address is not on\n" +
			"the mediator's bitcoin network. Stop it with Ctrl-C.\n\n" +
			"In the background it re-reads its pieces (--scrub-rate, --scrub-interval);\n" +
			"a damaged one is moved to DIR/quarantine/ and reported to the mediator,\n" +
			"which rebuilds it elsewhere (the node is not paid for it that period).\n\n" +
			"Example:\n" +
			"  fincrypt storage --dir /srv/fincrypt --listen 0.0.0.0:7780 --advertise my.host:7780 \\\n" +
			"    --mediator NODEID@mediator.example:7770 --capacity 500GiB --price 2000 \\\n" +
			"    --payout-address bc1q...",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "the node's `DIR`: identity, pieces and index (required)"},
			&cli.StringFlag{Name: "listen", Usage: "UDP `HOST:PORT` to listen on (port 0: any free port)", Value: "0.0.0.0:7780"},
			&cli.StringFlag{Name: "advertise", Usage: "`HOST:PORT` that others dial, when it differs from --listen"},
			&cli.StringFlag{Name: "mediator", Usage: "the mediator's `NODEID@HOST:PORT` (required)"},
			&cli.StringFlag{Name: "capacity", Usage: "disk space offered, e.g. 500GiB (required)"},
			&cli.Uint64Flag{Name: "price", Usage: "asking price in `SATS` per GiB per month (required)"},
			&cli.StringFlag{Name: "payout-address", Usage: "bitcoin `ADDRESS` for payouts (required)"},
			&cli.StringFlag{Name: "network", Usage: "bitcoin `NETWORK` of the payout address: mainnet, testnet3, regtest or simnet " +
				"(default: the mediator's, among those the address is valid on)"},
			&cli.StringFlag{Name: "scrub-rate", Usage: "re-read the stored pieces to find damage (bit rot) at `SIZE/s`; " +
				"damaged pieces are dropped and reported so the network rebuilds them (0: no scrubbing)", Value: "16MiB/s"},
			&cli.DurationFlag{Name: "scrub-interval", Usage: "start a scrub pass over all pieces at most every `DURATION`", Value: storagenode.DefaultScrubInterval},
			&cli.StringFlag{Name: "min-upload-rate", Usage: "drop an upload slower than `SIZE/s` on average (after --upload-grace)", Value: "64KiB/s"},
			&cli.DurationFlag{Name: "upload-grace", Usage: "time every upload has beyond its size at --min-upload-rate", Value: storagenode.DefaultUploadGrace},
			&cli.DurationFlag{Name: "ticket-ttl", Usage: "the mediator's ticket lifetime (its --ticket-ttl): how long a deleted piece's put tickets stay refused", Value: storagenode.DefaultTicketTTL},
			&cli.IntFlag{Name: "max-conns", Usage: "incoming connections at once", Value: fnet.DefaultMaxConns},
			&cli.IntFlag{Name: "max-conns-per-ip", Usage: "incoming connections at once from one address", Value: fnet.DefaultMaxConnsPerIP},
			&cli.Float64Flag{Name: "request-rate", Usage: "requests per second one peer may make (bursts of twice as many); over it the node answers busy", Value: fnet.DefaultRequestRate},
		},
		Action: runStorage,
	})
}

// requiredStorageFlags are checked here rather than by urfave/cli, whose
// error would exit 1 instead of 2.
var requiredStorageFlags = []string{"dir", "mediator", "capacity", "price", "payout-address"}

func storageConfig(c *cli.Context) (storagenode.Config, error) {
	var missing []string
	for _, f := range requiredStorageFlags {
		if !c.IsSet(f) {
			missing = append(missing, "--"+f)
		}
	}
	if len(missing) > 0 {
		return storagenode.Config{}, userErr(exitUsage, "storage: missing %s (see fincrypt storage --help)", strings.Join(missing, ", "))
	}
	if c.Args().Present() {
		return storagenode.Config{}, userErr(exitUsage, "storage: unexpected argument %q (see fincrypt storage --help)", c.Args().First())
	}
	med, err := fnet.ParseAddress(c.String("mediator"))
	if err != nil {
		return storagenode.Config{}, userErr(exitUsage, "--mediator: %v", err)
	}
	capacity, err := units.ParseSize(c.String("capacity"))
	if err != nil {
		return storagenode.Config{}, userErr(exitUsage, "--capacity: %v", err)
	}
	if capacity > 1<<62 {
		return storagenode.Config{}, userErr(exitUsage, "--capacity: %s is too large", c.String("capacity"))
	}
	scrubRate, err := storagenode.ParseScrubRate(c.String("scrub-rate"))
	if err != nil {
		return storagenode.Config{}, userErr(exitUsage, "--scrub-rate: %v", err)
	}
	if c.Duration("scrub-interval") <= 0 {
		return storagenode.Config{}, userErr(exitUsage, "--scrub-interval: %s is not a positive duration", c.Duration("scrub-interval"))
	}
	uploadRate, err := storagenode.ParseScrubRate(c.String("min-upload-rate"))
	if err != nil || uploadRate <= 0 {
		return storagenode.Config{}, userErr(exitUsage, "--min-upload-rate: %q is not a positive size per second (e.g. 64KiB/s)", c.String("min-upload-rate"))
	}
	cfg := storagenode.Config{
		Dir: c.String("dir"), Listen: c.String("listen"), Advertise: c.String("advertise"),
		Mediator: med, Capacity: int64(capacity), Price: c.Uint64("price"),
		Payout: c.String("payout-address"), Network: c.String("network"),
		ScrubRate: scrubRate, ScrubInterval: c.Duration("scrub-interval"),
		MinUploadRate: uploadRate, UploadGrace: c.Duration("upload-grace"), TicketTTL: c.Duration("ticket-ttl"),
		Transport: fnet.Config{MaxConns: c.Int("max-conns"), MaxConnsPerIP: c.Int("max-conns-per-ip"),
			RequestRate: c.Float64("request-rate"), RequestBurst: int(2 * c.Float64("request-rate"))},
	}
	if err := cfg.Validate(); err != nil {
		return cfg, userErr(exitUsage, "%v", err)
	}
	return cfg, nil
}

func runStorage(c *cli.Context) error {
	cfg, err := storageConfig(c)
	if err != nil {
		return err
	}
	ident, err := fnet.LoadOrCreateIdentity(cfg.Dir)
	if err != nil {
		return userErr(exitFailure, "identity: %v", err)
	}
	log := slog.Default().With("node", ident.ID().String()[:8])
	peer, err := storagenode.New(log, ident, cfg)
	if err != nil {
		if errors.Is(err, storagenode.ErrConfig) {
			return userErr(exitUsage, "%v", err)
		}
		if errors.Is(err, storagenode.ErrLocked) {
			return userErr(exitBusy, "%v", err)
		}
		return userErr(exitFailure, "storage node: %v", err)
	}
	defer peer.Close()
	stopMetrics, err := serveDaemonMetrics(c, peer.RegisterMetrics, peer.StatusPage)
	if err != nil {
		return err
	}
	defer stopMetrics()
	defer idleCollector(log)()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := peer.Run(ctx); err != nil {
		if errors.Is(err, storagenode.ErrRegistrationRefused) {
			return userErr(exitUsage, "storage node: %v", err)
		}
		return userErr(exitFailure, "storage node: %v", err)
	}
	return nil
}
