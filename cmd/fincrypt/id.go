package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	fnet "github.com/fincrypt/fincrypt/net"
)

func init() {
	register(&cli.Command{
		Name:  "id",
		Usage: "print the node id of a daemon's directory",
		Description: "Prints the node id (the ed25519 public key, 52 base32 characters) kept in\n" +
			"DIR/identity, creating the identity if DIR has none yet. Others pin it in\n" +
			"addresses of the form NODEID@host:port.",
		Flags: []cli.Flag{
			// Not Required: urfave/cli would exit 1 with a generic message.
			&cli.StringFlag{Name: "dir", Usage: "the daemon's `DIR` (required)"},
		},
		Action: func(c *cli.Context) error {
			if c.String("dir") == "" {
				return userErr(exitUsage, "id: --dir is required (the directory of a storage node or mediator)")
			}
			if c.Args().Present() {
				return userErr(exitUsage, "id: unexpected argument %q (give the directory with --dir)", c.Args().First())
			}
			ident, err := fnet.LoadOrCreateIdentity(c.String("dir"))
			if err != nil {
				return userErr(exitFailure, "identity: %v", err)
			}
			fmt.Fprintln(c.App.Writer, ident.ID())
			return nil
		},
	})
}
