package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/replicate"
)

func init() {
	register(&cli.Command{
		Name:  "recover",
		Usage: "rebuild a damaged or lost index from the network snapshot and the local store",
		Description: "When `fincrypt mount` refuses a damaged index (or `fincrypt check` reports one),\n" +
			"this replaces the index with the account's newest snapshot on the network; the\n" +
			"local store supplies the chunks it still holds, the storage nodes the rest.\n" +
			"The damaged index is kept beside the new one (HOME/index.damaged-TIME), and the\n" +
			"chunks the new index does not reference (written after the snapshot) are moved\n" +
			"to STORE.lost-TIME: nothing is deleted. With --local it keeps the index as it is\n" +
			"(no network needed) and only moves the unreferenced chunks aside, so that the\n" +
			"vault mounts again with what the index still holds. The vault must not be mounted.",
		Flags: []cli.Flag{
			passwordFileFlag, storeFlag,
			&cli.BoolFlag{Name: "local", Usage: "keep the current index; only set unreferenced chunks aside"},
			&cli.StringFlag{Name: "mediator", Usage: "the mediator's `NODEID@HOST:PORT` (default: the vault's config)"},
			acceptMismatchFlag,
		},
		Action: recoverAction,
	})
}

func recoverAction(c *cli.Context) error {
	v, err := openVault(c, true)
	if err != nil {
		return err
	}
	defer v.Close()
	w := c.App.Writer
	if !c.Bool("local") {
		addr := c.String("mediator")
		if addr == "" {
			addr = v.Config.Mediator
		}
		if addr == "" {
			return userErr(exitUsage, "the vault in %s has no mediator, so there is no network snapshot: pass --mediator, or --local to keep the index as it is", v.Home)
		}
		a, err := fnet.ParseAddress(addr)
		if err != nil {
			return userErr(exitUsage, "mediator: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		res, err := replicate.RecoverIndex(ctx, replicate.RecoverOptions{Vault: v, Mediator: a, Logger: slog.Default().With("service", "recover"),
			AcceptMismatch: c.Bool(acceptMismatchFlag.Name)})
		switch {
		case errors.Is(err, fnet.ErrNotFound):
			return userErr(exitNotFound, "recover: the mediator holds no snapshot of this account: %v", err)
		case errors.Is(err, replicate.ErrStateMismatch):
			return userErr(exitFailure, "recover: %v (nothing was changed). %s", err, mismatchHint)
		case err != nil:
			return userErr(exitFailure, "recover: %v (nothing was changed)", err)
		}
		fmt.Fprintf(w, "Rebuilt the index from the snapshot of %s (%d records, %d segments).\n",
			res.Taken.UTC().Format(time.RFC3339), res.Records, res.Segments)
		if res.Mismatch {
			fmt.Fprintln(c.App.ErrWriter, mismatchWarning)
		}
		if res.Damaged != "" {
			fmt.Fprintf(w, "The damaged index is kept in %s.\n", res.Damaged)
		}
	}
	n, dir, err := fs.SetAsideUnreferenced(v)
	if errors.Is(err, meta.ErrForeignIndex) || (err != nil && c.Bool("local")) {
		return userErr(exitCorrupt, "recover --local: %v; the index cannot be kept as it is: run `fincrypt recover` to rebuild it from the network", err)
	}
	if err != nil {
		return userErr(exitFailure, "recover: %v", err)
	}
	if n > 0 {
		fmt.Fprintf(w, "Moved %d chunk(s) that the index does not reference to %s (kept, not deleted).\n", n, dir)
	}
	problems, err := fs.Check(v, w)
	if err != nil {
		return userErr(exitFailure, "check: %v", err)
	}
	if problems > 0 {
		return userErr(exitCorrupt, "check still finds %d problem(s) in %s", problems, v.Home)
	}
	fmt.Fprintf(w, "%s: consistent; mount it again.\n", v.Home)
	return nil
}
