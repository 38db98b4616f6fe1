package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/backup"
	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/internal/watch"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// backupWatchCommand is `fincrypt backup watch`: passes for what changed, as it changes.
var backupWatchCommand = &cli.Command{
	Name:  "watch",
	Usage: "back up the added folders, then keep backing up each change as it happens",
	Description: "Makes one pass of every added folder, then watches them (inotify, plus a full\n" +
		"rescan every --rescan as the safety net) and makes a pass over what changed once\n" +
		"each changed file has stopped changing (--settle); every pass records a snapshot\n" +
		"(unless what changed is all excluded: then it says so and records none).\n" +
		"The vault must not be mounted; with a network, the replication engine runs all\n" +
		"along: a pass's new data is uploaded within --flush-after, and is restorable from\n" +
		"the password alone (`fincrypt status` says restorable) once the index backup\n" +
		"that follows --snapshot-delay later is stored. Ctrl-C or SIGTERM stops it\n" +
		"after uploading what is left (within --sync-timeout). Killed mid-pass, nothing is\n" +
		"lost: the next start makes a full pass.",
	Flags: []cli.Flag{passwordFileFlag,
		excludeFlag, keepCachesFlag,
		&cli.DurationFlag{Name: "rescan", Value: 10 * time.Minute, Usage: "full rescan every `DURATION`"},
		&cli.DurationFlag{Name: "settle", Value: 500 * time.Millisecond, Usage: "a changed file is backed up once its size and mtime held for `DURATION`"},
		// The replication engine's timing, as for mount: a change is durable on the
		// network (uploaded, and in a stored index snapshot) about flush-after +
		// snapshot-delay after its pass.
		&cli.DurationFlag{Name: "flush-after", Usage: "upload a partly filled segment once its oldest chunk waited this long", Value: 10 * time.Second},
		&cli.DurationFlag{Name: "snapshot-interval", Usage: "while changes go on, a pass waits at most this long for a backup of the index to the network (what a restore brings back)", Value: 10 * time.Minute},
		&cli.DurationFlag{Name: "snapshot-delay", Usage: "back the index up once passes and uploads have paused this long", Value: 30 * time.Second},
		syncTimeoutFlag,
	},
	Action: backupWatchAction,
}

func backupWatchAction(c *cli.Context) error {
	excludes := c.StringSlice("exclude")
	for _, p := range excludes {
		if _, err := filepath.Match(p, ""); err != nil {
			return userErr(exitUsage, "--exclude %q: %v", p, err)
		}
	}
	s, err := openBackup(c)
	if err != nil {
		return err
	}
	defer s.Close()
	roots, err := backup.Roots(s.idx)
	if err != nil {
		return userErr(exitCorrupt, "backup watch: %v", err)
	}
	if len(roots) == 0 {
		return userErr(exitUsage, "backup watch: no folders added (`fincrypt backup add DIR`)")
	}
	ctx, stop := interruptible()
	defer stop()
	log := slog.Default().With("service", "backup-watch")
	return s.change(true, func() error {
		opt := backup.Options{Excludes: excludes, KeepCaches: c.Bool("keep-caches"), Logger: log}
		pass := func(changed []string) error {
			backupMu.Lock()
			defer backupMu.Unlock()
			o := opt
			o.Changed = changed
			rep, err := backup.Run(ctx, s.repo(), o)
			if err != nil {
				return err
			}
			if rep.Same {
				fmt.Fprintf(c.App.Writer, "%s no change to keep (%d changed paths excluded or undone); snapshot %s stands\n",
					time.Now().Format(time.RFC3339), len(changed), rep.Snapshot)
				return nil
			}
			fmt.Fprintf(c.App.Writer, "%s snapshot %s: %d files, %d new bytes, %d skipped (%d changed paths)\n",
				time.Now().Format(time.RFC3339), rep.Snapshot, rep.Files, rep.NewBytes, len(rep.Skipped), len(changed))
			return nil
		}
		// The watcher first (its index is what it diffs against), then the full pass:
		// a change between the two is in both or in the next batch.
		ex := backup.NewExcluder(roots, opt)
		w, err := watch.New(watch.Config{Roots: roots, Exclude: ex.Excluded, Forget: ex.Forget, Rescan: c.Duration("rescan"),
			Debounce: c.Duration("settle"), Settle: c.Duration("settle"),
			Report: func(r watch.Report) { log.Info("watch", "event", r.String()) }})
		if err != nil {
			return userErr(exitFailure, "backup watch: %v", err)
		}
		wctx, wstop := context.WithCancel(ctx)
		defer wstop()
		go w.Run(wctx)
		if err := pass(nil); err != nil {
			return watchErr(ctx, err)
		}
		for {
			select {
			case <-ctx.Done():
				return nil
			case b, ok := <-w.Batches():
				if !ok {
					return nil
				}
				if err := pass(b.Paths); err != nil {
					return watchErr(ctx, err)
				}
			}
		}
	})
}

func watchErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil // stopped mid-pass: the next start makes a full pass
	}
	return userErr(exitFailure, "backup watch: %v", err)
}

// watchBackupsFlag: on by default, since someone who ran `fincrypt backup add` and then
// mounts expects the folders to go on being backed up (the mount holds the vault's lock, so
// `backup watch` cannot run beside it). It costs one index read every 5s while no folder is
// added.
var watchBackupsFlag = &cli.BoolFlag{Name: "watch-backups", Value: true,
	Usage: "with a network, back up the folders added with `fincrypt backup add` as they change (as `fincrypt backup watch` does), in the mount's background; --watch-backups=false leaves them to `backup run`"}

// closerFunc is an io.Closer.
type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// watchBackupsInMount runs `backup watch` in the mount's background: a full pass of the
// added folders, then a pass over each batch of changes, every pass a snapshot uploaded by
// the mount's replication engine. Folders added or removed while mounted are picked up
// within rootsEvery. Each pass runs as the contained background work "backup watch" (a
// failure or panic shows in `fincrypt status` and is retried with the next batch or
// rescan). Closing it stops the watcher, waits for a pass under way, then closes svc.
func watchBackupsInMount(v *vault.Vault, idx *meta.Index, store *chunkstore.Store, faults *fault.Board, svc io.Closer) io.Closer {
	const rootsEvery = 5 * time.Second
	log := slog.Default().With("service", "backup-watch")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	repo := backup.Repo{Keys: v.Keys, Index: idx, Store: store}
	go func() {
		defer close(done)
		var roots []string
		var w *watch.Watcher
		var wstop context.CancelFunc = func() {}
		defer func() { wstop() }()
		full := true
		pass := func(changed []string) {
			faults.Run("backup watch", func() error {
				backupMu.Lock()
				defer backupMu.Unlock()
				rep, err := backup.Run(ctx, repo, backup.Options{Changed: changed, Logger: log})
				if err == nil {
					log.Info("backup pass", "snapshot", rep.Snapshot, "same_as_parent", rep.Same, "files", rep.Files, "new_bytes", rep.NewBytes, "changed", len(changed))
				} else if ctx.Err() == nil {
					full = true // the next check makes a full pass
				}
				return err
			})
		}
		tick := time.NewTicker(rootsEvery)
		defer tick.Stop()
		for {
			if r, err := backup.Roots(idx); err == nil && !slices.Equal(r, roots) {
				wstop()
				roots, w, wstop, full = r, nil, func() {}, true
				if len(roots) > 0 {
					ex := backup.NewExcluder(roots, backup.Options{}) // what the mount's passes leave out
					nw, err := watch.New(watch.Config{Roots: roots, Exclude: ex.Excluded, Forget: ex.Forget,
						Report: func(r watch.Report) { log.Info("watch", "event", r.Kind) }})
					if err != nil {
						faults.Fail("backup watch", err)
					} else {
						wctx, c := context.WithCancel(ctx)
						wstop = c
						w = nw
						go w.Run(wctx)
					}
				}
			}
			if full && len(roots) > 0 && ctx.Err() == nil {
				full = false
				pass(nil)
			}
			var batches <-chan watch.Batch
			if w != nil {
				batches = w.Batches()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case b, ok := <-batches:
				if !ok {
					w = nil
					continue
				}
				pass(b.Paths)
			}
		}
	}()
	return wrapEngine(svc, func() error {
		cancel()
		<-done
		return svc.Close()
	})
}
