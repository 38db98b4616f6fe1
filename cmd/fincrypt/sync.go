package main

// What `status` calls durable must be restorable: `fincrypt sync`, the final
// snapshot of an unmount, and the words status uses for both.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/replicate"
)

// unmountResultName is where the mount process leaves the outcome of its
// final sync for `fincrypt umount` to print.
const unmountResultName = "unmount.result"

var syncTimeoutFlag = &cli.DurationFlag{Name: "sync-timeout", Value: 3 * time.Minute,
	Usage: "at unmount, wait at most this long for uploads and the final index snapshot (then unmount anyway)"}

type unmountResult struct {
	Restorable bool   `json:"restorable"`
	Message    string `json:"message,omitempty"`
}

// finishSync runs the final sync of an unmount in the mount process: the
// outcome goes to stderr (the terminal, or mount.log) and to
// HOME/unmount.result for `fincrypt umount`.
func finishSync(rep *replicate.Replicator, home string) {
	var prog func(replicate.Status)
	tty := term.IsTerminal(int(os.Stderr.Fd()))
	if tty {
		prog = func(st replicate.Status) { fmt.Fprintf(os.Stderr, "\r\x1b[K%s", progressLine(&st)) }
	}
	st, ok := rep.Finish(prog)
	if tty {
		fmt.Fprint(os.Stderr, "\r\x1b[K")
	}
	res := unmountResult{Restorable: ok}
	if ok {
		slog.Info("everything is restorable: the final index snapshot is stored")
	} else {
		res.Message = notRestorableLine(&st)
		fmt.Fprintln(os.Stderr, "fincrypt: "+res.Message)
	}
	b, _ := json.Marshal(res)
	if err := os.WriteFile(filepath.Join(home, unmountResultName), b, 0o600); err != nil {
		slog.Warn("recording the unmount's outcome", "err", err)
	}
}

// readUnmountResult returns the warning the mount process left, if it was
// written after started.
func readUnmountResult(home string, started time.Time) string {
	p := filepath.Join(home, unmountResultName)
	fi, err := os.Stat(p)
	if err != nil || fi.ModTime().Before(started.Add(-time.Second)) {
		return ""
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	var res unmountResult
	if json.Unmarshal(b, &res) != nil || res.Restorable {
		return ""
	}
	return res.Message
}

// notRestorableLine says in one line what a restore would miss now, and
// that the next mount finishes it.
func notRestorableLine(st *replicate.Status) string {
	return unprotectedLine(st) + "; the next mount with the network reachable finishes the upload and the index snapshot"
}

// unprotectedLine says what a restore would miss now, and why.
func unprotectedLine(st *replicate.Status) string {
	since := "the last snapshot"
	if st.UnprotectedSince != nil {
		since = st.UnprotectedSince.Local().Format("2006-01-02 15:04:05")
	}
	msg := "changes since " + since + " are not yet restorable"
	if st.PendingBytes > 0 {
		msg += fmt.Sprintf(" (%s in %d file(s) not uploaded)", units.HumanSize(st.PendingBytes), st.PendingFiles)
	}
	if n := len(st.Errors); n > 0 {
		_, e, _ := strings.Cut(st.Errors[n-1], " ") // drop the time stamp
		msg += "; the network failed: " + e
	} else {
		msg += "; the network did not finish in time"
	}
	return msg
}

func progressLine(st *replicate.Status) string {
	s := "syncing: "
	switch {
	case st.UploadTotal > 0:
		s += fmt.Sprintf("uploading %s of %s, ", units.HumanSize(st.UploadDone), units.HumanSize(st.UploadTotal))
	case st.PendingBytes > 0:
		s += fmt.Sprintf("%s in %d file(s) to upload, ", units.HumanSize(st.PendingBytes), st.PendingFiles)
	}
	return s + "index snapshot pending"
}

// progress shows a sync's progress on a terminal, polling the control socket.
type progress struct {
	w    io.Writer
	tty  bool
	last time.Time
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *progress) poll(home string) {
	if !p.tty || time.Since(p.last) < 500*time.Millisecond {
		return
	}
	p.last = time.Now()
	if st, err := replicate.QueryStatus(home); err == nil {
		p.show(st)
	}
}

func (p *progress) show(st *replicate.Status) {
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s", progressLine(st))
	}
}

func (p *progress) done() {
	if p.tty && !p.last.IsZero() {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

// printRestorable is status's restorability block.
func printRestorable(w io.Writer, st *replicate.Status) {
	if st.Restorable {
		fmt.Fprintf(w, "restorable:     yes: a restore would bring back everything written so far\n")
		return
	}
	since := "now"
	if st.UnprotectedSince != nil {
		since = fmt.Sprintf("%s (%s ago)", st.UnprotectedSince.Local().Format(time.RFC3339), time.Since(*st.UnprotectedSince).Round(time.Second))
	}
	fmt.Fprintf(w, "restorable:     no: changes since %s are not in a stored index snapshot yet,\n", since)
	fmt.Fprintf(w, "                so a restore now would miss them (`fincrypt sync` waits until they are)\n")
}

func init() {
	register(&cli.Command{
		Name:  "sync",
		Usage: "wait until everything written so far is restorable",
		Description: "Asks the running mount to upload what is pending and to store an index\n" +
			"snapshot that covers every file closed or fsynced before this command started,\n" +
			"and waits for it (progress is shown on a terminal). Exit 0 means a restore on\n" +
			"another machine brings everything back, even if this one dies now. Exit 7\n" +
			"means --timeout passed first; the mount keeps trying in the background.",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute, Usage: "give up (exit 7) after this long"},
		},
		Action: syncAction,
	})
}

func syncAction(c *cli.Context) error {
	home, err := filepath.Abs(homeDir(c))
	if err != nil {
		return err
	}
	mark, err := replicate.RequestSync(home)
	if errors.Is(err, replicate.ErrNotRunning) {
		return userErr(exitNotFound, "%s is not mounted with a mediator (no status socket answers)", home)
	}
	if err != nil {
		return userErr(exitFailure, "sync: %v", err)
	}
	prog := newProgress(c.App.ErrWriter)
	deadline := time.Now().Add(c.Duration("timeout"))
	for {
		st, err := replicate.QueryStatus(home)
		if err != nil {
			prog.done()
			return userErr(exitFailure, "sync: the mount stopped answering: %v", err)
		}
		if st.Covered(mark) {
			prog.done()
			fmt.Fprintln(c.App.Writer, "Everything written so far is restorable.")
			return nil
		}
		if time.Now().After(deadline) {
			prog.done()
			return userErr(exitUnsynced, "not restorable after %s: %s; the mount keeps trying", c.Duration("timeout"), unprotectedLine(st))
		}
		prog.show(st)
		time.Sleep(200 * time.Millisecond)
	}
}
