package main

// Versions of the mount (fs/versions.go, backup.TakeVersion): `fincrypt
// snapshot` records one now, in the mount process through its control
// socket while the vault is mounted with a network, or here on an
// unmounted vault; `--version-interval` sets the mount's own cadence.

import (
	"fmt"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/backup"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/internal/units"
)

// versionIntervalFlag is the mount's cadence of versions of its tree. It is
// not --snapshot-interval, which bounds how long a change waits for a
// backup of the index to the network.
var versionIntervalFlag = &cli.DurationFlag{Name: "version-interval", Value: fs.DefaultVersionInterval,
	Usage: "record a version of the mount's whole tree this often, when anything changed (browse them in MOUNT/.snapshots, restore with restore --snapshot; 0 = only `fincrypt snapshot`)"}

var (
	mountVersionMu sync.Mutex
	mountVersion   func(force bool) (*backup.VersionReport, error) // the mount of this process, if any
)

// setMountVersioner makes version requests on this process's control
// socket go through mount m (it commits open files first).
func setMountVersioner(m *fs.Mounted) {
	mountVersionMu.Lock()
	mountVersion = m.TakeVersion
	mountVersionMu.Unlock()
}

// execVersion records a version of the mount: through the mount of this
// process, or on the unmounted vault repo belongs to.
func execVersion(repo backup.Repo, req *backupRequest) *backupReply {
	mountVersionMu.Lock()
	mv := mountVersion
	mountVersionMu.Unlock()
	var rep *backup.VersionReport
	var err error
	switch {
	case mv != nil:
		rep, err = mv(req.Force)
	case req.chunkSize != 0:
		rep, err = backup.TakeVersion(repo, backup.VersionOptions{ChunkSize: req.chunkSize, Force: req.Force})
	default:
		return failed(exitFailure, "snapshot: the mount is not ready yet")
	}
	if err != nil {
		return failed(exitFailure, "snapshot: %v", err)
	}
	return &backupReply{Version: rep}
}

func init() {
	register(&cli.Command{
		Name:  "snapshot",
		Usage: "record a version of the mount's whole tree now",
		Description: "Records an immutable version of every file and folder of the vault's mount\n" +
			"(the mount also records one every --version-interval when anything changed).\n" +
			"It copies no data: it keeps the chunks it names until `fincrypt forget` drops\n" +
			"it. Versions list in `fincrypt snapshots` (source mount), show read-only in\n" +
			"MOUNT/.snapshots/<time>/, and restore with `fincrypt restore --snapshot ID`.\n" +
			"Nothing is recorded when nothing changed since the newest version, unless\n" +
			"--force. Works on an unmounted vault, or through a mount with a network.",
		Flags: []cli.Flag{passwordFileFlag,
			&cli.BoolFlag{Name: "force", Usage: "record a version even if nothing changed"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			syncTimeoutFlag,
		},
		Action: snapshotAction,
	})
}

func snapshotAction(c *cli.Context) error {
	req := &backupRequest{Op: "version", Force: c.Bool("force")}
	rep, err := doBackup(c, req, true, true)
	if err != nil {
		return err
	}
	v := rep.Version
	if c.Bool("json") {
		return printJSON(c.App.Writer, v)
	}
	if v.Unchanged {
		fmt.Fprintln(c.App.Writer, "nothing changed since the newest version: none recorded (--force records one)")
		return nil
	}
	fmt.Fprintf(c.App.Writer, "version %s: %d files, %d folders, %s; new: %s in %d chunk(s), %d index bytes\n",
		v.Snapshot, v.Files, v.Dirs, units.HumanSize(v.TotalBytes), units.HumanSize(v.NewBytes), v.NewChunks, v.IndexBytes)
	return nil
}
