package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

var passwordFileFlag = &cli.StringFlag{
	Name:  "password-file",
	Usage: "read the password from `FILE` (its first line); else $FINCRYPT_PASSWORD; else ask",
}

// readPassword returns the vault password from --password-file, else
// $FINCRYPT_PASSWORD, else an interactive prompt without echo; with confirm
// the prompt asks twice.
func readPassword(c *cli.Context, prompt string, confirm bool) ([]byte, error) {
	return passwordFrom(c.String("password-file"), "FINCRYPT_PASSWORD", prompt, confirm)
}

func passwordFrom(file, env, prompt string, confirm bool) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, userErr(exitUsage, "password file: %v", err)
		}
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[:i]
		}
		b = bytes.TrimSuffix(b, []byte("\r"))
		if len(b) == 0 {
			return nil, userErr(exitUsage, "password file %s: the first line is empty", file)
		}
		return b, nil
	}
	if p := os.Getenv(env); p != "" {
		return []byte(p), nil
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, userErr(exitUsage, "no password: give --password-file or set %s (no terminal to ask on)", env)
	}
	defer tty.Close()
	ask := func(p string) ([]byte, error) {
		fmt.Fprint(tty, p)
		b, err := term.ReadPassword(int(tty.Fd()))
		fmt.Fprintln(tty)
		if err != nil {
			return nil, userErr(exitUsage, "reading the password: %v", err)
		}
		return b, nil
	}
	pw, err := ask(prompt + ": ")
	if err != nil {
		return nil, err
	}
	if len(pw) == 0 {
		return nil, userErr(exitUsage, "the password is empty")
	}
	if confirm {
		again, err := ask("Repeat " + prompt + ": ")
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(pw, again) {
			return nil, userErr(exitUsage, "the passwords do not match")
		}
	}
	return pw, nil
}

var errNoArg = errors.New("missing argument")
