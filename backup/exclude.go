package backup

import (
	"path/filepath"
	"strings"
	"sync"
)

// Excluder answers, as a pass does, whether a path under the backed-up
// folders is left out: by Options.Excludes (matched against the name or the
// full path), by a line of a .fincryptignore file in a folder from the
// backed-up folder down to the path's own, or, unless Options.KeepCaches, by
// being or being under a folder that holds a CACHEDIR.TAG. A watcher asks it
// before it watches a folder or passes an event on, so that changes in
// excluded folders start no pass. It keeps what it read of each folder until
// Forget; it is safe for concurrent use.
type Excluder struct {
	roots      []string
	excludes   []string
	keepCaches bool

	mu   sync.Mutex
	dirs map[string]*dirRules // folders read; a folder's parent is read first
}

type dirRules struct {
	rules []ignoreRule // its own and its parents', from the backed-up folder down
	cache bool         // holds a valid CACHEDIR.TAG
}

// NewExcluder is an Excluder for the backed-up folders roots (absolute,
// clean) with a pass's Excludes and KeepCaches.
func NewExcluder(roots []string, opt Options) *Excluder {
	return &Excluder{roots: roots, excludes: opt.Excludes, keepCaches: opt.KeepCaches, dirs: map[string]*dirRules{}}
}

// Excluded reports whether a pass leaves path out. A backed-up folder
// itself, and what is not under one, is not excluded (what is under a
// backed-up folder that holds a CACHEDIR.TAG is).
func (e *Excluder) Excluded(path string) bool {
	root := e.rootOf(path)
	if root == "" || path == root {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	parent := filepath.Dir(path)
	pr, excluded := e.folder(root, parent)
	if excluded || excludedBy(e.excludes, path, pr.rules) {
		return true
	}
	if e.keepCaches {
		return false
	}
	if d := e.dirs[path]; d != nil {
		return d.cache
	}
	return isCacheDir(path) // a file: one failed open (ENOTDIR)
}

// folder returns what dir (root or under it) holds, reading it and the
// folders above it first when they were not read yet, and whether dir is
// excluded itself.
func (e *Excluder) folder(root, dir string) (*dirRules, bool) {
	if d := e.dirs[dir]; d != nil {
		if dir == root {
			return d, d.cache
		}
		pr, excluded := e.folder(root, filepath.Dir(dir))
		return d, excluded || d.cache || excludedBy(e.excludes, dir, pr.rules)
	}
	var inherited []ignoreRule
	excluded := false
	if dir != root {
		pr, ex := e.folder(root, filepath.Dir(dir))
		inherited = pr.rules
		excluded = ex || excludedBy(e.excludes, dir, pr.rules)
	}
	d := &dirRules{rules: append(inherited[:len(inherited):len(inherited)], readIgnore(dir)...)}
	// A pass leaves out a backed-up folder that holds a tag, and so
	// everything under it.
	d.cache = !e.keepCaches && isCacheDir(dir)
	e.dirs[dir] = d
	return d, excluded || d.cache
}

// Forget drops what was read of path and of every folder under it (a
// folder created, removed or renamed there, or a rescan of it). It
// returns the folder whose entries it now answers for differently when path
// is a .fincryptignore file (its folder) or a CACHEDIR.TAG (the folder
// above its own, which may now be excluded or no longer be), "" otherwise.
func (e *Excluder) Forget(path string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.forget(path)
	dir := filepath.Dir(path)
	switch filepath.Base(path) {
	case ignoreFile:
		e.forget(dir)
		return dir
	case "CACHEDIR.TAG":
		e.forget(dir)
		if root := e.rootOf(dir); root != "" && root != dir {
			return filepath.Dir(dir)
		}
		return dir
	}
	return ""
}

func (e *Excluder) forget(path string) {
	if e.dirs[path] == nil {
		return // nothing under it was read either
	}
	for d := range e.dirs {
		if d == path || strings.HasPrefix(d, path+"/") {
			delete(e.dirs, d)
		}
	}
}

func (e *Excluder) rootOf(path string) string {
	for _, r := range e.roots {
		if path == r || strings.HasPrefix(path, r+"/") || r == "/" {
			return r
		}
	}
	return ""
}
