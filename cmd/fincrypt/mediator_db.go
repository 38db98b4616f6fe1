package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/mediator"
)

// The mediator on PostgreSQL (docs/OPERATIONS.md): --db and `mediator migrate`.

var mediatorDBFlag = &cli.StringFlag{Name: "db", EnvVars: []string{"FINCRYPT_MEDIATOR_DB"},
	Usage: "keep the state in the PostgreSQL (or CockroachDB) database at `URL` (postgres://...) instead of DIR/db; DIR still holds the identity, wallet and snapshot pointers"}

var mediatorMigrateCommand = &cli.Command{
	Name:  "migrate",
	Usage: "copy a stopped mediator's state from DIR/db into an empty PostgreSQL database",
	Description: "Copies every record of DIR/db (nodes, accounts, pending placements, contracts,\n" +
		"the piece index, period records, counters) into the database at --to, which\n" +
		"must have no mediator state, in one transaction; then reads it back and\n" +
		"compares row counts and checksums per table. On success DIR/db is renamed\n" +
		"DIR/db.migrated (a backup) and the mediator runs with --db URL from then on.\n" +
		"Stop the mediator first: a running one holds DIR/db.\n\n" +
		"Example:\n" +
		"  fincrypt mediator migrate --from /srv/mediator --to 'postgres://fincrypt@db.example/mediator'\n" +
		"  fincrypt mediator --dir /srv/mediator --db 'postgres://fincrypt@db.example/mediator' ...",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "from", Usage: "the mediator's `DIR` (its state in DIR/db)", Required: true},
		&cli.StringFlag{Name: "to", Usage: "the target database `URL` (postgres://...)", Required: true},
		&cli.BoolFlag{Name: "json", Usage: "print the per-table report as JSON"},
	},
	Action: mediatorMigrate,
}

func mediatorMigrate(c *cli.Context) error {
	dir, url := c.String("from"), c.String("to")
	if !mediator.IsPostgresURL(url) {
		return userErr(exitUsage, "--to %q: want a postgres:// or postgresql:// URL", url)
	}
	rep, err := mediator.MigrateDir(context.Background(), dir, url)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return userErr(exitNotFound, "migrate: %v", err)
	case errors.Is(err, mediator.ErrLocked):
		return userErr(exitBusy, "migrate: %v (stop the mediator first)", err)
	case errors.Is(err, mediator.ErrTargetNotEmpty):
		return userErr(exitUsage, "migrate: %v: nothing copied", err)
	case err != nil:
		return userErr(exitFailure, "migrate: %v", err)
	}
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(rep)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tROWS\tCHECKSUM")
	for _, t := range rep {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", t.Table, t.Rows, t.Checksum)
	}
	tw.Flush()
	fmt.Printf("copied and verified; %s/db is now %s/db%s\nrun the mediator with --dir %s --db %s\n", dir, dir, mediator.MigratedSuffix, dir, mediator.RedactURL(url))
	return nil
}
