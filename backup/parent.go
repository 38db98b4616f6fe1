package backup

import (
	"encoding/hex"
	"errors"
	"slices"
	"strings"

	"github.com/fincrypt/fincrypt/meta"
)

// A pass's parent is the newest snapshot of the same source and set of
// folders. Reading every snapshot record to find it costs a pass more as
// history grows (until forget thins it), so the index keeps a head record
// per source and set of folders naming its newest snapshot, written in the
// batch that records the snapshot. It is derived state, kept with the
// engine's (an R record, docs/FORMAT.md §6: not in index snapshots), and
// checked when read: a head that names a snapshot forget deleted, or one of
// another source or set of folders, is not trusted, and then, as after a
// restore, every record is read once and the head written again.

// headName names the head record of a source and set of folders (sorted):
// a MAC, so that the record's key says nothing of the paths.
func headName(repo Repo, src Source, paths []string) string {
	mac := repo.Keys.NameMAC(0, "backup head\x00"+src.String()+"\x00"+strings.Join(paths, "\x00"))
	return "backup-head/" + hex.EncodeToString(mac[:])
}

// newestOf returns the newest snapshot of src with exactly these folders
// (sorted; none for versions of the mount), or nil.
func newestOf(repo Repo, src Source, paths []string) (*Snapshot, error) {
	name := headName(repo, src, paths)
	v, err := repo.Index.GetRepl(name)
	hadHead := err == nil
	if err == nil && len(v) == len(meta.BackupSnapID{}) {
		id := meta.BackupSnapID(v)
		enc, err := repo.Index.GetBackupSnapshot(id)
		if err != nil && !errors.Is(err, meta.ErrNotFound) {
			return nil, err
		}
		if err == nil {
			s, err := decodeSnapshot(id, enc)
			if err != nil {
				return nil, err
			}
			if s.Source == src && slices.Equal(s.Paths, paths) {
				return &s, nil
			}
		}
	} else if err != nil && !errors.Is(err, meta.ErrNotFound) {
		return nil, err
	}
	all, err := Snapshots(repo.Index)
	if err != nil {
		return nil, err
	}
	var newest *Snapshot
	for i := len(all) - 1; i >= 0 && newest == nil; i-- {
		if all[i].Source == src && slices.Equal(all[i].Paths, paths) {
			newest = &all[i]
		}
	}
	if newest == nil && !hadHead {
		return nil, nil
	}
	b := repo.Index.NewBatch()
	if newest != nil {
		b.PutRepl(name, newest.ID[:])
	} else {
		b.DeleteRepl(name)
	}
	if err := b.Commit(false); err != nil { // derived: lost, it is rebuilt
		return nil, err
	}
	return newest, nil
}

// putHead makes snap the head of its source and folders in b, unless the
// parent it follows is newer (a clock set back): the head stays the
// newest, as a scan would find it.
func putHead(repo Repo, b *meta.Batch, snap *Snapshot, parent *Snapshot) {
	if parent == nil || !snap.Time.Before(parent.Time) {
		b.PutRepl(headName(repo, snap.Source, snap.Paths), snap.ID[:])
	}
}
