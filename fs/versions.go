package fs

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/fincrypt/fincrypt/backup"
)

// Versions of the mount (backup.TakeVersion, docs/FORMAT.md §6): every
// Options.VersionInterval the mount records an immutable version of its
// whole tree if anything changed since the last one, and Mounted.TakeVersion
// records one on demand. A version copies no data: it pins the chunks it
// names, so that overwriting or deleting a file does not free what a kept
// version needs, until `fincrypt forget` drops the version.

// DefaultVersionInterval is how often a mount records a version of its
// tree (when something changed) unless told otherwise.
const DefaultVersionInterval = time.Hour

type versioner struct {
	mu      sync.Mutex // one version at a time
	lastGen uint64     // the index's state generation after the last version (0: none yet)
	// b builds the versions from what changed since its last one (made
	// by the first version: that one reads the whole tree).
	b *backup.Versioner
}

// TakeVersion records a version of the mount's tree now: what every open
// file has written so far is committed first. Unless force, nothing is
// recorded when the tree is the newest version's.
func (m *Mounted) TakeVersion(force bool) (*backup.VersionReport, error) {
	return m.r.takeVersion(force)
}

func (r *fsys) takeVersion(force bool) (*backup.VersionReport, error) {
	r.vers.mu.Lock()
	defer r.vers.mu.Unlock()
	if err := r.flushOpenFiles(); err != nil {
		return nil, fmt.Errorf("version: committing the open files: %w", err)
	}
	host, _ := os.Hostname()
	if r.vers.b == nil {
		r.vers.b = backup.NewVersioner(backup.Repo{Keys: r.v.Keys, Index: r.idx, Store: r.store})
	}
	rep, err := r.vers.b.Take(backup.VersionOptions{ChunkSize: r.cs, Host: host, Force: force})
	if err != nil {
		return nil, err
	}
	r.vers.lastGen = r.idx.StateGeneration()
	if rep.Snapshot != "" {
		r.log.Info("version of the mount recorded", "snapshot", rep.Snapshot, "files", rep.Files,
			"new_chunks", rep.NewChunks, "new_trees", rep.NewTrees, "index_bytes", rep.IndexBytes, "incremental", rep.Incremental)
	}
	return rep, nil
}

// versions records a version every interval while the index changed.
func (m *Mounted) versions(every time.Duration) {
	defer m.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			r := m.r
			r.vers.mu.Lock()
			idle := r.vers.lastGen != 0 && r.vers.lastGen == r.idx.StateGeneration()
			r.vers.mu.Unlock()
			if idle {
				continue
			}
			err := r.opt.Faults.Run("version", func() error {
				_, err := r.takeVersion(false)
				return err
			})
			if err != nil {
				r.log.Error("version of the mount", "err", err)
			}
		}
	}
}
