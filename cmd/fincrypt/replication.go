package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/replicate"
	"github.com/fincrypt/fincrypt/vault"
)

// accountFileName holds the vault's account id in the clear (it is public:
// the mediator and every node see it), so `fincrypt account` needs no password.
const accountFileName = "account"

// networkTimeout bounds the one-shot mediator calls of init, account and restore.
const networkTimeout = 60 * time.Second

var mediatorFlag = &cli.StringFlag{Name: "mediator", Usage: "the mediator's `NODEID@HOST:PORT`"}

// joinNetwork registers the vault's account with the mediator and records
// the mediator (and the default scheme, if none is set) in the config.
func joinNetwork(v *vault.Vault, addr string) (fnet.AccountID, error) {
	a, err := fnet.ParseAddress(addr)
	if err != nil {
		return fnet.AccountID{}, userErr(exitUsage, "--mediator: %v", err)
	}
	id, err := replicate.AccountIdentity(v)
	if err != nil {
		return fnet.AccountID{}, err
	}
	mc, err := mediator.NewClient(id, a, nil)
	if err != nil {
		return fnet.AccountID{}, err
	}
	defer mc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), networkTimeout)
	defer cancel()
	if _, err := mc.RegisterAccount(ctx); err != nil {
		return fnet.AccountID{}, userErr(exitFailure, "registering with the mediator %s: %v", a, err)
	}
	v.Config.Mediator = a.String()
	if v.Config.Scheme == "" {
		v.Config.Scheme = replicate.DefaultScheme.String()
	}
	if err := vault.SaveConfig(v.Home, v.Config); err != nil {
		return fnet.AccountID{}, err
	}
	acct := fnet.AccountID(id.ID())
	if err := writeAccountFile(v.Home, acct); err != nil {
		return fnet.AccountID{}, err
	}
	return acct, nil
}

func writeAccountFile(home string, acct fnet.AccountID) error {
	return os.WriteFile(filepath.Join(home, accountFileName), []byte(fnet.NodeID(acct).String()+"\n"), 0o600)
}

// replicationConfig maps the vault's settings and the mount's flags onto
// the engine's config.
func replicationConfig(c *cli.Context, v *vault.Vault) (replicate.Config, error) {
	cfg := replicate.Config{CacheSize: v.Config.CacheSize, Logger: slog.Default().With("service", "replicate"),
		FlushAfter: c.Duration("flush-after"), SnapshotInterval: c.Duration("snapshot-interval"),
		SnapshotDelay: c.Duration("snapshot-delay"), SyncTimeout: c.Duration("sync-timeout")}
	if v.Config.Scheme != "" {
		s, err := erasure.ParseScheme(v.Config.Scheme)
		if err != nil {
			return cfg, userErr(exitUsage, "config scheme: %v", err)
		}
		cfg.Scheme = s
	}
	if c.IsSet("cache-size") {
		n, err := units.ParseSize(c.String("cache-size"))
		if err != nil {
			return cfg, userErr(exitUsage, "--cache-size: %v", err)
		}
		cfg.CacheSize = n
	}
	return cfg, nil
}

// replicationService is what fs.Options.Attach starts: the engine and its
// control socket, closed in reverse order.
type replicationService struct {
	rep  *replicate.Replicator
	ctl  *replicate.Control
	mc   *mediator.Client
	home string
}

func (s *replicationService) Close() error {
	finishSync(s.rep, s.home) // with the control socket open, for `umount`'s progress
	s.ctl.Close()
	err := s.rep.Close()
	s.mc.Close()
	return err
}

func (s *replicationService) engine() *replicate.Replicator { return s.rep }

// The mount's hooks (fs.CommitBeforeSyncer, fs.UnsavedReporter) reach the
// engine through the service, and through whatever wraps its Close
// (wrapEngine).
func (s *replicationService) CommitBeforeSync(commit func() error) { s.rep.CommitBeforeSync(commit) }
func (s *replicationService) ReportUnsaved(fn func() ([]uint64, int, uint64)) {
	s.rep.ReportUnsaved(fn)
}

// wrappedEngine is an attached service whose Close wraps an engine
// service's: it keeps the engine and the mount's hooks reachable.
type wrappedEngine struct {
	*replicationService
	close func() error
}

func (w wrappedEngine) Close() error { return w.close() }

// wrapEngine returns close as an attached service in place of inner: one
// that still forwards the mount's hooks to inner's engine, if it has one.
func wrapEngine(inner io.Closer, close func() error) io.Closer {
	switch s := inner.(type) {
	case *replicationService:
		return wrappedEngine{s, close}
	case wrappedEngine:
		return wrappedEngine{s.replicationService, close}
	}
	return closerFunc(close)
}

// attachReplication returns the fs.Options.Attach hook for a vault that
// has joined a network, or nil.
func attachReplication(c *cli.Context, v *vault.Vault, faults *fault.Board) (func(*meta.Index, *chunkstore.Store) (io.Closer, error), error) {
	if v.Config.Mediator == "" {
		return nil, nil
	}
	a, err := fnet.ParseAddress(v.Config.Mediator)
	if err != nil {
		return nil, userErr(exitUsage, "config mediator: %v", err)
	}
	cfg, err := replicationConfig(c, v)
	if err != nil {
		return nil, err
	}
	cfg.Faults = faults
	return func(idx *meta.Index, store *chunkstore.Store) (io.Closer, error) {
		id, err := replicate.AccountIdentity(v)
		if err != nil {
			return nil, err
		}
		mc, err := mediator.NewClient(id, a, nil)
		if err != nil {
			return nil, err
		}
		rep, err := replicate.New(v, idx, store, mc, cfg)
		if err != nil {
			mc.Close()
			return nil, err
		}
		ctl, err := replicate.ServeControl(v.Home, rep)
		if err != nil {
			rep.Close()
			mc.Close()
			return nil, err
		}
		serveBackups(ctl, v, idx, store) // backup commands while mounted
		svc := &replicationService{rep: rep, ctl: ctl, mc: mc, home: v.Home}
		if c.Bool("watch-backups") {
			return watchBackupsInMount(v, idx, store, faults, svc), nil
		}
		return svc, nil
	}, nil
}

func init() {
	register(&cli.Command{
		Name:  "account",
		Usage: "print the vault's account id (and join a mediator with --mediator)",
		Description: "Prints the account id the vault uses on the network, mounted or not. With\n" +
			"--mediator NODEID@HOST:PORT it (re)registers the account there and records the\n" +
			"mediator in the config, as `fincrypt init --mediator` does (asks the password).",
		Flags: []cli.Flag{passwordFileFlag, mediatorFlag},
		Action: func(c *cli.Context) error {
			home := homeDir(c)
			if !c.IsSet("mediator") {
				if b, err := os.ReadFile(filepath.Join(home, accountFileName)); err == nil {
					fmt.Fprint(c.App.Writer, string(b))
					return nil
				}
			}
			v, err := openVault(c, false)
			if err != nil {
				return err
			}
			if c.IsSet("mediator") {
				acct, err := joinNetwork(v, c.String("mediator"))
				if err != nil {
					return err
				}
				fmt.Fprintln(c.App.Writer, fnet.NodeID(acct))
				return nil
			}
			id, err := replicate.AccountIdentity(v)
			if err != nil {
				return err
			}
			writeAccountFile(home, fnet.AccountID(id.ID()))
			fmt.Fprintln(c.App.Writer, id.ID())
			return nil
		},
	})
	register(&cli.Command{
		Name:  "status",
		Usage: "show replication status of the mounted vault",
		Description: "Asks the running mount (over HOME/control.sock) what is pending upload, how\n" +
			"many segments are durable or degraded, the last successful sync and recent\n" +
			"errors. --json prints one JSON object; scripts may rely on the fields account,\n" +
			"pending_bytes, pending_files, segments_durable, segments_degraded, last_sync.\n\n" +
			"online means the mediator answered the latest call (a refusal is an answer).\n" +
			"When the mediator refuses new data, the first line says why (\"not protected:\n" +
			"escrow ran out at T; 628 MiB waiting; deposit to ADDRESS\"); --json has it as\n" +
			"protected (false) and refusal {reason, since, waiting_bytes, deposit_address,\n" +
			"release_at}. With payments on, payments {escrow_sat, price_sat_per_gib_month (of\n" +
			"your data), charge_per_period_sat, period_seconds, runway_seconds, runs_out_at,\n" +
			"warn_runway_seconds, warning, ...} says what the account pays and how long its\n" +
			"escrow lasts; the mediator warns while that is under --warn-runway (a week).\n" +
			"restorable is true only when a restore would bring back everything written so\n" +
			"far; unprotected_since is the oldest change a restore would miss now. Files\n" +
			"kept open hold their latest writes only in the mount until fsync, close or\n" +
			"`fincrypt sync`: they count as pending, and unsaved_open_files says how many.\n" +
			"inodes {live, max, pruned, prune_supported} is the mount's --max-inodes bound:\n" +
			"the inodes the kernel holds now, the bound (0: none), how many the mount asked\n" +
			"the kernel to forget, and whether the kernel can (Linux 6.18 and later).",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "watch", Usage: "follow the sync until nothing is pending: files and bytes left, rate, ETA (on a terminal; JSON lines with --json); Ctrl-C stops watching"}},
		Action: func(c *cli.Context) error {
			home := homeDir(c)
			if c.Bool("watch") {
				return statusWatch(c, home, time.Second)
			}
			st, err := replicate.QueryStatus(home)
			if errors.Is(err, replicate.ErrNotRunning) {
				return userErr(exitNotFound, "%s is not mounted with a mediator (no status socket answers)", home)
			}
			if err != nil {
				return userErr(exitFailure, "status: %v", err)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(c.App.Writer, st)
			return nil
		},
	})
	register(&cli.Command{
		Name:  "restore",
		Usage: "rebuild a vault from the network into an empty --home",
		Description: "Fetches the account's newest signed index snapshot from the mediator, unwraps\n" +
			"the vault key it carries with your password, and rebuilds the vault's index in\n" +
			"--home, which must hold no vault. Mount it afterwards: file data is fetched from\n" +
			"the storage nodes as it is read. Everything the newest snapshot covers comes\n" +
			"back byte-identical: everything, if the old mount's `fincrypt status` said\n" +
			"restorable, or after `fincrypt sync` or a clean `fincrypt umount`.\n\n" +
			"With --snapshot ID (see `fincrypt snapshots`; \"latest\" for the newest), it\n" +
			"restores a backup snapshot of the vault in --home instead: its files (or only\n" +
			"--path, an absolute path as backed up) go under --target with their modes,\n" +
			"owners (as root), mtimes, symlinks, hard links and extended attributes; a file\n" +
			"backed up as /home/a/f comes back as TARGET/home/a/f. Nothing is replaced\n" +
			"without --overwrite. Data evicted from the local cache is fetched from the\n" +
			"network. After a restore from the network, every backup snapshot is there.",
		Flags: []cli.Flag{
			passwordFileFlag,
			&cli.StringFlag{Name: "mediator", Usage: "the mediator's `NODEID@HOST:PORT` (required without --snapshot)"},
			&cli.StringFlag{Name: "account", Usage: "the account `ID` (from `fincrypt account`; required without --snapshot)"},
			acceptMismatchFlag,
			&cli.StringFlag{Name: "snapshot", Usage: "restore backup snapshot `ID` (or \"latest\") of the vault in --home"},
			&cli.StringFlag{Name: "path", Usage: "with --snapshot: restore only this absolute `PATH` as it was backed up"},
			&cli.StringFlag{Name: "target", Usage: "with --snapshot: the `DIR` to restore under"},
			&cli.BoolFlag{Name: "overwrite", Usage: "with --snapshot: replace existing files"},
			syncTimeoutFlag,
			jsonProgressFlag,
		},
		Action: func(c *cli.Context) error {
			if c.IsSet("snapshot") {
				return restoreSnapshotAction(c)
			}
			for _, f := range []string{"mediator", "account"} {
				if !c.IsSet(f) {
					return userErr(exitUsage, "Required flag %q not set (restore from the network needs --mediator and --account; a backup snapshot needs --snapshot)", f)
				}
			}
			home, err := filepath.Abs(homeDir(c))
			if err != nil {
				return err
			}
			a, err := fnet.ParseAddress(c.String("mediator"))
			if err != nil {
				return userErr(exitUsage, "--mediator: %v", err)
			}
			acctID, err := fnet.ParseNodeID(strings.TrimSpace(c.String("account")))
			if err != nil {
				return userErr(exitUsage, "--account: %v", err)
			}
			if _, err := vault.ReadKeyFile(home); err == nil {
				return userErr(exitUsage, "%s already holds a vault; restore into an empty --home", home)
			}
			pw, err := readPassword(c, "Password", false)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			prog := newReporter(c, "restore")
			res, err := replicate.Restore(ctx, replicate.RestoreOptions{Home: home, Mediator: a, Account: fnet.AccountID(acctID), Password: pw,
				Logger: slog.Default().With("service", "restore"), Progress: reportSegments(prog), AcceptMismatch: c.Bool(acceptMismatchFlag.Name)})
			prog.Finish(err)
			switch {
			case errors.Is(err, vault.ErrWrongPassword):
				return userErr(exitPassword, "wrong password for account %s", acctID)
			case errors.Is(err, replicate.ErrHomeNotEmpty):
				return userErr(exitUsage, "%v", err)
			case errors.Is(err, fnet.ErrNotFound):
				return userErr(exitNotFound, "restore: %v", err)
			case errors.Is(err, replicate.ErrStateMismatch):
				return userErr(exitFailure, "restore: %v (nothing was written). %s", err, mismatchHint)
			case err != nil:
				return userErr(exitFailure, "restore: %v", err)
			}
			if res.Mismatch {
				fmt.Fprintln(c.App.ErrWriter, mismatchWarning)
			}
			writeAccountFile(home, fnet.AccountID(acctID))
			fmt.Fprintf(messages(c), "Restored %s from the snapshot of %s (%d index records, %d segments).\nMount it with: fincrypt --home %s mount ~/Fincrypt\n",
				home, res.Taken.UTC().Format(time.RFC3339), res.Records, res.Segments, home)
			return nil
		},
	})
}

// acceptMismatchFlag lets restore and recover write a snapshot chain whose
// records do not make the state it recorded (replicate.ErrStateMismatch).
var acceptMismatchFlag = &cli.BoolFlag{Name: "accept-mismatch",
	Usage: "restore even a snapshot whose records do not add up to the state it recorded (a change may be missing; run `fincrypt check` after)"}

const (
	mismatchHint = "Every record in it is this vault's own (sealed with its key), but a change may be missing: " +
		"--accept-mismatch restores it anyway."
	mismatchWarning = "Warning: the snapshot's records do not add up to the state it recorded: a change made just before it may be missing. " +
		"Run `fincrypt check`; the first mount stores a new snapshot."
)

func printStatus(w io.Writer, st *replicate.Status) {
	when := func(t *time.Time) string {
		if t == nil {
			return "never"
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.RFC3339), time.Since(*t).Round(time.Second))
	}
	online := "online (the mediator answers)"
	if !st.Online {
		online = "offline (the mediator does not answer, or was not asked yet)"
	}
	if st.Refusal != nil {
		fmt.Fprintln(w, strings.ToUpper(st.Refusal.Summary()[:1])+st.Refusal.Summary()[1:])
	}
	fmt.Fprintf(w, "account:        %s\n", st.Account)
	fmt.Fprintf(w, "network:        %s, scheme %s\n", online, st.Scheme)
	fmt.Fprintf(w, "pending:        %s in %d file(s) (%d chunks)\n", units.HumanSize(st.PendingBytes), st.PendingFiles, st.PendingChunks)
	if st.UploadTotal > 0 {
		fmt.Fprintf(w, "uploading:      %s of %s (%.0f%%)\n", units.HumanSize(st.UploadDone), units.HumanSize(st.UploadTotal),
			100*float64(st.UploadDone)/float64(st.UploadTotal))
	}
	fmt.Fprintf(w, "segments:       %d durable, %d degraded, %d dead (awaiting release)\n", st.SegmentsDurable, st.SegmentsDegraded, st.SegmentsDead)
	fmt.Fprintf(w, "redundancy:     every segment has at least %d healthy piece(s)\n", st.MinHealthy)
	live := "live data not counted yet"
	if st.LiveCounted != nil {
		live = fmt.Sprintf("%s live when counted %s", units.HumanSize(st.LiveBytes), when(st.LiveCounted))
	}
	fmt.Fprintf(w, "stored:         %s on the network; %s\n", units.HumanSize(st.StoredBytes), live)
	limit := "no limit"
	if st.CacheLimit > 0 {
		limit = units.HumanSize(st.CacheLimit)
	}
	fmt.Fprintf(w, "local cache:    %s (limit %s)\n", units.HumanSize(st.CacheBytes), limit)
	fmt.Fprintf(w, "last sync:      %s\n", when(st.LastSync))
	fmt.Fprintf(w, "last snapshot:  %s\n", when(st.LastSnapshot))
	printRestorable(w, st)
	if in := st.Inodes; in != nil {
		bound := "no bound"
		switch {
		case in.Max > 0 && in.PruneSupported:
			bound = fmt.Sprintf("bound %d; %d asked to be forgotten", in.Max, in.Pruned)
		case in.Max > 0:
			bound = fmt.Sprintf("bound %d not applied: the kernel has no FUSE_NOTIFY_PRUNE, Linux 6.18 and later", in.Max)
		}
		fmt.Fprintf(w, "inodes:         %d held for the kernel (%s)\n", in.Live, bound)
	}
	if st.NextRetry != nil {
		fmt.Fprintf(w, "next retry:     %s\n", st.NextRetry.Local().Format(time.RFC3339))
	}
	printPayments(w, st.Payments)
	if st.Escrow != "" {
		fmt.Fprintf(w, "escrow:         %s\n", st.Escrow)
	}
	for _, e := range st.Errors {
		fmt.Fprintf(w, "error:          %s\n", e)
	}
	printFaults(w, st.Faults)
}

// printFaults shows the background work that is failing: what stopped,
// since when, how often, and why.
func printFaults(w io.Writer, faults []fault.Fault) {
	for _, f := range faults {
		kind := "failing"
		if f.Panics > 0 {
			kind = fmt.Sprintf("failing (%d internal error(s), see the mount log)", f.Panics)
		}
		fmt.Fprintf(w, "fault:          %s %s since %s, %d time(s), retried: %s\n", f.Work, kind,
			f.Since.Local().Format(time.RFC3339), f.Failures, f.Err)
	}
}

// printPayments prints what the account pays and how long its escrow
// lasts (payments on only).
func printPayments(w io.Writer, p *replicate.PaymentStatus) {
	if p == nil {
		return
	}
	period := time.Duration(p.PeriodSeconds * float64(time.Second))
	fmt.Fprintf(w, "balance:        %d sat in escrow", p.EscrowSat)
	if p.PendingSat > 0 {
		fmt.Fprintf(w, " (+%d sat awaiting confirmations)", p.PendingSat)
	}
	fmt.Fprintf(w, ", checked %s ago\n", time.Since(p.CheckedAt).Round(time.Second))
	if p.ChargedBytes == 0 {
		fmt.Fprintf(w, "price:          nothing charged yet (the nodes are paid per %s period)\n", period)
		return
	}
	fmt.Fprintf(w, "price:          %.0f sat per GiB-month of your data (%d per GiB-month of pieces); %.1f sat per %s period for %s of pieces\n",
		p.PricePerGiBMonth, p.PiecePrice, p.ChargePerPeriodSat, period, units.HumanSize(uint64(p.ChargedBytes)))
	runway := "unknown"
	if p.RunwaySeconds >= 0 {
		runway = fnet.HumanDuration(time.Duration(p.RunwaySeconds) * time.Second)
		if p.RunsOutAt != nil {
			runway += " (until " + p.RunsOutAt.Local().Format(time.RFC3339) + ")"
		}
	}
	fmt.Fprintf(w, "runway:         %s at this usage; warns under %s\n", runway, fnet.HumanDuration(time.Duration(p.WarnRunwaySeconds)*time.Second))
}
