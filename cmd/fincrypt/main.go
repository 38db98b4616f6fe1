// Command fincrypt is the single binary for every Fincrypt role: the client
// (init, mount, passwd, check), the storage node (storage) and the mediator.
//
// This file only wires commands together; each command lives in its own file
// and delegates to the packages that do the work.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// Exit codes, documented in README.md.
const (
	exitOK        = 0
	exitFailure   = 1 // an unexpected error
	exitUsage     = 2 // bad flags or arguments
	exitPassword  = 3 // the password is wrong
	exitNotFound  = 4 // no vault (or directory) where one was expected
	exitCorrupt   = 5 // check found problems
	exitBusy      = 6 // already mounted / locked by another process
	exitUnsynced  = 7 // fincrypt sync: not restorable within --timeout
	exitRefused   = 8 // the mediator refused: the payout cannot be abandoned (yet)
	exitInterrupt = 130
)

// userError is an error meant for the user: printed as one line, without a
// stack, and mapped to an exit code.
type userError struct {
	code int
	msg  string
	err  error
}

func (e *userError) Error() string {
	if e.err != nil && e.msg == "" {
		return e.err.Error()
	}
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *userError) Unwrap() error { return e.err }

func userErr(code int, format string, args ...any) error {
	return &userError{code: code, msg: fmt.Sprintf(format, args...)}
}

// commands lists every subcommand; each is defined in its own file.
var commands []*cli.Command

func register(c *cli.Command) { commands = append(commands, c) }

func defaultHome() string {
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".fincrypt")
	}
	return ".fincrypt"
}

// usageError turns urfave/cli's flag errors into one-line usage errors.
func usageError(c *cli.Context, err error, _ bool) error {
	name := "fincrypt"
	if c.Command != nil && c.Command.Name != "" {
		name += " " + c.Command.FullName()
	}
	return userErr(exitUsage, "%s: %v (see %s --help)", name, err, name)
}

// setUsageErrors gives every command the same usage-error handling.
func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = usageError
		setUsageErrors(c.Subcommands)
	}
}

// commandOrder groups the commands by role in --help, in the order a
// newcomer meets them.
var commandOrder = []struct{ category, names string }{
	{"client: your vault", "init mount umount status account check passwd restore wallet backup snapshots forget"},
	{"storage node: selling disk space", "storage id"},
	{"mediator: running a network", "mediator devnet"},
}

func orderCommands(cmds []*cli.Command) []*cli.Command {
	var out []*cli.Command
	placed := map[*cli.Command]bool{}
	for _, g := range commandOrder {
		for _, name := range strings.Fields(g.names) {
			for _, c := range cmds {
				if c.Name == name && !placed[c] {
					c.Category = g.category
					out = append(out, c)
					placed[c] = true
				}
			}
		}
	}
	for _, c := range cmds { // anything not listed keeps its place at the end
		if !placed[c] {
			out = append(out, c)
		}
	}
	return out
}

// addHomeFlag repeats the global --home on the client commands and their
// subcommands, so that `fincrypt mount --home DIR MNT` works as well as
// `fincrypt --home DIR mount MNT`; homeDir reads the one given.
func addHomeFlag(cmds []*cli.Command) {
	names := strings.Fields(commandOrder[0].names)
	for _, c := range cmds {
		if slices.Contains(names, c.Name) {
			addHomeFlagTree(c)
		}
	}
}

func addHomeFlagTree(c *cli.Command) {
	if !slices.ContainsFunc(c.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), "home") }) {
		c.Flags = append(c.Flags, &cli.StringFlag{Name: "home", Usage: "the client's `DIR` (as the global --home)"})
	}
	for _, sub := range c.Subcommands {
		addHomeFlagTree(sub)
	}
}

// homeDir is the client's directory: the --home given nearest the command,
// else the global one (from FINCRYPT_HOME or the default).
func homeDir(c *cli.Context) string {
	lineage := c.Lineage()
	for _, ctx := range lineage {
		if slices.Contains(ctx.LocalFlagNames(), "home") {
			return ctx.String("home")
		}
	}
	return lineage[len(lineage)-1].String("home")
}

func newApp() *cli.App {
	setUsageErrors(commands)
	addHomeFlag(commands)
	for _, c := range commands {
		if slices.Contains(strings.Fields(daemonCommands), c.Name) {
			addDaemonFlags(c) // monitor.go
		}
	}
	return &cli.App{
		OnUsageError: usageError,
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(os.Stderr, "fincrypt: unknown command %q (see fincrypt --help)\n", name)
			os.Exit(exitUsage)
		},
		Name:  "fincrypt",
		Usage: "a client-side encrypted, distributed file store",
		Description: "Fincrypt encrypts everything you put in a mounted folder on your own machine,\n" +
			"erasure-codes it and spreads it over independent storage nodes that are paid\n" +
			"for as long as they prove they still hold it.\n\n" +
			"Start with `fincrypt init`, then `fincrypt mount ~/Fincrypt`.",
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "home",
				Usage:   "the client's `DIR`: vault config, encrypted index and local store",
				EnvVars: []string{"FINCRYPT_HOME"},
				Value:   defaultHome(),
			},
			&cli.BoolFlag{
				Name:    "debug",
				Usage:   "log debug output to stderr",
				EnvVars: []string{"FINCRYPT_DEBUG"},
			},
		},
		Before: func(c *cli.Context) error {
			level := slog.LevelInfo
			if c.Bool("debug") {
				level = slog.LevelDebug
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
			return nil
		},
		Commands:             orderCommands(commands),
		EnableBashCompletion: true,
		ExitErrHandler:       func(*cli.Context, error) {}, // we print errors ourselves
	}
}

func main() {
	os.Exit(run(os.Args))
}

func run(args []string) int {
	err := newApp().Run(args)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(os.Stderr, "fincrypt: %s\n", err)
	var ue *userError
	if errors.As(err, &ue) {
		return ue.code
	}
	if strings.HasPrefix(err.Error(), "Required flag") {
		return exitUsage // urfave/cli's check of Required flags
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return exitFailure
}
