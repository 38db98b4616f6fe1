package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/chunkstore"
)

// The upgrade command converts a vault's on-disk formats to the current
// ones (today: the local chunk store, format 1 to 2). It is safe to stop
// at any point (kill -9, power cut) and to run again.
func init() {
	register(&cli.Command{
		Name:  "upgrade",
		Usage: "convert the vault's local store to the current format (chunks packed into pack files)",
		Description: "Moves every chunk file of a format 1 store into append-only pack files (format 2),\n" +
			"which makes small files faster to write and read. The vault must not be mounted.\n" +
			"A stopped upgrade loses nothing: run it again to finish. A current store is left as it is.",
		Flags: []cli.Flag{passwordFileFlag, storeFlag},
		Action: func(c *cli.Context) error {
			v, err := openVault(c, true)
			if err != nil {
				return err
			}
			defer v.Close()
			dir := v.StoreDir()
			if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
				fmt.Fprintf(messages(c), "%s: no local store yet; it will be created in format %d\n", v.Home, chunkstore.CurrentFormat)
				return nil
			}
			store, err := chunkstore.OpenFormat(dir, chunkstore.FormatFiles)
			if err != nil {
				return userErr(exitFailure, "upgrade: %v", err)
			}
			defer store.Close()
			from := store.Format()
			last := -1
			err = store.Upgrade(func(done, total int) {
				if pct := done * 100 / max(total, 1); pct/10 != last/10 || done == total {
					last = pct
					fmt.Fprintf(messages(c), "upgrade: %d of %d chunk files moved into packs\n", done, total)
				}
			})
			if err != nil {
				return userErr(exitFailure, "upgrade: %v (run it again to finish; nothing is lost)", err)
			}
			if from == chunkstore.CurrentFormat && last < 0 {
				fmt.Fprintf(messages(c), "%s: the local store is already in format %d\n", v.Home, chunkstore.CurrentFormat)
				return nil
			}
			fmt.Fprintf(messages(c), "%s: the local store is now in format %d\n", v.Home, chunkstore.CurrentFormat)
			return nil
		},
	})
}
