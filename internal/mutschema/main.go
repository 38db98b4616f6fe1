// Command mutschema scores a package's tests by mutant schemata: every
// mutant of the kinds gremlins v0.5.0 makes by default (comparison moved
// by one or negated, + and - swapped, * and / swapped, % made *, ++ and --
// swapped, a unary - removed) is written into the package at once, each
// as a call that picks the mutated or the original operation by the
// environment variable FINCRYPT_MUTANT. The rewritten files reach the
// compiler through `go test -overlay` (the tree is never written), the
// test binary is built once and run once per mutant.
//
//	mutschema [flags] PKGDIR [FILE[:FROM-TO]...]
//
// With no files, every non-test Go file of the package. See docs/TESTING.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	after, before testSet
	compare       bool
	ids           map[int]bool
	list          bool
	buildOnly     bool
	perTest       bool
	show          bool
	short         bool
	timeout       time.Duration
	keep          string
	buildFlags    []string
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mutschema", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.after.run, "run", "", "`regexp` of the tests run against each mutant (-test.run; anchor it)")
	fs.StringVar(&o.after.skip, "skip", "", "`regexp` of tests left out (-test.skip)")
	fs.StringVar(&o.before.run, "before-run", "", "score first with these tests (the old ones), then with -run/-skip")
	fs.StringVar(&o.before.skip, "before-skip", "", "-test.skip of the before set (e.g. the new tests)")
	idList := fs.String("ids", "", "run only these mutants: `list` like 3,7,10-12")
	fs.BoolVar(&o.list, "list", false, "list the mutants and build nothing")
	fs.BoolVar(&o.buildOnly, "build-only", false, "build the test binary (use with -keep) and run nothing")
	fs.BoolVar(&o.perTest, "per-test", true, "run each test alone once with no mutant, then each mutant against only the tests that reach it (false: the whole set per mutant)")
	fs.BoolVar(&o.show, "show", false, "print, under each killed mutant, the failing tests' messages (to check why each was killed)")
	fs.BoolVar(&o.short, "short", true, "run the tests with -test.short")
	fs.DurationVar(&o.timeout, "timeout", time.Minute, "least time a mutant's run gets (else 5 times the run with no mutant); past it the mutant counts as killed (timed out)")
	fs.StringVar(&o.keep, "keep", "", "write the rewritten files and the binary into this `dir` and keep them")
	tags := fs.String("tags", "", "build tags")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 1 {
		fmt.Fprintln(stderr, "usage: mutschema [flags] PKGDIR [FILE[:FROM-TO]...]")
		fs.PrintDefaults()
		return 2
	}
	o.compare = o.before.run != "" || o.before.skip != ""
	if o.compare && o.before.run == "" {
		o.before.run = o.after.run
	}
	if !o.list && !o.buildOnly && o.after.run == "" {
		fmt.Fprintln(stderr, "mutschema: -run is required: name the in-package tests that reach the files (anchored, e.g. '^(TestA|TestB)$')")
		return 2
	}
	if *tags != "" {
		o.buildFlags = append(o.buildFlags, "-tags="+*tags)
	}
	if *idList != "" {
		ids, err := parseIDs(*idList)
		if err != nil {
			fmt.Fprintln(stderr, "mutschema:", err)
			return 2
		}
		o.ids = ids
	}
	var ranges []fileRange
	for _, a := range fs.Args()[1:] {
		for _, spec := range strings.Fields(a) {
			r, err := parseFileSpec(spec)
			if err != nil {
				fmt.Fprintln(stderr, "mutschema:", err)
				return 2
			}
			ranges = append(ranges, r)
		}
	}
	if err := score(fs.Arg(0), ranges, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "mutschema:", err)
		return 1
	}
	return 0
}

func parseIDs(s string) (map[int]bool, error) {
	ids := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(strings.TrimSpace(part), "-")
		from, err1 := strconv.Atoi(a)
		to, err2 := from, error(nil)
		if isRange {
			to, err2 = strconv.Atoi(b)
		}
		if err1 != nil || err2 != nil || from < 1 || to < from {
			return nil, fmt.Errorf("bad mutant id list %q", s)
		}
		for i := from; i <= to; i++ {
			ids[i] = true
		}
	}
	return ids, nil
}

func score(dir string, ranges []fileRange, o options, stdout, stderr io.Writer) error {
	log := func(format string, a ...any) {
		fmt.Fprintf(stderr, "mutschema: "+format+"\n", a...)
	}
	start := time.Now()
	pi, err := loadPackage(dir, o.buildFlags)
	if err != nil {
		return err
	}
	mutants, sites, err := enumerate(pi, ranges)
	if err != nil {
		return err
	}
	log("%d mutants in package %s (%s)", len(mutants), pi.name, time.Since(start).Round(time.Millisecond))
	if o.list {
		for _, m := range mutants {
			skip := ""
			if m.Skip != "" {
				skip = " (not built: " + m.Skip + ")"
			}
			fmt.Fprintf(stdout, "%4d %s %s%s\n", m.ID, m, m.Kind, skip)
		}
		return nil
	}
	work := o.keep
	if work == "" {
		work, err = os.MkdirTemp("", "mutschema-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(work)
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	s, err := build(pi, mutants, sites, work, o.buildFlags, log)
	if err != nil {
		return err
	}
	if o.buildOnly {
		n := 0
		for _, m := range mutants {
			if m.Skip == "" {
				n++
			}
		}
		fmt.Fprintf(stdout, "built %s: %d of %d mutants in it\n", s.binary, n, len(mutants))
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s.ctx, s.perTest, s.show, s.showTo = ctx, o.perTest, o.show, stdout
	report := func(m *Mutant, out outcome, took time.Duration) {
		if out == notCovered {
			fmt.Fprintf(stdout, "%4d %-11s %s %s\n", m.ID, out, m, m.Kind)
			return
		}
		fmt.Fprintf(stdout, "%4d %-11s %s %s (%s)\n", m.ID, out, m, m.Kind, took.Round(100*time.Millisecond))
	}
	var before map[int]outcome
	if o.compare {
		fmt.Fprintf(stdout, "== before: -test.run=%q -test.skip=%q\n", o.before.run, o.before.skip)
		before, err = s.score(o.before, o.short, o.ids, o.timeout, nil, log, report)
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "== after: -test.run=%q -test.skip=%q\n", o.after.run, o.after.skip)
	after, err := s.score(o.after, o.short, o.ids, o.timeout, before, log, report)
	if err != nil {
		return err
	}
	summarize(stdout, mutants, o.ids, before, after)
	log("done in %s", time.Since(start).Round(time.Second))
	return nil
}

type tally struct{ killed, lived, timedOut, notCovered, notBuilt int }

func (t *tally) add(o outcome) {
	switch o {
	case killed:
		t.killed++
	case timedOut:
		t.killed++
		t.timedOut++
	case lived:
		t.lived++
	case notCovered:
		t.notCovered++
	case notBuilt:
		t.notBuilt++
	}
}

func (t tally) String() string {
	eff := "-"
	if t.killed+t.lived > 0 {
		eff = fmt.Sprintf("%.1f %%", 100*float64(t.killed)/float64(t.killed+t.lived))
	}
	return fmt.Sprintf("killed %d (timed out %d), lived %d, not covered %d, not built %d; efficacy %s",
		t.killed, t.timedOut, t.lived, t.notCovered, t.notBuilt, eff)
}

// summarize prints per file the counts and efficacy (killed of killed +
// lived, timed out counted killed), before and after, and the survivors.
func summarize(w io.Writer, mutants []*Mutant, chosen map[int]bool, before, after map[int]outcome) {
	files := map[string][2]*tally{}
	var names []string
	total := [2]*tally{{}, {}}
	for _, m := range mutants {
		if chosen != nil && !chosen[m.ID] {
			continue
		}
		t, ok := files[m.File]
		if !ok {
			t = [2]*tally{{}, {}}
			files[m.File] = t
			names = append(names, m.File)
		}
		if before != nil {
			t[0].add(before[m.ID])
			total[0].add(before[m.ID])
		}
		t[1].add(after[m.ID])
		total[1].add(after[m.ID])
	}
	sort.Strings(names)
	fmt.Fprintln(w, "\nMutation score per file:")
	for _, name := range append(names, "all") {
		t := total
		if name != "all" {
			t = files[name]
		}
		if before != nil {
			fmt.Fprintf(w, "%s\n  before: %s\n  after:  %s\n", name, t[0], t[1])
		} else {
			fmt.Fprintf(w, "%s: %s\n", name, t[1])
		}
	}
	fmt.Fprintln(w, "\nLived:")
	for _, m := range mutants {
		if after[m.ID] == lived {
			fmt.Fprintf(w, "%4d %s %s\n", m.ID, m, m.Kind)
		}
	}
	if before != nil {
		fmt.Fprintln(w, "\nKilled only by the after set:")
		for _, m := range mutants {
			if before[m.ID] != killed && before[m.ID] != timedOut && (after[m.ID] == killed || after[m.ID] == timedOut) {
				fmt.Fprintf(w, "%4d %s %s (before: %s)\n", m.ID, m, m.Kind, before[m.ID])
			}
		}
	}
}
