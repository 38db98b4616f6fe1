package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// schema is the built test binary with every mutant in it.
type schema struct {
	pi      *pkgInfo
	mutants []*Mutant
	sites   map[string][]*site
	work    string // scratch directory: rewritten files, overlay, binary
	binary  string
	ctx     context.Context // cancelled on SIGINT/SIGTERM: the running binary is killed

	// perTest: each test is run alone once with no mutant, which tells the
	// mutants it reaches; a mutant then runs only the tests that reach it.
	perTest bool
	reach   map[string]testReach // by test name

	show   bool // print the failing tests' lines of each killed mutant
	showTo io.Writer
}

type testReach struct {
	ids  map[int]bool
	took time.Duration
}

// build writes the rewritten files and the helper into work, names them in
// an overlay (the package directory itself is never written) and builds
// the test binary once. A line the compiler refuses has its mutants
// marked not built and the build is tried again without them.
func build(pi *pkgInfo, mutants []*Mutant, sites map[string][]*site, work string, buildFlags []string, log func(string, ...any)) (*schema, error) {
	s := &schema{pi: pi, mutants: mutants, sites: sites, work: work, binary: filepath.Join(work, "schema.test"),
		ctx: context.Background(), reach: map[string]testReach{}}
	for attempt := 0; ; attempt++ {
		overlay := map[string]string{}
		var names []string
		for name := range sites {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			out := filepath.Join(work, name)
			if err := os.WriteFile(out, rewrite(pi.src[name], sites[name]), 0o644); err != nil {
				return nil, err
			}
			overlay[filepath.Join(pi.dir, name)] = out
		}
		helper := filepath.Join(work, "zz_mutschema.go")
		if err := os.WriteFile(helper, helperSource(pi.name, len(mutants)), 0o644); err != nil {
			return nil, err
		}
		overlay[filepath.Join(pi.dir, "zz_mutschema.go")] = helper
		ov, _ := json.Marshal(map[string]any{"Replace": overlay})
		ovPath := filepath.Join(work, "overlay.json")
		if err := os.WriteFile(ovPath, ov, 0o644); err != nil {
			return nil, err
		}
		args := append([]string{"test", "-c", "-vet=off", "-ldflags=-w", "-o", s.binary, "-overlay", ovPath}, buildFlags...)
		args = append(args, ".")
		cmd := exec.Command("go", args...)
		cmd.Dir = pi.dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		log("build %d: %v (%s)", attempt+1, errOK(err), time.Since(start).Round(time.Second))
		if err == nil {
			return s, nil
		}
		refused := refusedLines(out.String(), work)
		marked := 0
		for _, m := range mutants {
			if m.Skip == "" && refused[m.File][m.Line] {
				m.Skip = "does not compile"
				marked++
			}
		}
		if marked == 0 || attempt >= 10 {
			return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		log("%d mutants on lines the compiler refused: not built; building again", marked)
	}
}

func errOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

var compileErr = regexp.MustCompile(`(?m)^(?:\./)?([^\s:]+\.go):(\d+):\d+: `)

// refusedLines reads the compiler's "file.go:line:col: message" lines
// that name the rewritten files.
func refusedLines(out, work string) map[string]map[int]bool {
	got := map[string]map[int]bool{}
	for _, m := range compileErr.FindAllStringSubmatch(out, -1) {
		name := filepath.Base(m[1])
		line, _ := strconv.Atoi(m[2])
		if got[name] == nil {
			got[name] = map[int]bool{}
		}
		got[name][line] = true
	}
	return got
}

// testSet is one choice of tests: a -test.run and a -test.skip.
type testSet struct {
	run, skip string
}

func (t testSet) args(short bool) []string {
	a := []string{"-test.run=" + t.run, "-test.failfast", "-test.count=1", "-test.cpu=1"}
	if t.skip != "" {
		a = append(a, "-test.skip="+t.skip)
	}
	if short {
		a = append(a, "-test.short")
	}
	return a
}

type outcome int

const (
	notRun outcome = iota
	killed
	timedOut // counted as killed
	lived
	notCovered
	notBuilt
)

func (o outcome) String() string {
	return [...]string{"NOT RUN", "KILLED", "TIMED OUT", "LIVED", "NOT COVERED", "NOT BUILT"}[o]
}

// runOnce runs the binary with one mutant switched on (0: none). A run
// past the timeout is stopped with its whole process group.
func (s *schema) runOnce(set testSet, short bool, id int, cover string, timeout time.Duration) (ok bool, hung bool, out string, err error) {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.binary, set.args(short)...)
	cmd.Dir = s.pi.dir
	cmd.Env = append(os.Environ(), "FINCRYPT_MUTANT="+strconv.Itoa(id), "FINCRYPT_MUTANT_COVER="+cover)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	runErr := cmd.Run()
	if s.ctx.Err() != nil {
		return false, false, buf.String(), s.ctx.Err()
	}
	if ctx.Err() != nil {
		return false, true, buf.String(), nil
	}
	var exit *exec.ExitError
	if runErr != nil && !errors.As(runErr, &exit) {
		return false, false, buf.String(), runErr
	}
	return runErr == nil, false, buf.String(), nil
}

// coverage runs the set with no mutant and returns, for each mutant whose
// expression it evaluated, the tests that evaluated it (nil when the set
// was run whole), and how long the set took. The tests must pass.
func (s *schema) coverage(set testSet, short bool, limit time.Duration) (map[int][]string, time.Duration, error) {
	if !s.perTest {
		ids, took, err := s.coverOnce(set, short, limit)
		if err != nil {
			return nil, 0, err
		}
		reached := map[int][]string{}
		for id := range ids {
			reached[id] = nil
		}
		return reached, took, nil
	}
	names, err := s.listTests(set)
	if err != nil {
		return nil, 0, err
	}
	if len(names) == 0 {
		return nil, 0, fmt.Errorf("-test.run=%q -test.skip=%q runs no test", set.run, set.skip)
	}
	reached := map[int][]string{}
	var total time.Duration
	for _, name := range names {
		r, ok := s.reach[name]
		if !ok {
			ids, took, err := s.coverOnce(testSet{run: "^" + regexp.QuoteMeta(name) + "$", skip: set.skip}, short, limit)
			if err != nil {
				return nil, 0, err
			}
			r = testReach{ids: ids, took: took}
			s.reach[name] = r
		}
		total += r.took
		for id := range r.ids {
			reached[id] = append(reached[id], name)
		}
	}
	return reached, total, nil
}

// listTests names the top-level tests of the set.
func (s *schema) listTests(set testSet) ([]string, error) {
	cmd := exec.CommandContext(s.ctx, s.binary, "-test.list="+set.run)
	cmd.Dir = s.pi.dir
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing the tests: %v", err)
	}
	var skip *regexp.Regexp
	if set.skip != "" {
		if skip, err = regexp.Compile(set.skip); err != nil {
			return nil, fmt.Errorf("-skip: %v", err)
		}
	}
	var names []string
	for _, name := range strings.Fields(string(out)) {
		if strings.HasPrefix(name, "Test") && (skip == nil || !skip.MatchString(name)) {
			names = append(names, name)
		}
	}
	return names, nil
}

// coverOnce runs the set once with no mutant and reads the mutants whose
// expressions it evaluated.
func (s *schema) coverOnce(set testSet, short bool, limit time.Duration) (map[int]bool, time.Duration, error) {
	f, err := os.CreateTemp(s.work, "cover-*")
	if err != nil {
		return nil, 0, err
	}
	f.Close()
	defer os.Remove(f.Name())
	start := time.Now()
	ok, hung, out, err := s.runOnce(set, short, 0, f.Name(), limit)
	took := time.Since(start)
	if err != nil {
		return nil, 0, err
	}
	if hung {
		return nil, 0, fmt.Errorf("the tests (-test.run=%q -test.skip=%q) with no mutant took more than %s", set.run, set.skip, limit)
	}
	if !ok {
		return nil, 0, fmt.Errorf("the tests (-test.run=%q -test.skip=%q) fail with no mutant:\n%s", set.run, set.skip, tail(out, 40))
	}
	if strings.Contains(out, "testing: warning: no tests to run") {
		return nil, 0, fmt.Errorf("-test.run=%q -test.skip=%q runs no test", set.run, set.skip)
	}
	data, err := os.ReadFile(f.Name())
	if err != nil {
		return nil, 0, err
	}
	reached := map[int]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if id, err := strconv.Atoi(sc.Text()); err == nil {
			reached[id] = true
		}
	}
	return reached, took, nil
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// score runs each chosen mutant against the set. done, when not nil,
// holds outcomes already known (a mutant killed by a subset of the tests
// is killed by the whole set) and is not run again.
func (s *schema) score(set testSet, short bool, chosen map[int]bool, minTimeout time.Duration, done map[int]outcome,
	log func(string, ...any), report func(*Mutant, outcome, time.Duration)) (map[int]outcome, error) {
	reached, base, err := s.coverage(set, short, 30*time.Minute)
	if err != nil {
		return nil, err
	}
	how := "the whole set per mutant"
	if s.perTest {
		how = "per mutant only the tests that reach it"
	}
	log("tests with no mutant: %s; %d mutants reached; %s", base.Round(time.Millisecond), len(reached), how)
	res := map[int]outcome{}
	for _, m := range s.mutants {
		if chosen != nil && !chosen[m.ID] {
			continue
		}
		switch {
		case m.Skip != "":
			res[m.ID] = notBuilt
			continue
		case done[m.ID] == killed || done[m.ID] == timedOut:
			res[m.ID] = done[m.ID]
			continue
		case !hasKey(reached, m.ID):
			res[m.ID] = notCovered
			report(m, notCovered, 0)
			continue
		}
		run, took := set, base
		if s.perTest {
			took = 0
			for _, name := range reached[m.ID] {
				took += s.reach[name].took
			}
			run.run = "^(" + strings.Join(reached[m.ID], "|") + ")$"
		}
		timeout := 5 * took
		if timeout < minTimeout {
			timeout = minTimeout
		}
		start := time.Now()
		ok, hung, out, err := s.runOnce(run, short, m.ID, "", timeout)
		if err != nil {
			return nil, err
		}
		o := killed
		switch {
		case hung:
			o = timedOut
		case ok:
			o = lived
		}
		res[m.ID] = o
		report(m, o, time.Since(start))
		if s.show && o != lived {
			fmt.Fprintf(s.showTo, "%s\n", indent(failures(out)))
		}
	}
	return res, nil
}

func hasKey(m map[int][]string, k int) bool {
	_, ok := m[k]
	return ok
}

// failures keeps the lines of a test run that say what failed: the
// "--- FAIL" lines, the test's messages under them and a panic's first
// lines.
func failures(out string) string {
	var keep []string
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "--- FAIL") || strings.HasPrefix(l, "    ") && strings.Contains(l, ".go:") ||
			strings.HasPrefix(t, "panic:") || strings.HasPrefix(t, "FAIL") && i > 0 && len(keep) == 0 {
			keep = append(keep, t)
		}
		if len(keep) >= 8 {
			break
		}
	}
	return strings.Join(keep, "\n")
}

func indent(s string) string {
	if s == "" {
		return "       (no failure message)"
	}
	return "       " + strings.ReplaceAll(s, "\n", "\n       ")
}
