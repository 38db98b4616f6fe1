package main

import (
	"bytes"
	"crypto/sha256"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const fixtureDir = "testdata/fixture"

var (
	fixtureOnce   sync.Once
	fixtureSchema *schema
	fixtureErr    error
)

// builtFixture builds the fixture's schemata once for the tests that
// share it.
func builtFixture(t *testing.T) *schema {
	t.Helper()
	fixtureOnce.Do(func() {
		pi, err := loadPackage(fixtureDir, nil)
		if err != nil {
			fixtureErr = err
			return
		}
		mutants, sites, err := enumerate(pi, nil)
		if err != nil {
			fixtureErr = err
			return
		}
		work, err := os.MkdirTemp("", "mutschema-test-")
		if err != nil {
			fixtureErr = err
			return
		}
		fixtureSchema, fixtureErr = build(pi, mutants, sites, work, nil, func(string, ...any) {})
	})
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixtureSchema
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureSchema != nil {
		os.RemoveAll(fixtureSchema.work)
	}
	os.Exit(code)
}

func find(t *testing.T, s *schema, where, from, to string) *Mutant {
	t.Helper()
	for _, m := range s.mutants {
		if m.String() == where+" "+from+" -> "+to {
			return m
		}
	}
	t.Fatalf("no mutant %s %s -> %s", where, from, to)
	return nil
}

func scoreSet(t *testing.T, s *schema, run string, ids ...int) map[int]outcome {
	t.Helper()
	return scoreSetWithin(t, s, run, time.Minute, ids...)
}

func scoreSetWithin(t *testing.T, s *schema, run string, timeout time.Duration, ids ...int) map[int]outcome {
	t.Helper()
	var chosen map[int]bool
	if len(ids) > 0 {
		chosen = map[int]bool{}
		for _, id := range ids {
			chosen[id] = true
		}
	}
	res, err := s.score(testSet{run: run}, true, chosen, timeout, nil, func(string, ...any) {},
		func(*Mutant, outcome, time.Duration) {})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestKilledAndLived: Adult is tested at its boundary, Discount away from
// it, so `age >= 18` made `> 18` is killed and `n > 10` made `>= 10`
// lives; the negations of both are killed.
func TestKilledAndLived(t *testing.T) {
	s := builtFixture(t)
	adult := find(t, s, "fixture.go:10:13", ">=", ">")
	adultNeg := find(t, s, "fixture.go:10:13", ">=", "<")
	disc := find(t, s, "fixture.go:16:7", ">", ">=")
	discNeg := find(t, s, "fixture.go:16:7", ">", "<=")
	res := scoreSet(t, s, "^Test(Adult|Discount)$", adult.ID, adultNeg.ID, disc.ID, discNeg.ID)
	want := map[*Mutant]outcome{adult: killed, adultNeg: killed, disc: lived, discNeg: killed}
	for m, o := range want {
		if res[m.ID] != o {
			t.Errorf("%s: %s, want %s", m, res[m.ID], o)
		}
	}
}

// TestOperandsEvaluatedOnce: every operand of Once is a call that counts
// itself, and TestOnce checks only the count. Under every mutant of
// Once's arithmetic, comparisons, unary minus and ++/-- on slices and
// maps, the count must stay that of the original code: each mutant lives.
func TestOperandsEvaluatedOnce(t *testing.T) {
	s := builtFixture(t)
	var ids []int
	for _, m := range s.mutants {
		if m.File == "fixture.go" && m.Line >= 47 && m.Line <= 61 {
			ids = append(ids, m.ID)
		}
	}
	if len(ids) < 20 {
		t.Fatalf("%d mutants on Once's lines, want at least 20", len(ids))
	}
	res := scoreSet(t, s, "^TestOnce$", ids...)
	for _, id := range ids {
		if res[id] != lived {
			t.Errorf("%s: %s: an operand was not evaluated exactly once", s.mutants[id-1], res[id])
		}
	}
}

// TestGeneratedCodeBuilds: every mutant but the constants, the string +
// and the named bool made it into the binary (none was dropped because
// its wrapped line did not compile), and the rewritten file parses with
// the original's lines.
func TestGeneratedCodeBuilds(t *testing.T) {
	s := builtFixture(t)
	skipped := map[string]int{}
	for _, m := range s.mutants {
		if m.Skip != "" {
			skipped[m.Skip]++
		}
	}
	want := map[string]int{"constant": 7, "string +": 1, "result of a named bool type": 2}
	if len(skipped) != len(want) {
		t.Errorf("not built: %v, want %v", skipped, want)
	}
	for k, n := range want {
		if skipped[k] != n {
			t.Errorf("not built: %v, want %v", skipped, want)
		}
	}
	orig, err := os.ReadFile(filepath.Join(fixtureDir, "fixture.go"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(s.work, "fixture.go"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.ParseFile(token.NewFileSet(), "fixture.go", got, 0); err != nil {
		t.Fatal(err)
	}
	if bytes.Count(got, []byte("\n")) != bytes.Count(orig, []byte("\n")) {
		t.Error("the rewritten file's lines differ from the original's")
	}
	if !bytes.Contains(got, []byte("mutschemaLSS(")) || !bytes.Contains(got, []byte("mutschemaINCMap(")) {
		t.Error("the rewritten file has no wrapped comparison or map increment")
	}
	if _, err := os.Stat(s.binary); err != nil {
		t.Error(err)
	}
}

// TestNotCovered: `a++` under an if the tests never take is not run.
func TestNotCovered(t *testing.T) {
	s := builtFixture(t)
	m := find(t, s, "fixture.go:63:4", "++", "--")
	if res := scoreSet(t, s, "^TestOnce$", m.ID); res[m.ID] != notCovered {
		t.Errorf("%s: %s, want NOT COVERED", m, res[m.ID])
	}
}

// TestCommandCompareAndIDs runs the command: only the chosen mutants run,
// the before set (TestAdult) does not reach Discount, the after set kills
// its negation, and the package directory is left as it was.
func TestCommandCompareAndIDs(t *testing.T) {
	before, gitBefore := treeHash(t, fixtureDir), gitDiff(t)
	var out, errb bytes.Buffer
	code := run([]string{"-run", "^Test(Adult|Discount)$", "-before-run", "^TestAdult$", "-ids", "1,3-4",
		fixtureDir, "fixture.go:1-20"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, out.String(), errb.String())
	}
	text := out.String()
	for _, want := range []string{
		"   1 KILLED      fixture.go:10:13 >= -> >",
		"   3 NOT COVERED fixture.go:16:7 > -> >=",
		"   3 LIVED       fixture.go:16:7 > -> >=",
		"   4 KILLED      fixture.go:16:7 > -> <=",
		"  before: killed 1 (timed out 0), lived 0, not covered 2, not built 0; efficacy 100.0 %",
		"  after:  killed 2 (timed out 0), lived 1, not covered 0, not built 0; efficacy 66.7 %",
		"Killed only by the after set:\n   4 fixture.go:16:7 > -> <=",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "   2 ") {
		t.Errorf("mutant 2 ran although not chosen:\n%s", text)
	}
	if after := treeHash(t, fixtureDir); after != before {
		t.Error("the package directory changed")
	}
	if gitAfter := gitDiff(t); gitAfter != gitBefore {
		t.Errorf("git diff of the fixture before the run:\n%s\nafter:\n%s", gitBefore, gitAfter)
	}
}

// gitDiff is `git diff` of the fixture (empty without git).
func gitDiff(t *testing.T) string {
	t.Helper()
	git, err := exec.LookPath("git")
	if err != nil {
		return ""
	}
	out, _ := exec.Command(git, "diff", "--", fixtureDir).Output()
	return string(out)
}

func treeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		h.Write([]byte(p))
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(h.Sum(nil))
}

func TestParseSpecs(t *testing.T) {
	if r, err := parseFileSpec("a.go:3-9"); err != nil || r != (fileRange{"a.go", 3, 9}) {
		t.Errorf("a.go:3-9: %v %v", r, err)
	}
	for _, bad := range []string{"a.go:9-3", "a.go:x", "a.go:0-2"} {
		if _, err := parseFileSpec(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	ids, err := parseIDs("2,5-7")
	if err != nil || len(ids) != 4 || !ids[2] || !ids[5] || !ids[7] || ids[4] {
		t.Errorf("2,5-7: %v %v", ids, err)
	}
	if _, err := parseIDs("3-1"); err == nil {
		t.Error("3-1 accepted")
	}
}

// TestPerTestReach: run test by test, the coverage names for each mutant
// the tests that evaluate it, and only those.
func TestPerTestReach(t *testing.T) {
	s := builtFixture(t)
	s.perTest = true
	defer func() { s.perTest = false }()
	reached, _, err := s.coverage(testSet{run: "^Test(Adult|Discount|Once)$"}, true, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	adult := find(t, s, "fixture.go:10:13", ">=", ">")
	once := find(t, s, "fixture.go:47:15", "+", "-")
	if got := strings.Join(reached[adult.ID], ","); got != "TestAdult" {
		t.Errorf("%s reached by %q, want TestAdult", adult, got)
	}
	if got := strings.Join(reached[once.ID], ","); got != "TestOnce" {
		t.Errorf("%s reached by %q, want TestOnce", once, got)
	}
	if _, ok := reached[find(t, s, "fixture.go:63:4", "++", "--").ID]; ok {
		t.Error("a++ under an if never taken counted as reached")
	}
	res, err := s.score(testSet{run: "^Test(Adult|Discount)$"}, true, nil, time.Minute, nil, func(string, ...any) {},
		func(*Mutant, outcome, time.Duration) {})
	if err != nil {
		t.Fatal(err)
	}
	if o := res[find(t, s, "fixture.go:16:7", ">", ">=").ID]; o != lived {
		t.Errorf("Discount's boundary mutant: %s, want LIVED", o)
	}
	if o := res[find(t, s, "fixture.go:16:7", ">", "<=").ID]; o != killed {
		t.Errorf("Discount's negation: %s, want KILLED", o)
	}
}

// TestHangIsKilled: Spin's i++ made i-- never ends; the run is stopped at
// the timeout and the mutant counts as killed (timed out).
func TestHangIsKilled(t *testing.T) {
	s := builtFixture(t)
	var loop *Mutant
	for _, m := range s.mutants {
		if m.Kind == kindIncDec && m.Line > 90 {
			loop = m
		}
	}
	if loop == nil {
		t.Fatal("no ++ in Spin")
	}
	start := time.Now()
	res := scoreSetWithin(t, s, "^TestSpin$", 2*time.Second, loop.ID)
	if res[loop.ID] != timedOut {
		t.Fatalf("%s: %s, want TIMED OUT", loop, res[loop.ID])
	}
	if took := time.Since(start); took > time.Minute {
		t.Fatalf("the hung run was stopped after %s", took)
	}
}
