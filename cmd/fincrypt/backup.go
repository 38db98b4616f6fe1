package main

// Backups of existing folders (package backup): `fincrypt backup
// add|list|remove|run`, `fincrypt snapshots`, `fincrypt forget` and
// `fincrypt restore --snapshot`. They take the vault's lock, like `check`:
// the vault must not be mounted meanwhile (docs/FORMAT.md §6).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/fincrypt/fincrypt/backup"
	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// backupSession is an unmounted vault opened for a backup command: its
// lock, index and store.
type backupSession struct {
	c     *cli.Context
	v     *vault.Vault
	idx   *meta.Index
	store *chunkstore.Store
}

func openBackup(c *cli.Context) (*backupSession, error) {
	v, err := openVault(c, true)
	if errors.Is(err, vault.ErrLocked) {
		return nil, userErr(exitBusy, "the vault in %s is mounted (or in use by another fincrypt process): backup commands take the vault's lock, so unmount it first", homeDir(c))
	}
	if err != nil {
		var ue *userError
		if errors.As(err, &ue) && ue.code == exitBusy {
			return nil, userErr(exitBusy, "the vault in %s is mounted (or in use by another fincrypt process): backup commands take the vault's lock, so unmount it first", homeDir(c))
		}
		return nil, err
	}
	idx, store, err := fs.OpenOffline(v, slog.Default().With("component", "fs"))
	if err != nil {
		v.Close()
		return nil, userErr(exitCorrupt, "%v", err)
	}
	return &backupSession{c: c, v: v, idx: idx, store: store}, nil
}

func (s *backupSession) Close() error {
	err := s.idx.Close()
	s.v.Close()
	return err
}

func (s *backupSession) repo() backup.Repo {
	return backup.Repo{Keys: s.v.Keys, Index: s.idx, Store: s.store}
}

// change runs fn, which changes the index, keeping the clean-unmount record
// true. With network, and a vault that joined one, the replication engine
// runs meanwhile (it uploads new blobs, fetches evicted ones) and, at the
// end, uploads what is left and stores an index snapshot, as an unmount
// does, within --sync-timeout.
func (s *backupSession) change(network bool, fn func() error) error {
	err := fs.ChangeOffline(s.v, s.idx, func() error {
		var svc io.Closer
		if network {
			attach, err := attachReplication(s.c, s.v, fault.New(slog.Default().With("component", "background")))
			if err != nil {
				return err
			}
			if attach != nil {
				if svc, err = attach(s.idx, s.store); err != nil {
					return userErr(exitFailure, "starting replication: %v", err)
				}
			}
		}
		err := fn()
		if svc != nil {
			if cerr := svc.Close(); err == nil && cerr != nil {
				err = cerr
			}
		}
		return err
	})
	if errors.Is(err, fs.ErrIndexDamaged) {
		return userErr(exitCorrupt, "%v", err)
	}
	return err
}

// interruptible is a context cancelled by SIGINT or SIGTERM.
func interruptible() (context.Context, func()) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func init() {
	register(&cli.Command{
		Name:  "backup",
		Usage: "back up existing folders into the vault, keeping every version",
		Description: "Backs up folders you already have, where they are: `fincrypt backup add DIR`,\n" +
			"then `fincrypt backup run` (from cron, say) records a snapshot of every added\n" +
			"folder. Files are cut into content-defined chunks, so unchanged bytes are\n" +
			"never stored twice (not across passes, renames or copies) and an edit in the\n" +
			"middle of a large file stores little more than the bytes it changed. Files\n" +
			"whose size, mtime, ctime and inode match the previous snapshot are not read.\n" +
			"List snapshots with `fincrypt snapshots`, restore with `fincrypt restore\n" +
			"--snapshot ID --target DIR`, thin them with `fincrypt forget`.\n\n" +
			"The vault must not be mounted while a backup command runs (they take its\n" +
			"lock). A vault that joined a network uploads the new data before the\n" +
			"command ends (within --sync-timeout), so the snapshot is restorable from\n" +
			"the password alone (`fincrypt restore --mediator --account`).",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "back up these folders from now on",
				ArgsUsage: "DIR...",
				Flags:     []cli.Flag{passwordFileFlag},
				Action: func(c *cli.Context) error {
					if c.NArg() == 0 {
						return userErr(exitUsage, "backup add: name at least one folder")
					}
					s, err := openBackup(c)
					if err != nil {
						return err
					}
					defer s.Close()
					var added []string
					err = s.change(false, func() error {
						var err error
						added, err = backup.AddRoot(s.idx, c.Args().Slice()...)
						return err
					})
					if err != nil {
						return userErr(exitUsage, "backup add: %v", err)
					}
					for _, a := range added {
						fmt.Fprintf(c.App.Writer, "backing up %s\n", a)
					}
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "list the backed-up folders",
				Flags: []cli.Flag{passwordFileFlag},
				Action: func(c *cli.Context) error {
					s, err := openBackup(c)
					if err != nil {
						return err
					}
					defer s.Close()
					roots, err := backup.Roots(s.idx)
					if err != nil {
						return err
					}
					for _, r := range roots {
						fmt.Fprintln(c.App.Writer, r)
					}
					return nil
				},
			},
			{
				Name:      "remove",
				Usage:     "stop backing up a folder (its snapshots stay until forget)",
				ArgsUsage: "DIR",
				Flags:     []cli.Flag{passwordFileFlag},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return userErr(exitUsage, "backup remove: name one folder")
					}
					s, err := openBackup(c)
					if err != nil {
						return err
					}
					defer s.Close()
					if err := s.change(false, func() error { return backup.RemoveRoot(s.idx, c.Args().First()) }); err != nil {
						return userErr(exitNotFound, "backup remove: %v", err)
					}
					return nil
				},
			},
			{
				Name:  "run",
				Usage: "make one backup pass of the added folders, then exit",
				Description: "Records one snapshot of every added folder and prints what it did: files,\n" +
					"bytes read, new bytes stored, and every entry skipped with the reason\n" +
					"(sockets, devices and fifos are not kept; unreadable files and files that\n" +
					"vanished or kept changing while read are named). Skipped by default:\n" +
					"directories holding a valid CACHEDIR.TAG, and what a .fincryptignore file\n" +
					"names (one glob pattern a line, for its folder and below).",
				Flags: []cli.Flag{passwordFileFlag,
					&cli.StringSliceFlag{Name: "exclude", Usage: "skip entries whose name or full path matches glob `PATTERN` (repeatable)"},
					&cli.BoolFlag{Name: "keep-caches", Usage: "back up directories holding a CACHEDIR.TAG too"},
					&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
					syncTimeoutFlag,
				},
				Action: backupRunAction,
			},
		},
	})
	register(&cli.Command{
		Name:  "snapshots",
		Usage: "list the backup snapshots",
		Description: "Lists every backup snapshot, oldest first: id, time, host, new bytes (stored\n" +
			"first by that pass), total bytes (of every file in it) and the folders.",
		Flags: []cli.Flag{passwordFileFlag, &cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			s, err := openBackup(c)
			if err != nil {
				return err
			}
			defer s.Close()
			snaps, err := backup.Snapshots(s.idx)
			if err != nil {
				return userErr(exitCorrupt, "snapshots: %v", err)
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, snapshotsJSON(snaps))
			}
			printSnapshots(c.App.Writer, snaps)
			return nil
		},
	})
	register(&cli.Command{
		Name:  "forget",
		Usage: "forget backup snapshots by keep rules, and free what no kept snapshot needs",
		Description: "Keeps the snapshots any --keep-* rule names (the newest N; the newest of each\n" +
			"of the newest N hours, days, ISO weeks, months that have snapshots, in local\n" +
			"time) and forgets the others: their records go first, durably, then every\n" +
			"blob no kept snapshot needs is deleted. On the network the segments that\n" +
			"held them are repacked or released by the replication engine (a mount's\n" +
			"maintenance). A crash in the middle loses no kept snapshot; run forget again\n" +
			"to finish. --dry-run only says what would go.",
		Flags: []cli.Flag{passwordFileFlag,
			&cli.IntFlag{Name: "keep-last", Usage: "keep the newest `N` snapshots"},
			&cli.IntFlag{Name: "keep-hourly", Usage: "keep the newest snapshot of each of the newest `N` hours"},
			&cli.IntFlag{Name: "keep-daily", Usage: "keep the newest snapshot of each of the newest `N` days"},
			&cli.IntFlag{Name: "keep-weekly", Usage: "keep the newest snapshot of each of the newest `N` weeks"},
			&cli.IntFlag{Name: "keep-monthly", Usage: "keep the newest snapshot of each of the newest `N` months"},
			&cli.BoolFlag{Name: "dry-run", Usage: "change nothing; say what would be forgotten"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			syncTimeoutFlag,
		},
		Action: forgetAction,
	})
}

func backupRunAction(c *cli.Context) error {
	s, err := openBackup(c)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, stop := interruptible()
	defer stop()
	opt := backup.Options{Excludes: c.StringSlice("exclude"), KeepCaches: c.Bool("keep-caches"),
		Logger: slog.Default().With("service", "backup")}
	if t := os.Getenv("FINCRYPT_BACKUP_TIME"); t != "" { // tests inject history
		tm, err := time.Parse(time.RFC3339, t)
		if err != nil {
			return userErr(exitUsage, "FINCRYPT_BACKUP_TIME: %v", err)
		}
		opt.Time = tm
	}
	tty := !c.Bool("json") && term.IsTerminal(int(os.Stderr.Fd()))
	if tty {
		start, last := time.Now(), time.Time{}
		opt.Progress = func(p backup.Progress) {
			if time.Since(last) < 200*time.Millisecond {
				return
			}
			last = time.Now()
			rate := float64(p.BytesRead) / max(time.Since(start).Seconds(), 0.001)
			fmt.Fprintf(os.Stderr, "\r\x1b[K%d files, %s read (%s/s), %s new", p.Files, units.HumanSize(p.BytesRead),
				units.HumanSize(uint64(rate)), units.HumanSize(p.NewBytes))
		}
	}
	var rep *backup.Report
	err = s.change(true, func() error {
		var err error
		rep, err = backup.Run(ctx, s.repo(), opt)
		if tty {
			fmt.Fprint(os.Stderr, "\r\x1b[K")
		}
		return err
	})
	switch {
	case errors.Is(err, backup.ErrNoPaths):
		return userErr(exitUsage, "backup run: %v", err)
	case ctx.Err() != nil:
		return userErr(exitInterrupt, "backup run: interrupted; no snapshot was recorded (the next run reuses what this one stored)")
	case err != nil && rep == nil:
		return userErr(exitFailure, "backup run: %v", err)
	}
	if c.Bool("json") {
		if perr := printJSON(c.App.Writer, rep); perr != nil {
			return perr
		}
	} else {
		printReport(c.App.Writer, rep)
	}
	if err != nil {
		return userErr(exitUnsynced, "backup run: snapshot %s recorded, but: %v", rep.Snapshot, err)
	}
	return nil
}

func printReport(w io.Writer, r *backup.Report) {
	fmt.Fprintf(w, "snapshot %s", r.Snapshot)
	if r.Parent != "" {
		fmt.Fprintf(w, " (parent %s)", r.Parent)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "files:   %d (%d unchanged, not read), %d folders\n", r.Files, r.Unchanged, r.Dirs)
	fmt.Fprintf(w, "read:    %s\n", units.HumanSize(r.BytesRead))
	fmt.Fprintf(w, "new:     %s in %d blobs\n", units.HumanSize(r.NewBytes), r.NewBlobs)
	fmt.Fprintf(w, "total:   %s\n", units.HumanSize(r.TotalBytes))
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, "skipped: %d\n", len(r.Skipped))
		for _, s := range r.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", s.Path, s.Reason)
		}
	}
}

type snapshotJSON struct {
	ID         string    `json:"id"`
	Time       time.Time `json:"time"`
	Host       string    `json:"host"`
	Paths      []string  `json:"paths"`
	Files      uint64    `json:"files"`
	NewBytes   uint64    `json:"new_bytes"`
	TotalBytes uint64    `json:"total_bytes"`
}

func snapshotsJSON(snaps []backup.Snapshot) []snapshotJSON {
	out := []snapshotJSON{}
	for _, s := range snaps {
		out = append(out, snapshotJSON{ID: s.ID.String(), Time: s.Time, Host: s.Host, Paths: s.Paths, Files: s.Files,
			NewBytes: s.NewBytes, TotalBytes: s.TotalBytes})
	}
	return out
}

func printSnapshots(w io.Writer, snaps []backup.Snapshot) {
	if len(snaps) == 0 {
		fmt.Fprintln(w, "no snapshots (run `fincrypt backup run`)")
		return
	}
	fmt.Fprintf(w, "%-16s  %-25s  %-12s  %10s  %10s  %s\n", "ID", "TIME", "HOST", "NEW", "TOTAL", "PATHS")
	for _, s := range snaps {
		fmt.Fprintf(w, "%-16s  %-25s  %-12s  %10s  %10s  %s\n", s.ID, s.Time.Local().Format(time.RFC3339), s.Host,
			units.HumanSize(s.NewBytes), units.HumanSize(s.TotalBytes), strings.Join(s.Paths, " "))
	}
}

func forgetAction(c *cli.Context) error {
	p := backup.Policy{Last: c.Int("keep-last"), Hourly: c.Int("keep-hourly"), Daily: c.Int("keep-daily"),
		Weekly: c.Int("keep-weekly"), Monthly: c.Int("keep-monthly")}
	if p.Empty() {
		return userErr(exitUsage, "forget: %v (it would forget every snapshot)", backup.ErrNoPolicy)
	}
	s, err := openBackup(c)
	if err != nil {
		return err
	}
	defer s.Close()
	dry := c.Bool("dry-run")
	var res *backup.ForgetResult
	run := func() error {
		var err error
		res, err = backup.Forget(s.repo(), p, dry)
		return err
	}
	if dry {
		err = run()
	} else {
		err = s.change(true, run)
	}
	if err != nil && res == nil {
		return userErr(exitFailure, "forget: %v", err)
	}
	if c.Bool("json") {
		if perr := printJSON(c.App.Writer, map[string]any{"dry_run": dry, "keep": snapshotsJSON(res.Keep), "forget": snapshotsJSON(res.Forget),
			"swept_blobs": res.Sweep.Blobs, "swept_bytes": res.Sweep.Bytes, "swept_trees": res.Sweep.Trees}); perr != nil {
			return perr
		}
	} else {
		verb := "forgot"
		if dry {
			verb = "would forget"
		}
		fmt.Fprintf(c.App.Writer, "keep %d snapshot(s), %s %d:\n", len(res.Keep), verb, len(res.Forget))
		for _, f := range res.Forget {
			fmt.Fprintf(c.App.Writer, "  %s  %s\n", f.ID, f.Time.Local().Format(time.RFC3339))
		}
		if !dry {
			fmt.Fprintf(c.App.Writer, "freed %s in %d blob(s)\n", units.HumanSize(res.Sweep.Bytes), res.Sweep.Blobs)
		}
	}
	if err != nil {
		return userErr(exitFailure, "forget: %v", err)
	}
	return nil
}

// restoreSnapshotAction is `fincrypt restore --snapshot ID`.
func restoreSnapshotAction(c *cli.Context) error {
	target := c.String("target")
	if target == "" {
		return userErr(exitUsage, "restore --snapshot: give --target DIR")
	}
	target, err := filepath.Abs(target)
	if err != nil {
		return err
	}
	s, err := openBackup(c)
	if err != nil {
		return err
	}
	defer s.Close()
	snap, err := backup.FindSnapshot(s.idx, c.String("snapshot"))
	if err != nil {
		return userErr(exitNotFound, "restore: %v", err)
	}
	ctx, stop := interruptible()
	defer stop()
	var res *backup.RestoreResult
	opt := backup.RestoreOptions{Path: c.String("path"), Target: target, Overwrite: c.Bool("overwrite")}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		last := time.Time{}
		opt.Progress = func(p backup.RestoreProgress) {
			if time.Since(last) >= 200*time.Millisecond {
				last = time.Now()
				fmt.Fprintf(os.Stderr, "\r\x1b[K%d files, %s of %s", p.Files, units.HumanSize(p.Bytes), units.HumanSize(p.Total))
			}
		}
		defer fmt.Fprint(os.Stderr, "\r\x1b[K")
	}
	// The engine runs to fetch evicted blobs from the network.
	err = s.change(true, func() error {
		var err error
		res, err = backup.Restore(ctx, s.repo(), snap, opt)
		return err
	})
	switch {
	case errors.Is(err, backup.ErrExists):
		return userErr(exitUsage, "restore: %v", err)
	case err != nil && strings.Contains(err.Error(), "is not in snapshot"):
		return userErr(exitNotFound, "restore: %v", err)
	case err != nil:
		return userErr(exitFailure, "restore: %v", err)
	}
	fmt.Fprintf(c.App.Writer, "restored snapshot %s of %s into %s: %d files (%s), %d folders, %d symlinks, %d hard links\n",
		snap.ID, snap.Time.Local().Format(time.RFC3339), target, res.Files, units.HumanSize(res.Bytes), res.Dirs, res.Symlinks, res.Links)
	return nil
}
