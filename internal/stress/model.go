package stress

import (
	"path"
	"sort"
	"strings"
)

// The model is one worker's view of its own subtree, as the oracle has it
// after every operation: which names exist, of which kind, and which names
// are links to the same file. The generator draws operands from it, so
// most operations hit existing entries, and it remembers what the final
// comparison and the crash check need (explicit mtimes, durable files).
type model struct {
	entries map[string]*inode // path relative to the worker's root ("" is the root)
	nextIno int
}

type kind byte

const (
	kFile kind = 'f'
	kDir  kind = 'd'
	kLink kind = 'l' // symlink
)

type inode struct {
	id   int
	kind kind
	// explicitMtime: the last change of the mtime was a utimes; the final
	// comparison checks the mtime of such entries.
	explicitMtime bool
	// open handles on it (so that an unlinked file's handles still count).
	handles int
}

func newModel() *model {
	m := &model{entries: map[string]*inode{}}
	m.entries[""] = m.newInode(kDir)
	return m
}

func (m *model) newInode(k kind) *inode {
	m.nextIno++
	return &inode{id: m.nextIno, kind: k}
}

// sorted returns the paths of entries of the given kinds, sorted, so that
// the choice among them is deterministic.
func (m *model) sorted(kinds ...kind) []string {
	var out []string
	for p, n := range m.entries {
		for _, k := range kinds {
			if n.kind == k {
				out = append(out, p)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool {
	return dir == "" || p == dir || strings.HasPrefix(p, dir+"/")
}

// children lists the direct entries of dir.
func (m *model) children(dir string) []string {
	var out []string
	for p := range m.entries {
		if p != "" && path.Dir(p) == dirOrDot(dir) && p != dir {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func dirOrDot(d string) string {
	if d == "" {
		return "."
	}
	return d
}

func parent(p string) string {
	d := path.Dir(p)
	if d == "." {
		return ""
	}
	return d
}

// paths lists every path naming n.
func (m *model) paths(n *inode) []string {
	var out []string
	for p, x := range m.entries {
		if x == n {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func (m *model) nlink(n *inode) int { return len(m.paths(n)) }

// touchDir notes that dir's entries changed (its mtime moved).
func (m *model) touchDir(dir string) {
	if n := m.entries[dir]; n != nil {
		n.explicitMtime = false
	}
}

// remove drops p and, for a directory, everything under it.
func (m *model) remove(p string) {
	for q := range m.entries {
		if under(q, p) && q != "" {
			delete(m.entries, q)
		}
	}
	m.touchDir(parent(p))
}

// rename moves from to to (replacing to, as rename(2) does).
func (m *model) rename(from, to string) {
	if from == to {
		return
	}
	moved := map[string]*inode{}
	for q, n := range m.entries {
		if under(q, from) && q != "" {
			moved[to+strings.TrimPrefix(q, from)] = n
			delete(m.entries, q)
		}
	}
	for q := range m.entries {
		if under(q, to) && q != "" {
			delete(m.entries, q)
		}
	}
	for q, n := range moved {
		m.entries[q] = n
	}
	m.touchDir(parent(from))
	m.touchDir(parent(to))
}

func (m *model) depth(p string) int {
	if p == "" {
		return 0
	}
	return strings.Count(p, "/") + 1
}
