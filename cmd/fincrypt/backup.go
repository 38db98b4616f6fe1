package main

// Backups of existing folders (package backup): `fincrypt backup
// add|list|remove|run`, `fincrypt snapshots`, `fincrypt forget` and
// `fincrypt restore --snapshot`. On an unmounted vault they take its lock,
// like `check`; while it is mounted with a network they run in the mount
// process through its control socket (docs/FORMAT.md §6).

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
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/backup"
	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/replicate"
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
			"On an unmounted vault the commands take its lock; a vault that joined a\n" +
			"network then uploads the new data before the command ends (within\n" +
			"--sync-timeout), so the snapshot is restorable from the password alone\n" +
			"(`fincrypt restore --mediator --account`). While the vault is mounted with a\n" +
			"network they run in the mount process, which uploads as it does for files;\n" +
			"mounted without a network, unmount it first.\n\n" +
			"Watching: `fincrypt backup watch` (unmounted vault) makes a pass per change as\n" +
			"it happens. A mount with a network does the same by default for every added\n" +
			"folder (`fincrypt mount --watch-backups=false` turns it off).",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "back up these folders from now on",
				ArgsUsage: "DIR...",
				Flags:     []cli.Flag{passwordFileFlag},
				Action:    backupAddAction,
			},
			{
				Name:   "list",
				Usage:  "list the backed-up folders",
				Flags:  []cli.Flag{passwordFileFlag},
				Action: backupListAction,
			},
			{
				Name:      "remove",
				Usage:     "stop backing up a folder (its snapshots stay until forget)",
				ArgsUsage: "DIR",
				Flags:     []cli.Flag{passwordFileFlag},
				Action:    backupRemoveAction,
			},
			{
				Name:  "run",
				Usage: "make one backup pass of the added folders, then exit",
				Description: "Records one snapshot of every added folder and prints what it did: files,\n" +
					"bytes read, new bytes stored, and every entry skipped with the reason\n" +
					"(sockets, devices and fifos are not kept; unreadable files and files that\n" +
					"vanished or kept changing while read are named). Skipped by default:\n" +
					"directories holding a valid CACHEDIR.TAG, and what a .fincryptignore file\n" +
					"names (one glob pattern a line, for its folder and below).\n\n" +
					"On a terminal it shows progress: files and bytes done, rate, and an ETA once\n" +
					"a stat-only count of the folders (run alongside the pass) has the totals.",
				Flags: []cli.Flag{passwordFileFlag,
					excludeFlag, keepCachesFlag,
					&cli.BoolFlag{Name: "json", Usage: "print progress as JSON lines on stdout ({\"type\":\"progress\",...} at most once a second, then one {\"type\":\"summary\",...,\"result\":REPORT}); other output goes to stderr"},
					syncTimeoutFlag,
				},
				Action: backupRunAction,
			},
			backupWatchCommand,
		},
	})
	register(&cli.Command{
		Name:  "snapshots",
		Usage: "list the backup snapshots and the versions of the mount",
		Description: "Lists every snapshot, oldest first: id, time, source (backup: a pass of\n" +
			"backed-up folders; mount: a version of the mount itself), host, new bytes\n" +
			"(stored, or pinned, first by that snapshot), total bytes (of every file in\n" +
			"it) and the folders.",
		Flags:  []cli.Flag{passwordFileFlag, &cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: snapshotsAction,
	})
	register(&cli.Command{
		Name:  "forget",
		Usage: "forget backup snapshots by keep rules, and free what no kept snapshot needs",
		Description: "Keeps the snapshots any --keep-* rule names (the newest N; the newest of each\n" +
			"of the newest N hours, days, ISO weeks, months that have snapshots, in local\n" +
			"time) and forgets the others: their records go first, durably, then every\n" +
			"blob no kept snapshot needs is deleted. The rules apply to backups and to\n" +
			"versions of the mount apart (--keep-last 3 keeps three of each). On the network the segments that\n" +
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
	Source     string    `json:"source"` // backup, or mount (a version of the mount)
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
		out = append(out, snapshotJSON{ID: s.ID.String(), Source: s.Source.String(), Time: s.Time, Host: s.Host, Paths: s.Paths, Files: s.Files,
			NewBytes: s.NewBytes, TotalBytes: s.TotalBytes})
	}
	return out
}

func printSnapshots(w io.Writer, snaps []snapshotJSON) {
	if len(snaps) == 0 {
		fmt.Fprintln(w, "no snapshots (run `fincrypt backup run` or `fincrypt snapshot`)")
		return
	}
	fmt.Fprintf(w, "%-16s  %-25s  %-6s  %-12s  %10s  %10s  %s\n", "ID", "TIME", "SOURCE", "HOST", "NEW", "TOTAL", "PATHS")
	for _, s := range snaps {
		paths := strings.Join(s.Paths, " ")
		if s.Source == backup.SourceMount.String() {
			paths = "(the mount)"
		}
		fmt.Fprintf(w, "%-16s  %-25s  %-6s  %-12s  %10s  %10s  %s\n", s.ID, s.Time.Local().Format(time.RFC3339), s.Source, s.Host,
			units.HumanSize(s.NewBytes), units.HumanSize(s.TotalBytes), paths)
	}
}

// backupRequest is one backup operation, run here on an unmounted vault or
// sent to the mount serving it (control socket command "backup").
type backupRequest struct {
	Op         string         `json:"op"` // add list remove run snapshots forget restore
	Dirs       []string       `json:"dirs,omitempty"`
	Excludes   []string       `json:"excludes,omitempty"`
	KeepCaches bool           `json:"keep_caches,omitempty"`
	Time       time.Time      `json:"time,omitempty"`
	Policy     *backup.Policy `json:"policy,omitempty"`
	DryRun     bool           `json:"dry_run,omitempty"`
	Snapshot   string         `json:"snapshot,omitempty"`
	Path       string         `json:"path,omitempty"`
	Target     string         `json:"target,omitempty"`
	Overwrite  bool           `json:"overwrite,omitempty"`
	Force      bool           `json:"force,omitempty"` // version: record one even if nothing changed
	// Progress asks the mount to send progress lines before its reply
	// (backupProgressLine), as a pass or restore run here reports it.
	Progress bool `json:"progress,omitempty"`

	chunkSize       uint64 // version on an unmounted vault
	progress        func(backup.Progress)
	restoreProgress func(backup.RestoreProgress)
}

// backupReply is what an operation did, or why it failed (Code: exit code).
type backupReply struct {
	Error     string                `json:"error,omitempty"`
	Code      int                   `json:"code,omitempty"`
	Roots     []string              `json:"roots,omitempty"`
	Report    *backup.Report        `json:"report,omitempty"`
	Snapshots []snapshotJSON        `json:"snapshots,omitempty"`
	Keep      []snapshotJSON        `json:"keep,omitempty"`
	Forget    []snapshotJSON        `json:"forget,omitempty"`
	Swept     *backup.SweepResult   `json:"swept,omitempty"`
	Restored  *backup.RestoreResult `json:"restored,omitempty"`
	Snap      *snapshotJSON         `json:"snap,omitempty"`
	Version   *backup.VersionReport `json:"version,omitempty"`
}

func failed(code int, format string, args ...any) *backupReply {
	return &backupReply{Code: code, Error: fmt.Sprintf(format, args...)}
}

// execBackup runs one operation on repo. The caller serialises operations
// on one index (the vault's lock, or backupMu in the mount).
func execBackup(ctx context.Context, repo backup.Repo, req *backupRequest) *backupReply {
	switch req.Op {
	case "add":
		roots, err := backup.AddRoot(repo.Index, req.Dirs...)
		if err != nil {
			return failed(exitUsage, "backup add: %v", err)
		}
		return &backupReply{Roots: roots}
	case "remove":
		if err := backup.RemoveRoot(repo.Index, req.Dirs[0]); err != nil {
			return failed(exitNotFound, "backup remove: %v", err)
		}
		return &backupReply{}
	case "list":
		roots, err := backup.Roots(repo.Index)
		if err != nil {
			return failed(exitCorrupt, "backup list: %v", err)
		}
		return &backupReply{Roots: roots}
	case "run":
		rep, err := backup.Run(ctx, repo, backup.Options{Excludes: req.Excludes, KeepCaches: req.KeepCaches, Time: req.Time,
			Progress: req.progress, Logger: slog.Default().With("service", "backup")})
		switch {
		case errors.Is(err, backup.ErrNoPaths):
			return failed(exitUsage, "backup run: %v", err)
		case ctx.Err() != nil:
			return failed(exitInterrupt, "backup run: interrupted; no snapshot was recorded (the next run reuses what this one stored)")
		case err != nil:
			return failed(exitFailure, "backup run: %v", err)
		}
		return &backupReply{Report: rep}
	case "snapshots":
		snaps, err := backup.Snapshots(repo.Index)
		if err != nil {
			return failed(exitCorrupt, "snapshots: %v", err)
		}
		return &backupReply{Snapshots: snapshotsJSON(snaps)}
	case "forget":
		if req.Policy == nil {
			return failed(exitUsage, "forget: %v", backup.ErrNoPolicy)
		}
		res, err := backup.Forget(repo, *req.Policy, req.DryRun)
		if err != nil && res == nil {
			return failed(exitFailure, "forget: %v", err)
		}
		r := &backupReply{Keep: snapshotsJSON(res.Keep), Forget: snapshotsJSON(res.Forget), Swept: &res.Sweep}
		if err != nil {
			r.Code, r.Error = exitFailure, fmt.Sprintf("forget: %v (run it again to finish; nothing kept is lost)", err)
		}
		return r
	case "restore":
		snap, err := backup.FindSnapshot(repo.Index, req.Snapshot)
		if err != nil {
			return failed(exitNotFound, "restore: %v", err)
		}
		res, err := backup.Restore(ctx, repo, snap, backup.RestoreOptions{Path: req.Path, Target: req.Target,
			Overwrite: req.Overwrite, Progress: req.restoreProgress})
		switch {
		case errors.Is(err, backup.ErrExists):
			return failed(exitUsage, "restore: %v", err)
		case err != nil && strings.Contains(err.Error(), "is not in snapshot"):
			return failed(exitNotFound, "restore: %v", err)
		case err != nil:
			return failed(exitFailure, "restore: %v", err)
		}
		sj := snapshotsJSON([]backup.Snapshot{snap})[0]
		return &backupReply{Restored: res, Snap: &sj}
	}
	if req.Op == "version" {
		return execVersion(repo, req)
	}
	return failed(exitUsage, "unknown backup operation %q", req.Op)
}

// backupMu serialises backup operations in a mount process.
var backupMu sync.Mutex

// serveBackups makes the mount serving v answer backup operations on its
// control socket, against its own index and store (the replication engine
// uploads what a pass stores, as for files).
func serveBackups(ctl *replicate.Control, v *vault.Vault, idx *meta.Index, store *chunkstore.Store) {
	ctl.HandleStream("backup", func(ctx context.Context, arg string, send func(any) error) any {
		var req backupRequest
		if err := json.Unmarshal([]byte(arg), &req); err != nil {
			return failed(exitUsage, "backup request: %v", err)
		}
		var flush func()
		switch {
		case req.Progress && req.Op == "restore":
			req.restoreProgress, flush = streamProgress(send, func(p backup.RestoreProgress) backupProgressLine { return backupProgressLine{Restore: &p} })
		case req.Progress:
			req.progress, flush = streamProgress(send, func(p backup.Progress) backupProgressLine { return backupProgressLine{Progress: &p} })
		}
		backupMu.Lock()
		defer backupMu.Unlock()
		rep := execBackup(ctx, backup.Repo{Keys: v.Keys, Index: idx, Store: store}, &req)
		if flush != nil {
			flush()
		}
		return rep
	})
}

// backupProgressLine is a line the mount sends before a reply when asked
// (backupRequest.Progress): where a pass is, as backup.Run reports it, or a
// restore, as backup.Restore does.
type backupProgressLine struct {
	Progress *backup.Progress        `json:"progress,omitempty"`
	Restore  *backup.RestoreProgress `json:"restore_progress,omitempty"`
}

// progressEvery bounds how often the mount sends a pass's progress.
const progressEvery = 200 * time.Millisecond

// streamProgress makes a progress callback that sends what it is told as
// lines (made by line), the first at once, then at most every progressEvery,
// and flush, which sends the last one if it was held back. A client that
// went away gets no more lines; the work goes on.
func streamProgress[P any](send func(any) error, line func(P) backupProgressLine) (func(P), func()) {
	var last time.Time
	var held *P
	gone := false
	out := func(p P) {
		if !gone && send(line(p)) != nil {
			gone = true
		}
		last, held = time.Now(), nil
	}
	return func(p P) {
			if time.Since(last) < progressEvery {
				held = &p
				return
			}
			out(p)
		}, func() {
			if held != nil {
				out(*held)
			}
		}
}

// doBackup runs req: here, taking the vault's lock, or, when the vault is
// mounted with a network, in the mount process through its control socket.
// changes says whether it changes the index; network whether the
// replication engine must run (upload, fetch) when it runs here.
func doBackup(c *cli.Context, req *backupRequest, changes, network bool) (*backupReply, error) {
	home := homeDir(c)
	s, err := openBackup(c)
	var ue *userError
	if errors.As(err, &ue) && ue.code == exitBusy {
		req.Progress = req.progress != nil || req.restoreProgress != nil
		arg, _ := json.Marshal(req)
		var rep backupReply
		cerr := callMount(home, string(arg), req, &rep)
		if errors.Is(cerr, replicate.ErrNotRunning) {
			return nil, err // mounted without a network, or another process
		}
		if cerr != nil {
			return nil, userErr(exitFailure, "asking the mount: %v", cerr)
		}
		if rep.Error != "" && rep.Code == 0 {
			return nil, userErr(exitFailure, "the mount: %s (is it older than this fincrypt? unmount and try again)", rep.Error)
		}
		return replyErr(&rep)
	}
	if err != nil {
		return nil, err
	}
	defer s.Close()
	req.chunkSize = uint64(s.v.KeyFile.ChunkSize) // a version on this unmounted vault
	ctx, stop := interruptible()
	defer stop()
	var rep *backupReply
	run := func() error {
		backupMu.Lock()
		defer backupMu.Unlock()
		rep = execBackup(ctx, s.repo(), req)
		return nil
	}
	if changes {
		err = s.change(network, run)
	} else {
		err = run()
	}
	if err != nil && rep == nil {
		return nil, err
	}
	if rep == nil {
		return nil, err
	}
	if rep.Error == "" && err != nil {
		rep.Code, rep.Error = exitFailure, err.Error()
	}
	return replyErr(rep)
}

// callMount sends req (arg) to the mount serving home and decodes its
// reply into rep, handing the progress lines before it (if asked for) to
// req's progress callbacks. A mount older than progress lines sends the
// reply alone.
func callMount(home, arg string, req *backupRequest, rep *backupReply) error {
	return replicate.CallLines(home, "backup "+arg, 0, func(line json.RawMessage) (bool, error) {
		var pl backupProgressLine
		if json.Unmarshal(line, &pl) == nil {
			switch {
			case pl.Progress != nil && req.progress != nil:
				req.progress(*pl.Progress)
				return false, nil
			case pl.Restore != nil && req.restoreProgress != nil:
				req.restoreProgress(*pl.Restore)
				return false, nil
			}
		}
		return true, json.Unmarshal(line, rep)
	})
}

// replyErr returns the reply, and its failure as a user error.
func replyErr(rep *backupReply) (*backupReply, error) {
	if rep.Error != "" {
		return rep, userErr(rep.Code, "%s", rep.Error)
	}
	return rep, nil
}

func backupAddAction(c *cli.Context) error {
	if c.NArg() == 0 {
		return userErr(exitUsage, "backup add: name at least one folder")
	}
	var dirs []string
	for _, d := range c.Args().Slice() {
		abs, err := filepath.Abs(d)
		if err != nil {
			return err
		}
		dirs = append(dirs, abs)
	}
	rep, err := doBackup(c, &backupRequest{Op: "add", Dirs: dirs}, true, false)
	if err != nil {
		return err
	}
	for _, a := range rep.Roots {
		fmt.Fprintf(c.App.Writer, "backing up %s\n", a)
	}
	fmt.Fprintln(c.App.ErrWriter, "a mount with a network backs it up as it changes; otherwise run `fincrypt backup watch`, or `fincrypt backup run` from cron")
	return nil
}

func backupListAction(c *cli.Context) error {
	rep, err := doBackup(c, &backupRequest{Op: "list"}, false, false)
	if err != nil {
		return err
	}
	for _, r := range rep.Roots {
		fmt.Fprintln(c.App.Writer, r)
	}
	return nil
}

func backupRemoveAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return userErr(exitUsage, "backup remove: name one folder")
	}
	abs, err := filepath.Abs(c.Args().First())
	if err != nil {
		return err
	}
	_, err = doBackup(c, &backupRequest{Op: "remove", Dirs: []string{abs}}, true, false)
	return err
}

func backupRunAction(c *cli.Context) error {
	req := &backupRequest{Op: "run", Excludes: c.StringSlice("exclude"), KeepCaches: c.Bool("keep-caches")}
	for _, p := range req.Excludes {
		if _, err := filepath.Match(p, ""); err != nil {
			return userErr(exitUsage, "--exclude %q: %v", p, err)
		}
	}
	if t := os.Getenv("FINCRYPT_BACKUP_TIME"); t != "" { // tests inject history
		tm, err := time.Parse(time.RFC3339, t)
		if err != nil {
			return userErr(exitUsage, "FINCRYPT_BACKUP_TIME: %v", err)
		}
		req.Time = tm
	}
	prog := newReporter(c, "backup")
	progressed := false
	if prog.Active() { // else no counting walk either
		req.progress = func(p backup.Progress) {
			progressed = true
			if p.TotalFiles > 0 || p.TotalBytes > 0 {
				prog.SetTotal(int64(p.TotalFiles), int64(p.TotalBytes))
			}
			prog.Set(int64(p.Files), int64(p.Bytes))
		}
	}
	rep, err := doBackup(c, req, true, true)
	if rep != nil && rep.Report != nil && !progressed {
		// The pass ran in a mount process that sends no progress: only its
		// result came back: the whole of what it did.
		prog.SetTotal(int64(rep.Report.Files), int64(rep.Report.TotalBytes))
		prog.Set(int64(rep.Report.Files), int64(rep.Report.TotalBytes))
	}
	if rep == nil || rep.Report == nil {
		prog.Finish(err)
		return err
	}
	if c.Bool("json") {
		prog.FinishWith(err, rep.Report)
		return err
	}
	prog.Finish(err)
	printReport(c.App.Writer, rep.Report)
	return err
}

func snapshotsAction(c *cli.Context) error {
	rep, err := doBackup(c, &backupRequest{Op: "snapshots"}, false, false)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if rep.Snapshots == nil {
			rep.Snapshots = []snapshotJSON{}
		}
		return printJSON(c.App.Writer, rep.Snapshots)
	}
	printSnapshots(c.App.Writer, rep.Snapshots)
	return nil
}

func forgetAction(c *cli.Context) error {
	p := backup.Policy{Last: c.Int("keep-last"), Hourly: c.Int("keep-hourly"), Daily: c.Int("keep-daily"),
		Weekly: c.Int("keep-weekly"), Monthly: c.Int("keep-monthly")}
	if p.Empty() {
		return userErr(exitUsage, "forget: %v (it would forget every snapshot)", backup.ErrNoPolicy)
	}
	dry := c.Bool("dry-run")
	rep, err := doBackup(c, &backupRequest{Op: "forget", Policy: &p, DryRun: dry}, !dry, true)
	if rep == nil {
		return err
	}
	if rep.Swept == nil {
		rep.Swept = &backup.SweepResult{}
	}
	if c.Bool("json") {
		if perr := printJSON(c.App.Writer, map[string]any{"dry_run": dry, "keep": orEmpty(rep.Keep), "forget": orEmpty(rep.Forget),
			"swept_blobs": rep.Swept.Blobs, "swept_bytes": rep.Swept.Bytes, "swept_trees": rep.Swept.Trees,
			"swept_chunks": rep.Swept.Pins, "swept_chunk_bytes": rep.Swept.PinBytes}); perr != nil {
			return perr
		}
		return err
	}
	verb := "forgot"
	if dry {
		verb = "would forget"
	}
	fmt.Fprintf(c.App.Writer, "keep %d snapshot(s), %s %d:\n", len(rep.Keep), verb, len(rep.Forget))
	for _, f := range rep.Forget {
		fmt.Fprintf(c.App.Writer, "  %s  %s\n", f.ID, f.Time.Local().Format(time.RFC3339))
	}
	if !dry {
		fmt.Fprintf(c.App.Writer, "freed %s in %d blob(s)\n", units.HumanSize(rep.Swept.Bytes), rep.Swept.Blobs)
		if rep.Swept.Pins > 0 {
			fmt.Fprintf(c.App.Writer, "freed %s in %d chunk(s) of versions of the mount\n", units.HumanSize(rep.Swept.PinBytes), rep.Swept.Pins)
		}
	}
	return err
}

func orEmpty(s []snapshotJSON) []snapshotJSON {
	if s == nil {
		return []snapshotJSON{}
	}
	return s
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
	req := &backupRequest{Op: "restore", Snapshot: c.String("snapshot"), Path: c.String("path"), Target: target, Overwrite: c.Bool("overwrite")}
	prog := newReporter(c, "restore")
	heard := false // a mount older than restore progress sends none
	req.restoreProgress = func(p backup.RestoreProgress) {
		heard = true
		prog.SetTotal(int64(p.TotalFiles), int64(p.Total))
		prog.Set(int64(p.Files), int64(p.Bytes))
	}
	// Here, the engine runs to fetch evicted blobs from the network.
	rep, err := doBackup(c, req, true, true)
	if err != nil {
		prog.Finish(err)
		return err
	}
	res := rep.Restored
	if !heard {
		prog.Set(int64(res.Files), int64(res.Bytes))
	}
	if c.Bool("json") {
		prog.FinishWith(nil, map[string]any{"snapshot": rep.Snap.ID, "time": rep.Snap.Time, "target": target, "files": res.Files,
			"bytes": res.Bytes, "dirs": res.Dirs, "symlinks": res.Symlinks, "hard_links": res.Links})
		return nil
	}
	prog.Finish(nil)
	fmt.Fprintf(c.App.Writer, "restored snapshot %s of %s into %s: %d files (%s), %d folders, %d symlinks, %d hard links\n",
		rep.Snap.ID, rep.Snap.Time.Local().Format(time.RFC3339), target, res.Files, units.HumanSize(res.Bytes), res.Dirs, res.Symlinks, res.Links)
	return nil
}

// The flags of what a backup pass skips, for `backup run` and `backup watch`.
var (
	excludeFlag    = &cli.StringSliceFlag{Name: "exclude", Usage: "skip entries whose name or full path matches glob `PATTERN` (repeatable)"}
	keepCachesFlag = &cli.BoolFlag{Name: "keep-caches", Usage: "back up directories holding a CACHEDIR.TAG too"}
)
