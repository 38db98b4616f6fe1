// Package progress reports the progress of long work: files, bytes, rate and ETA.
//
// # API
//
//	p := progress.New(os.Stderr, progress.Options{Label: "restore", JSON: jsonFlag})
//	p.SetTotal(files, bytes)      // when known (may grow; 0 = unknown)
//	p.Add(1, n)                   // from any goroutine, as work completes
//	p.Set(doneFiles, doneBytes)   // or absolute counts (e.g. pending going down)
//	p.Finish(err)                 // the final line or JSON summary; call once
//	p.FinishWith(err, result)     // the same, with the command's result in the JSON summary
//
// Three modes, chosen by New:
//   - JSON (Options.JSON): one JSON object per line, {"type":"progress",...} at most once per
//     Options.Interval (default 1s), and a final {"type":"summary",...} from Finish with the
//     exact counts. Written whether or not the output is a terminal: scripts read it.
//   - Terminal (the output is an *os.File on a TTY): one line redrawn in place ("\r...\x1b[K")
//     at most once per Options.Interval (default 200ms), ended with a newline by Finish.
//   - Otherwise: nothing at all.
//
// Rate is bytes (or, without byte counts, files) done over the time since New; ETA is what
// remains at that rate. Both are zero until some work is done.
package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/fincrypt/fincrypt/internal/units"
)

// Options configures a Reporter.
type Options struct {
	Label    string
	JSON     bool
	Interval time.Duration    // minimum time between two updates written (0: 200ms terminal, 1s JSON)
	Now      func() time.Time // tests
	TTY      *bool            // tests: override the terminal check
}

// State is one reading of the counters.
type State struct {
	Type       string  `json:"type"` // "progress" or "summary"
	Label      string  `json:"label,omitempty"`
	Files      int64   `json:"files"`
	TotalFiles int64   `json:"total_files"`
	Bytes      int64   `json:"bytes"`
	TotalBytes int64   `json:"total_bytes"`
	Elapsed    float64 `json:"elapsed_s"`
	Rate       float64 `json:"rate_bps"` // bytes per second (files per second when no bytes are counted)
	ETA        float64 `json:"eta_s"`    // seconds; 0 when unknown or done
	Error      string  `json:"error,omitempty"`
	// Result is what the command did, in the summary of a command that has
	// more to say than the counts (FinishWith).
	Result any `json:"result,omitempty"`
}

type mode int

const (
	quiet mode = iota
	tty
	jsonLines
)

// Reporter counts work and writes it out. Safe for concurrent use.
type Reporter struct {
	mu       sync.Mutex
	out      io.Writer
	opt      Options
	mode     mode
	start    time.Time
	last     time.Time
	wrote    bool
	finished bool
	files    int64
	tFiles   int64
	bytes    int64
	tBytes   int64
	lineLen  int
}

// New makes a Reporter writing to out.
func New(out io.Writer, opt Options) *Reporter {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	r := &Reporter{out: out, opt: opt, start: opt.Now()}
	isTTY := false
	if opt.TTY != nil {
		isTTY = *opt.TTY
	} else if f, ok := out.(*os.File); ok {
		isTTY = term.IsTerminal(int(f.Fd()))
	}
	switch {
	case opt.JSON:
		r.mode = jsonLines
	case isTTY:
		r.mode = tty
	}
	if r.opt.Interval <= 0 {
		r.opt.Interval = 200 * time.Millisecond
		if r.mode == jsonLines {
			r.opt.Interval = time.Second
		}
	}
	return r
}

// Active says whether anything is written (a terminal or JSON).
func (r *Reporter) Active() bool { return r.mode != quiet }

// SetTotal sets the expected totals (0: unknown).
func (r *Reporter) SetTotal(files, bytes int64) {
	r.mu.Lock()
	r.tFiles, r.tBytes = files, bytes
	r.mu.Unlock()
	r.maybe()
}

// Add counts done work.
func (r *Reporter) Add(files, bytes int64) {
	r.mu.Lock()
	r.files += files
	r.bytes += bytes
	r.mu.Unlock()
	r.maybe()
}

// Set sets the done counts.
func (r *Reporter) Set(files, bytes int64) {
	r.mu.Lock()
	r.files, r.bytes = files, bytes
	r.mu.Unlock()
	r.maybe()
}

// State returns the counters now.
func (r *Reporter) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state("progress")
}

func (r *Reporter) state(typ string) State {
	el := r.opt.Now().Sub(r.start).Seconds()
	s := State{Type: typ, Label: r.opt.Label, Files: r.files, TotalFiles: r.tFiles,
		Bytes: r.bytes, TotalBytes: r.tBytes, Elapsed: el}
	done, total := float64(r.bytes), float64(r.tBytes)
	if r.tBytes == 0 && r.bytes == 0 {
		done, total = float64(r.files), float64(r.tFiles)
	}
	if el > 0 && done > 0 {
		s.Rate = done / el
		if total > done {
			s.ETA = (total - done) / s.Rate
		}
	}
	return s
}

func (r *Reporter) maybe() {
	if r.mode == quiet {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return
	}
	now := r.opt.Now()
	if r.wrote && now.Sub(r.last) < r.opt.Interval {
		return
	}
	r.last, r.wrote = now, true
	r.write(r.state("progress"))
}

// Finish writes the final state (JSON: the summary line; terminal: the last line and a
// newline). Later calls do nothing.
func (r *Reporter) Finish(err error) { r.FinishWith(err, nil) }

// FinishWith is Finish with the command's result in the JSON summary.
func (r *Reporter) FinishWith(err error, result any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return
	}
	r.finished = true
	s := r.state("summary")
	s.Result = result
	if err != nil {
		s.Error = err.Error()
	}
	switch r.mode {
	case jsonLines:
		r.write(s)
	case tty:
		r.write(s)
		fmt.Fprint(r.out, "\n")
	}
}

func (r *Reporter) write(s State) {
	switch r.mode {
	case jsonLines:
		b, _ := json.Marshal(s)
		r.out.Write(append(b, '\n'))
	case tty:
		line := Line(s)
		fmt.Fprintf(r.out, "\r%s\x1b[K", line)
	}
}

// Line renders a state as the terminal shows it.
func Line(s State) string {
	line := ""
	if s.Label != "" {
		line = s.Label + ": "
	}
	if s.TotalFiles > 0 {
		line += fmt.Sprintf("%d/%d files", s.Files, s.TotalFiles)
	} else {
		line += fmt.Sprintf("%d files", s.Files)
	}
	if s.TotalBytes > 0 {
		line += fmt.Sprintf(", %s/%s", hs(s.Bytes), hs(s.TotalBytes))
		if s.Bytes <= s.TotalBytes {
			line += fmt.Sprintf(" (%d%%)", s.Bytes*100/s.TotalBytes)
		}
	} else if s.Bytes > 0 {
		line += ", " + hs(s.Bytes)
	}
	if s.Rate > 0 {
		if s.Bytes > 0 || s.TotalBytes > 0 {
			line += ", " + hs(int64(s.Rate)) + "/s"
		} else {
			line += fmt.Sprintf(", %.1f files/s", s.Rate)
		}
	}
	if s.Type == "summary" {
		line += fmt.Sprintf(", done in %s", (time.Duration(s.Elapsed * float64(time.Second))).Round(time.Second/10))
		if s.Error != "" {
			line += ": " + s.Error
		}
	} else if s.ETA > 0 {
		line += ", ETA " + (time.Duration(s.ETA * float64(time.Second))).Round(time.Second).String()
	}
	return line
}

func hs(n int64) string {
	if n < 0 {
		n = 0
	}
	return units.HumanSize(uint64(n))
}
