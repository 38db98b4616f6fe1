package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	progressbar "github.com/fincrypt/fincrypt/internal/progress"
	"github.com/fincrypt/fincrypt/replicate"
)

// jsonProgressFlag asks a long command for JSON progress lines on stdout.
var jsonProgressFlag = &cli.BoolFlag{Name: "json", Usage: "print progress as JSON lines on stdout ({\"type\":\"progress\",...} at most once a second, then one {\"type\":\"summary\",...}); other output goes to stderr"}

// newReporter makes the progress reporter of a long command: JSON lines on stdout with
// --json, else a redrawn line on stderr when it is a terminal, else nothing.
func newReporter(c *cli.Context, label string) *progressbar.Reporter {
	if c.Bool("json") {
		return progressbar.New(c.App.Writer, progressbar.Options{Label: label, JSON: true})
	}
	return progressbar.New(os.Stderr, progressbar.Options{Label: label})
}

// messages is where a command with progress prints its human lines: stderr under --json.
func messages(c *cli.Context) io.Writer {
	if c.Bool("json") {
		return c.App.ErrWriter
	}
	return c.App.Writer
}

// statusWatch follows the first sync: pending files and bytes going down, with rate and
// ETA, until nothing is pending (or Ctrl-C).
func statusWatch(c *cli.Context, home string, every time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := newReporter(c, "sync")
	var totalFiles, totalBytes int64
	for first := true; ; first = false {
		st, err := replicate.QueryStatus(home)
		if err != nil {
			p.Finish(err)
			if errors.Is(err, replicate.ErrNotRunning) {
				return userErr(exitNotFound, "%s is not mounted with a mediator (no status socket answers)", home)
			}
			return userErr(exitFailure, "status: %v", err)
		}
		files, bytes := int64(st.PendingFiles), int64(st.PendingBytes)
		// Totals grow when more is written meanwhile, so that done never goes back.
		if first || totalFiles-files < 0 {
			totalFiles = max(totalFiles, files)
		}
		doneFiles := max(totalFiles-files, 0)
		totalFiles = doneFiles + files
		if first || totalBytes-bytes < 0 {
			totalBytes = max(totalBytes, bytes)
		}
		doneBytes := max(totalBytes-bytes, 0)
		totalBytes = doneBytes + bytes
		p.SetTotal(totalFiles, totalBytes)
		p.Set(doneFiles, doneBytes)
		if files == 0 && bytes == 0 {
			p.Finish(nil)
			if !c.Bool("json") {
				fmt.Fprintf(c.App.Writer, "nothing pending: everything written so far is on the network (%d file(s), %d bytes uploaded while watching)\n", doneFiles, doneBytes)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			p.Finish(ctx.Err())
			return nil
		case <-time.After(every):
		}
	}
}

// reportSegments feeds a restore's snapshot segments into p.
func reportSegments(p *progressbar.Reporter) func(segs, totalSegs int, bytes, totalBytes int64) {
	return func(segs, totalSegs int, bytes, totalBytes int64) {
		p.SetTotal(int64(totalSegs), totalBytes)
		p.Set(int64(segs), bytes)
	}
}

// checkWithProgress runs fs.CheckWith with chunks and bytes as progress; under --json the
// problems go to stderr and stdout holds only the JSON lines.
func checkWithProgress(c *cli.Context, v *vault.Vault) (int, error) {
	p := newReporter(c, "check")
	out := io.Writer(os.Stdout)
	if c.Bool("json") {
		out = c.App.ErrWriter
	}
	n, err := fs.CheckWith(v, out, fs.CheckOptions{Progress: func(chunks, total int, bytes, totalBytes int64) {
		p.SetTotal(int64(total), totalBytes)
		p.Set(int64(chunks), bytes)
	}})
	if err == nil && n > 0 {
		p.Finish(fmt.Errorf("%d problem(s)", n))
	} else {
		p.Finish(err)
	}
	return n, err
}
