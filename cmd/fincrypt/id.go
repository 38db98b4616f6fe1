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
			&cli.StringFlag{Name: "dir", Usage: "the daemon's `DIR`", Required: true},
		},
		Action: func(c *cli.Context) error {
			ident, err := fnet.LoadOrCreateIdentity(c.String("dir"))
			if err != nil {
				return userErr(exitFailure, "identity: %v", err)
			}
			fmt.Fprintln(c.App.Writer, ident.ID())
			return nil
		},
	})
}
