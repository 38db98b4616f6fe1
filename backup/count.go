package backup

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// countWalk is Count (tests make it slower than a pass).
var countWalk = Count

// Count walks paths as a pass of opt would (the same excludes,
// .fincryptignore files and caches skipped) with lstat alone, reading no
// file, and returns how many regular files it would back up and their
// bytes: the totals behind a first pass's ETA. Entries a pass would skip
// as unreadable are counted if lstat sees them; what changes meanwhile is
// counted as the walk saw it. Run starts it alongside a full pass that
// reports Progress, so the pass never waits for it: measured on a loaded
// 2-core machine, 1 s for 20,000 files, against 4 s for an unchanged pass of
// them and minutes for a first one.
func Count(ctx context.Context, paths []string, opt Options) (files, bytes uint64, err error) {
	p := &pass{opt: opt}
	var walk func(dir string, rules []ignoreRule) error
	walk = func(dir string, rules []ignoreRule) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !opt.KeepCaches && isCacheDir(dir) {
			return nil
		}
		rules = append(slices.Clip(rules), readIgnore(dir)...)
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil // the pass names it
		}
		for _, e := range ents {
			full := filepath.Join(dir, e.Name())
			if p.excluded(full, rules) {
				continue
			}
			switch e.Type() {
			case fs.ModeDir:
				if err := walk(full, rules); err != nil {
					return err
				}
			case 0:
				if fi, err := e.Info(); err == nil {
					files++
					bytes += uint64(fi.Size())
				}
			}
		}
		return nil
	}
	for _, root := range paths {
		fi, err := os.Lstat(root)
		if err != nil {
			continue
		}
		switch {
		case fi.IsDir():
			if err := walk(root, nil); err != nil {
				return files, bytes, err
			}
		case fi.Mode().IsRegular():
			files++
			bytes += uint64(fi.Size())
		}
	}
	return files, bytes, nil
}
