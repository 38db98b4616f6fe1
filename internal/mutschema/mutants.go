package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
)

// The mutant kinds of gremlins v0.5.0's defaults.
const (
	kindBoundary  = "CONDITIONALS_BOUNDARY"
	kindNegation  = "CONDITIONALS_NEGATION"
	kindArith     = "ARITHMETIC_BASE"
	kindIncDec    = "INCREMENT_DECREMENT"
	kindInvertNeg = "INVERT_NEGATIVES"
)

// Mutant is one change of one operator. Skip, when set, says why the
// mutant is not in the test binary (a constant, a string +, or a line the
// compiler refused once wrapped).
type Mutant struct {
	ID        int
	File      string // relative to the package directory
	Line, Col int    // of the operator
	Kind      string
	From, To  string
	Skip      string
}

func (m Mutant) String() string {
	return fmt.Sprintf("%s:%d:%d %s -> %s", m.File, m.Line, m.Col, m.From, m.To)
}

// fileRange is one file of the package, with the lines to mutate (all when
// from is 0).
type fileRange struct {
	name     string
	from, to int
}

// parseFileSpec reads "file.go" or "file.go:40-120".
func parseFileSpec(s string) (fileRange, error) {
	name, rng, ok := strings.Cut(s, ":")
	if !ok {
		return fileRange{name: s}, nil
	}
	a, b, ok := strings.Cut(rng, "-")
	from, err1 := strconv.Atoi(a)
	to, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || from < 1 || to < from {
		return fileRange{}, fmt.Errorf("bad line range %q (want file.go:FROM-TO)", s)
	}
	return fileRange{name: name, from: from, to: to}, nil
}

// pkgInfo is the parsed and type-checked package.
type pkgInfo struct {
	dir   string // absolute
	name  string
	fset  *token.FileSet
	files map[string]*ast.File // by base name, the non-test Go files
	src   map[string][]byte
	info  *types.Info
}

type listedPkg struct {
	ImportPath string
	Name       string
	Dir        string
	Export     string
	GoFiles    []string
	ImportMap  map[string]string
	DepOnly    bool
	Error      *struct{ Err string }
}

// loadPackage type-checks the package in dir from the compiler's export
// data of its dependencies (`go list -export -deps`), so no library beyond
// the standard one is needed.
func loadPackage(dir string, buildFlags []string) (*pkgInfo, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	args := append([]string{"list", "-export", "-deps", "-json"}, buildFlags...)
	args = append(args, ".")
	cmd := exec.Command("go", args...)
	cmd.Dir = abs
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list in %s: %v: %s", abs, err, stderr.String())
	}
	exports := map[string]string{}
	var target *listedPkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list output: %v", err)
		}
		if p.Error != nil {
			return nil, fmt.Errorf("package %s: %s", p.ImportPath, p.Error.Err)
		}
		exports[p.ImportPath] = p.Export
		if !p.DepOnly {
			q := p
			target = &q
		}
	}
	if target == nil {
		return nil, fmt.Errorf("no package in %s", abs)
	}
	pi := &pkgInfo{
		dir:   abs,
		name:  target.Name,
		fset:  token.NewFileSet(),
		files: map[string]*ast.File{},
		src:   map[string][]byte{},
		info: &types.Info{
			Types: map[ast.Expr]types.TypeAndValue{},
		},
	}
	var files []*ast.File
	for _, name := range target.GoFiles {
		src, err := os.ReadFile(filepath.Join(abs, name))
		if err != nil {
			return nil, err
		}
		f, err := parser.ParseFile(pi.fset, filepath.Join(abs, name), src, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		pi.files[name] = f
		pi.src[name] = src
		files = append(files, f)
	}
	lookup := func(path string) (io.ReadCloser, error) {
		if mapped, ok := target.ImportMap[path]; ok {
			path = mapped
		}
		exp, ok := exports[path]
		if !ok || exp == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(exp)
	}
	conf := types.Config{
		Importer: importer.ForCompiler(pi.fset, "gc", lookup),
		Sizes:    types.SizesFor("gc", runtime.GOARCH),
	}
	if _, err := conf.Check(target.ImportPath, pi.fset, files, pi.info); err != nil {
		return nil, fmt.Errorf("type-checking %s: %v", target.ImportPath, err)
	}
	return pi, nil
}

// site is one mutated expression or statement with its mutants and the
// edits that wrap it in the helper call.
type site struct {
	mutants []*Mutant
	edits   []edit
}

// edit replaces src[start:end] by text (an insertion when start == end).
// order sorts edits at one offset: closings (deepest first), then openings
// (outermost first), then replacements.
type edit struct {
	start, end int
	text       string
	order      int
}

const (
	orderClose   = 0
	orderOpen    = 1_000_000
	orderReplace = 2_000_000
)

var ordered = map[token.Token]bool{token.LSS: true, token.LEQ: true, token.GTR: true, token.GEQ: true}

var boundary = map[token.Token]token.Token{token.LSS: token.LEQ, token.LEQ: token.LSS, token.GTR: token.GEQ, token.GEQ: token.GTR}

var negation = map[token.Token]token.Token{
	token.EQL: token.NEQ, token.NEQ: token.EQL,
	token.LSS: token.GEQ, token.LEQ: token.GTR, token.GTR: token.LEQ, token.GEQ: token.LSS,
}

var arith = map[token.Token]token.Token{token.ADD: token.SUB, token.SUB: token.ADD, token.MUL: token.QUO, token.QUO: token.MUL, token.REM: token.MUL}

var helperName = map[token.Token]string{
	token.LSS: "mutschemaLSS", token.LEQ: "mutschemaLEQ", token.GTR: "mutschemaGTR", token.GEQ: "mutschemaGEQ",
	token.ADD: "mutschemaADD", token.SUB: "mutschemaSUB", token.MUL: "mutschemaMUL", token.QUO: "mutschemaQUO", token.REM: "mutschemaREM",
}

// enumerate lists the mutants of the chosen files and lines, numbered from
// 1 in file and position order, with the edits that build them.
func enumerate(pi *pkgInfo, ranges []fileRange) ([]*Mutant, map[string][]*site, error) {
	byFile := map[string][]fileRange{}
	var names []string
	for _, r := range ranges {
		if _, ok := pi.files[r.name]; !ok {
			return nil, nil, fmt.Errorf("%s is not a non-test Go file of package %s in %s", r.name, pi.name, pi.dir)
		}
		if _, seen := byFile[r.name]; !seen {
			names = append(names, r.name)
		}
		byFile[r.name] = append(byFile[r.name], r)
	}
	if len(ranges) == 0 {
		for name := range pi.files {
			names = append(names, name)
			byFile[name] = []fileRange{{name: name}}
		}
	}
	sort.Strings(names)
	inRange := func(name string, line int) bool {
		for _, r := range byFile[name] {
			if r.from == 0 || (line >= r.from && line <= r.to) {
				return true
			}
		}
		return false
	}
	for name, f := range pi.files {
		taken := false
		ast.Inspect(f, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok && strings.HasPrefix(id.Name, "mutschema") {
				taken = true
			}
			return !taken
		})
		if taken {
			return nil, nil, fmt.Errorf("%s already uses an identifier starting with mutschema", name)
		}
	}

	var all []*Mutant
	sites := map[string][]*site{}
	for _, name := range names {
		f := pi.files[name]
		tf := pi.fset.File(f.Pos())
		off := func(p token.Pos) int { return tf.Offset(p) }
		var fileSites []*site
		depth := 0
		var visit func(n ast.Node) bool
		add := func(pos token.Pos, kind string, from, to token.Token) *Mutant {
			p := pi.fset.Position(pos)
			m := &Mutant{File: name, Line: p.Line, Col: p.Column, Kind: kind, From: from.String(), To: to.String()}
			return m
		}
		visit = func(n ast.Node) bool {
			if n == nil {
				depth--
				return false
			}
			depth++
			switch e := n.(type) {
			case *ast.BinaryExpr:
				if !inRange(name, pi.fset.Position(e.OpPos).Line) {
					break
				}
				if s := binarySite(pi, e, off, depth, add); s != nil {
					fileSites = append(fileSites, s)
				}
			case *ast.UnaryExpr:
				if e.Op != token.SUB || !inRange(name, pi.fset.Position(e.OpPos).Line) {
					break
				}
				m := add(e.OpPos, kindInvertNeg, token.SUB, token.ADD)
				m.To = "+"
				s := &site{mutants: []*Mutant{m}}
				tv := pi.info.Types[e]
				if tv.Value != nil {
					m.Skip = "constant"
				} else {
					s.edits = []edit{
						{off(e.OpPos), off(e.OpPos) + 1, "mutschemaNEG(@0, ", orderReplace},
						{off(e.X.End()), off(e.X.End()), ")", orderClose - depth},
					}
				}
				fileSites = append(fileSites, s)
			case *ast.IncDecStmt:
				if !inRange(name, pi.fset.Position(e.TokPos).Line) {
					break
				}
				to := token.DEC
				helper := "mutschemaINC"
				if e.Tok == token.DEC {
					to, helper = token.INC, "mutschemaDEC"
				}
				m := add(e.TokPos, kindIncDec, e.Tok, to)
				s := &site{mutants: []*Mutant{m}}
				tokEnd := off(e.TokPos) + 2
				if ix, ok := ast.Unparen(e.X).(*ast.IndexExpr); ok && isMap(pi.info.Types[ix.X].Type) {
					if ix != e.X {
						m.Skip = "parenthesized map index"
						fileSites = append(fileSites, s)
						break
					}
					s.edits = []edit{
						{off(e.X.Pos()), off(e.X.Pos()), helper + "Map(@0, ", orderOpen + depth},
						{off(ix.Lbrack), off(ix.Lbrack) + 1, ", ", orderReplace},
						{off(ix.Rbrack), tokEnd, ")", orderReplace},
					}
				} else {
					s.edits = []edit{
						{off(e.X.Pos()), off(e.X.Pos()), helper + "(@0, &", orderOpen + depth},
						{off(e.TokPos), tokEnd, ")", orderReplace},
					}
				}
				fileSites = append(fileSites, s)
			}
			return true
		}
		ast.Inspect(f, visit)
		for _, s := range fileSites {
			for _, m := range s.mutants {
				all = append(all, m)
			}
		}
		sites[name] = fileSites
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	for i, m := range all {
		m.ID = i + 1
	}
	return all, sites, nil
}

func isMap(t types.Type) bool {
	if t == nil {
		return false
	}
	_, ok := t.Underlying().(*types.Map)
	return ok
}

// binarySite gives the mutants of one binary expression and the edits
// that make it a call of the helper: `a < b` becomes
// `mutschemaLSS(B, N, a, b)`, `a == b` becomes `mutschemaNOT(N, a == b)`,
// `a + b` becomes `mutschemaADD(A, a, b)`. Each operand stays in its place,
// evaluated once, in the same order.
func binarySite(pi *pkgInfo, e *ast.BinaryExpr, off func(token.Pos) int, depth int,
	add func(token.Pos, string, token.Token, token.Token) *Mutant) *site {
	tv := pi.info.Types[e]
	s := &site{}
	skip := ""
	if tv.Value != nil {
		skip = "constant"
	}
	switch {
	case e.Op == token.EQL || e.Op == token.NEQ:
		s.mutants = []*Mutant{add(e.OpPos, kindNegation, e.Op, negation[e.Op])}
		if skip == "" && !plainBool(tv.Type) {
			skip = "result of a named bool type"
		}
		s.edits = []edit{
			{off(e.X.Pos()), off(e.X.Pos()), "mutschemaNOT(@0, ", orderOpen + depth},
			{off(e.Y.End()), off(e.Y.End()), ")", orderClose - depth},
		}
	case ordered[e.Op]:
		s.mutants = []*Mutant{
			add(e.OpPos, kindBoundary, e.Op, boundary[e.Op]),
			add(e.OpPos, kindNegation, e.Op, negation[e.Op]),
		}
		if skip == "" && !plainBool(tv.Type) {
			skip = "result of a named bool type"
		}
		s.edits = []edit{
			{off(e.X.Pos()), off(e.X.Pos()), helperName[e.Op] + "(@0, @1, ", orderOpen + depth},
			{off(e.OpPos), off(e.OpPos) + len(e.Op.String()), ",", orderReplace},
			{off(e.Y.End()), off(e.Y.End()), ")", orderClose - depth},
		}
	case arith[e.Op] != token.ILLEGAL:
		s.mutants = []*Mutant{add(e.OpPos, kindArith, e.Op, arith[e.Op])}
		if b, ok := tv.Type.Underlying().(*types.Basic); skip == "" && ok && b.Info()&types.IsString != 0 {
			skip = "string +"
		}
		s.edits = []edit{
			{off(e.X.Pos()), off(e.X.Pos()), helperName[e.Op] + "(@0, ", orderOpen + depth},
			{off(e.OpPos), off(e.OpPos) + 1, ",", orderReplace},
			{off(e.Y.End()), off(e.Y.End()), ")", orderClose - depth},
		}
	default:
		return nil
	}
	if skip != "" {
		for _, m := range s.mutants {
			m.Skip = skip
		}
		s.edits = nil
	}
	return s
}

// plainBool: the helpers return bool, which fits where the comparison's
// untyped result became bool, not a named bool type.
func plainBool(t types.Type) bool {
	b, ok := t.(*types.Basic)
	return ok && (b.Kind() == types.Bool || b.Kind() == types.UntypedBool)
}

// rewrite gives the file with every site whose mutants are built wrapped
// in its helper call. Only text is inserted or an operator replaced, never
// a newline, so the lines stay those of the original file.
func rewrite(src []byte, sites []*site) []byte {
	var edits []edit
	for _, s := range sites {
		if len(s.edits) == 0 || s.mutants[0].Skip != "" {
			continue
		}
		for _, e := range s.edits {
			text := e.text
			for i, m := range s.mutants {
				text = strings.ReplaceAll(text, "@"+strconv.Itoa(i), strconv.Itoa(m.ID))
			}
			e.text = text
			edits = append(edits, e)
		}
	}
	sort.SliceStable(edits, func(i, j int) bool {
		if edits[i].start != edits[j].start {
			return edits[i].start < edits[j].start
		}
		return edits[i].order < edits[j].order
	})
	var out bytes.Buffer
	at := 0
	for _, e := range edits {
		out.Write(src[at:e.start])
		out.WriteString(e.text)
		at = e.end
	}
	out.Write(src[at:])
	return out.Bytes()
}
