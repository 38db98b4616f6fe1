package main

import (
	"errors"
	"fmt"

	"github.com/fincrypt/fincrypt/internal/units"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
	"github.com/urfave/cli/v2"
)

// vaultErr turns the vault package's errors into errors for the user.
func vaultErr(home string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, vault.ErrWrongPassword):
		return userErr(exitPassword, "wrong password for the vault in %s", home)
	case errors.Is(err, vault.ErrNoVault):
		return userErr(exitNotFound, "no vault in %s: run `fincrypt init` first (or pass --home)", home)
	case errors.Is(err, vault.ErrLocked):
		return userErr(exitBusy, "the vault in %s is in use by another fincrypt process (mounted?); unmount it first", home)
	}
	return &userError{code: exitFailure, msg: home, err: err}
}

// storeFlag overrides the config file's `store` setting.
var storeFlag = &cli.StringFlag{Name: "store", Usage: "the local encrypted store's `DIR` (overrides `store` in HOME/config)"}

// applySettingFlags lets flags override the settings file.
func applySettingFlags(c *cli.Context, v *vault.Vault) {
	if s := c.String("store"); s != "" {
		v.Config.Store = s
	}
}

// openVault asks for the password and unlocks the vault under --home.
func openVault(c *cli.Context, lock bool) (*vault.Vault, error) {
	home := homeDir(c)
	if _, err := vault.ReadKeyFile(home); err != nil {
		return nil, vaultErr(home, err)
	}
	pw, err := readPassword(c, "Password", false)
	if err != nil {
		return nil, err
	}
	v, err := vault.Open(home, pw, vault.OpenOptions{Lock: lock})
	if err != nil {
		return nil, vaultErr(home, err)
	}
	applySettingFlags(c, v)
	return v, nil
}

func init() {
	register(&cli.Command{
		Name:  "init",
		Usage: "create a new vault under --home",
		Description: "Creates the vault: a random master key wrapped by your password (Argon2id),\n" +
			"the encrypted index and local store, and an editable settings file, all under\n" +
			"--home (default ~/.fincrypt). The password cannot be recovered: keep it safe.",
		Flags: []cli.Flag{
			passwordFileFlag,
			&cli.StringFlag{Name: "chunk-size", Value: "1MiB", Usage: "plaintext `SIZE` of a chunk (a power of two, 4KiB to 16MiB); fixed for the vault's life"},
			&cli.StringFlag{Name: "mediator", Usage: "join the network of the mediator at `NODEID@HOST:PORT`: register the account and print its id"},
		},
		Action: func(c *cli.Context) error {
			home := homeDir(c)
			if _, err := vault.ReadKeyFile(home); err == nil {
				return userErr(exitUsage, "%s already holds a vault", home)
			}
			cs, err := units.ParseSize(c.String("chunk-size"))
			if err != nil || cs > 1<<31 {
				return userErr(exitUsage, "--chunk-size: %v", err)
			}
			pw, err := readPassword(c, "New vault password", true)
			if err != nil {
				return err
			}
			if c.IsSet("mediator") {
				if _, err := fnet.ParseAddress(c.String("mediator")); err != nil {
					return userErr(exitUsage, "--mediator: %v", err)
				}
			}
			if err := vault.Create(home, pw, vault.CreateOptions{ChunkSize: uint32(cs)}); err != nil {
				return userErr(exitFailure, "creating the vault in %s: %v", home, err)
			}
			if c.IsSet("mediator") {
				v, err := vault.Open(home, pw, vault.OpenOptions{})
				if err != nil {
					return vaultErr(home, err)
				}
				acct, err := joinNetwork(v, c.String("mediator"))
				if err != nil {
					return fmt.Errorf("%w (the vault was created; retry with `fincrypt --home %s account --mediator ...`)", err, home)
				}
				fmt.Printf("Account: %s\n", fnet.NodeID(acct))
			}
			fmt.Printf("Created a vault in %s.\nMount it with: fincrypt --home %s mount ~/Fincrypt\n", home, home)
			return nil
		},
	})
	register(&cli.Command{
		Name:  "passwd",
		Usage: "change the vault's password (data is not re-encrypted)",
		Description: "The current password comes from --password-file, $FINCRYPT_PASSWORD or a prompt;\n" +
			"the new one from --new-password-file, $FINCRYPT_NEW_PASSWORD or a prompt (asked twice).\n" +
			"Only the wrapped master key in vault.json changes, atomically.",
		Flags: []cli.Flag{
			passwordFileFlag,
			&cli.StringFlag{Name: "new-password-file", Usage: "read the new password from `FILE`"},
		},
		Action: func(c *cli.Context) error {
			home := homeDir(c)
			if _, err := vault.ReadKeyFile(home); err != nil {
				return vaultErr(home, err)
			}
			old, err := readPassword(c, "Current password", false)
			if err != nil {
				return err
			}
			if _, err := vault.Open(home, old, vault.OpenOptions{}); err != nil {
				return vaultErr(home, err)
			}
			pw, err := passwordFrom(c.String("new-password-file"), "FINCRYPT_NEW_PASSWORD", "New password", true)
			if err != nil {
				return err
			}
			if err := vault.ChangePassword(home, old, pw, vault.KDFParams{}); err != nil {
				return vaultErr(home, err)
			}
			fmt.Println("Password changed.")
			return nil
		},
	})
	register(&cli.Command{
		Name:  "check",
		Usage: "verify the vault offline: every chunk decrypts, index and store agree",
		Description: "Reads every index record and every chunk and reports each problem on its own\n" +
			"line. The vault must not be mounted. Exit status 0 means consistent, 5 means problems.",
		Flags: []cli.Flag{passwordFileFlag, storeFlag, jsonProgressFlag},
		Action: func(c *cli.Context) error {
			v, err := openVault(c, true)
			if err != nil {
				return err
			}
			defer v.Close()
			n, err := checkWithProgress(c, v)
			if err != nil {
				return userErr(exitFailure, "check: %v", err)
			}
			if n > 0 {
				return userErr(exitCorrupt, "check found %d problem(s) in %s", n, v.Home)
			}
			fmt.Fprintf(messages(c), "%s: consistent\n", v.Home)
			return nil
		},
	})
}
