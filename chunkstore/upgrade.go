package chunkstore

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/fincrypt/fincrypt/meta"
)

// upgradeBatch is how many bytes of chunk files Upgrade moves into packs
// between two syncs (after each sync it removes the files moved).
var upgradeBatch = 64 << 20

// upgradeHook, if set (tests), runs after each chunk is moved.
var upgradeHook func(moved int)

// Upgrade converts a format 1 store (a file per chunk) to format 2 (packs),
// and finishes an upgrade that was interrupted. It first records format 2
// (from then on the store reads packs first, then the chunk files left),
// then appends each chunk file to a pack, and removes chunk files only once
// the packs holding them are synced: a crash at any point loses nothing and
// a rerun continues. progress, if not nil, is called with the chunks moved
// so far and the total.
func (s *Store) Upgrade(progress func(done, total int)) error {
	if s.readOnly {
		return errors.New("chunk store opened read-only")
	}
	if s.format == FormatFiles {
		// The packs directory first: recording the format syncs the
		// store's directory, and so its entry.
		if err := s.sys.mkdir(filepath.Join(s.dir, packsDir)); err != nil {
			return fmt.Errorf("chunk store upgrade: %w", err)
		}
		if err := writeFormat(s.dir, s.sys, FormatPacks); err != nil {
			return fmt.Errorf("chunk store upgrade: %w", err)
		}
		s.format = FormatPacks
		if err := s.openPacks(false); err != nil {
			return err
		}
	}
	if !s.loose {
		return nil
	}
	var ids []meta.ChunkID
	err := s.listFiles(func(id meta.ChunkID) error { ids = append(ids, id); return nil }, nil)
	if err != nil {
		return fmt.Errorf("chunk store upgrade: %w", err)
	}
	var (
		moved   []meta.ChunkID
		pending int
		buf     []byte
	)
	flush := func() error {
		if err := s.packs.sync(); err != nil {
			return err
		}
		// The removals need no sync of their own: a chunk file that comes
		// back after a crash is a copy of a packed chunk, removed by the
		// rerun; the final sync of the store's directory, after its
		// emptied subdirectories are removed, makes the upgrade durable.
		for _, id := range moved {
			if err := s.sys.remove(s.Path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		moved, pending = moved[:0], 0
		return nil
	}
	for i, id := range ids {
		if s.packs.lookup(id) == nil {
			var err error
			buf, _, err = s.sys.read(s.Path(id), buf[:0])
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("chunk store upgrade: chunk %s: %w", id, err)
			}
			if err := s.packs.put(id, buf, false); err != nil {
				return fmt.Errorf("chunk store upgrade: %w", err)
			}
			pending += len(buf)
		}
		// Already in a pack (an earlier run stopped before removing the
		// file): the file goes with this batch.
		moved = append(moved, id)
		if upgradeHook != nil {
			upgradeHook(i + 1)
		}
		if progress != nil {
			progress(i+1, len(ids))
		}
		if pending >= upgradeBatch {
			if err := flush(); err != nil {
				return fmt.Errorf("chunk store upgrade: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("chunk store upgrade: %w", err)
	}
	// The empty format 1 directories, last.
	top, err := s.sys.readDir(s.dir)
	if err != nil {
		return fmt.Errorf("chunk store upgrade: %w", err)
	}
	for _, t := range top {
		if t.dir && len(t.name) == 2 {
			if err := s.sys.remove(filepath.Join(s.dir, t.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("chunk store upgrade: %s is not empty: %w", t.name, err)
			}
		}
	}
	if err := s.sys.sync(s.dir); err != nil {
		return fmt.Errorf("chunk store upgrade: %w", err)
	}
	s.loose = false
	return nil
}

// SetAside moves chunk id out of the store to <dst>/<two hex digits>/<id>
// (the format 1 layout) and returns that path. The new file is synced; the
// caller syncs the directories it made, then the store (Sync), which makes
// the removal from the store durable.
func (s *Store) SetAside(id meta.ChunkID, dst string) (string, error) {
	h := id.String()
	out := filepath.Join(dst, h[:2], h)
	if err := s.sys.mkdirAll(filepath.Dir(out)); err != nil {
		return "", err
	}
	if s.packs != nil && s.packs.lookup(id) != nil {
		b, err := s.Get(id, nil)
		if err != nil {
			return "", err
		}
		if err := s.sys.create(out, b); err != nil {
			return "", err
		}
		if err := s.sys.sync(out); err != nil {
			return "", err
		}
		return out, s.Delete(id)
	}
	if err := s.sys.rename(s.Path(id), out); err != nil {
		return "", err
	}
	return out, nil
}
