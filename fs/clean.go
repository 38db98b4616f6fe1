package fs

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/internal/fsutil"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// The clean-close record tells a mount that the index it opens is whole, so
// that chunks no index entry references may be deleted. A mount that ends
// cleanly writes, as its last change to the index, a random mark (a
// replication-state record, never exported in snapshots), syncs it, and then
// writes HOME/index.clean: the mark, the number of chunk references and a
// digest over them, sealed with the vault's index key. The next mount
// compares the file with the index before it changes anything, deletes the
// file, and collects unreferenced chunks only if both agree. A torn log
// loses the mark (it is the last record written); a lost table file, an
// emptied or replaced index changes the references. Without the file (the
// last mount crashed) nothing is collected; the next clean unmount and mount
// collect what a crash left.
const (
	// CleanFileName is the clean-close record, in the vault's home.
	CleanFileName = "index.clean"
	cleanMark     = "clean_close" // the index's replication-state record
	cleanAD       = "fincrypt clean close v1"
	cleanLenV1    = 16 + 8 + sha256.Size
	// cleanLen adds a flags byte: cleanOwed says chunks no file references
	// may be in the store (the mount began after a crash, or a chunk could
	// not be deleted), so the next mount walks the index to collect them.
	// A record without it (written before the flag) counts as owed.
	cleanLen  = cleanLenV1 + 1
	cleanOwed = 1
	// cleanSum says the count and digest are the index's meta.RefSum (else
	// they are an indexSummary).
	cleanSum = 2
)

// ErrIndexDamaged means the index does not match the record its last clean
// unmount left: records were lost or changed since. A mount refuses it, and
// nothing is deleted.
var ErrIndexDamaged = errors.New("the index does not match the state it was closed in")

// RecoverHint says how to get a damaged index back.
const RecoverHint = "nothing was deleted; `fincrypt check` lists what is lost, `fincrypt recover` rebuilds the index " +
	"from the newest network snapshot and the local store, and `fincrypt recover --local` keeps this index " +
	"and moves the chunks it does not reference aside"

// indexSummary is what a clean-close record of the first kind (without
// cleanSum) pins of an index: its chunk references, in key order. Records
// written now hold the index's meta.RefSum, which the mount tracks as it
// changes the index, so an unmount reads nothing of it.
type indexSummary struct {
	chunks uint64
	digest [sha256.Size]byte
}

func summarize(idx *meta.Index) (indexSummary, error) {
	h := sha256.New()
	var s indexSummary
	var b []byte
	err := idx.Walk(meta.Visitor{
		Chunk: func(ino, i uint64, ref meta.ChunkRef) {
			b = binary.BigEndian.AppendUint64(b[:0], ino)
			b = binary.BigEndian.AppendUint64(b, i)
			b = append(b, ref.ID[:]...)
			b = binary.BigEndian.AppendUint64(b, ref.Version)
			h.Write(b)
			s.chunks++
		},
		// Backup blobs count as references: a lost blob record would
		// otherwise let the next mount collect a kept blob.
		Blob: func(id meta.ChunkID, n uint32) {
			b = append(append(b[:0], "blob"...), id[:]...)
			h.Write(binary.BigEndian.AppendUint32(b, n))
			s.chunks++
		},
		// So do chunks versions pin.
		Pin: func(id meta.ChunkID, p meta.Pin) {
			b = append(append(b[:0], "pin"...), id[:]...)
			b = binary.BigEndian.AppendUint64(b, p.Ino)
			h.Write(binary.BigEndian.AppendUint64(b, p.Index))
			s.chunks++
		},
		Bad: func(key []byte, _ error) { h.Write([]byte("bad")); h.Write(key) },
	})
	h.Sum(s.digest[:0])
	return s, err
}

func cleanPath(v *vault.Vault) string { return filepath.Join(v.Home, CleanFileName) }

func cleanAssociated(v *vault.Vault) []byte { return []byte(cleanAD + v.KeyFile.VaultID) }

// writeClean marks the index as closed cleanly: the mark in the index
// (synced), then the record in the home.
func writeClean(r *fsys) error {
	var mark [16]byte
	if _, err := rand.Read(mark[:]); err != nil {
		return err
	}
	b := r.idx.NewBatch()
	b.PutRepl(cleanMark, mark[:])
	if err := b.Commit(true); err != nil {
		return fmt.Errorf("clean-close mark: %w", err)
	}
	// The RefSum the index tracked since the mount began; a walk only when
	// it began without one (after a crash, or from a record of the first
	// kind).
	s, ok := r.idx.TrackedRefs()
	if !ok {
		var err error
		if s, err = r.idx.WalkRefSum(); err != nil {
			return fmt.Errorf("clean-close record: %w", err)
		}
	}
	pt := append(mark[:], binary.BigEndian.AppendUint64(nil, s.N)...)
	pt = append(pt, s.Sum[:]...)
	flags := byte(cleanSum)
	if r.owe.Load() {
		flags |= cleanOwed
	}
	pt = append(pt, flags)
	sealed := r.v.Keys.Meta.Seal(nil, pt, cleanAssociated(r.v))
	if err := fsutil.WriteFileAtomic(cleanPath(r.v), sealed, 0o600); err != nil {
		return fmt.Errorf("clean-close record: %w", err)
	}
	return nil
}

// OpenOffline opens the index and the store of the unmounted vault v (v
// holds the vault's lock) as a mount would, for work that changes them
// without a mount (backups). Change the index only inside ChangeOffline.
func OpenOffline(v *vault.Vault, log *slog.Logger) (*meta.Index, *chunkstore.Store, error) {
	opt := Options{Logger: log}
	opt.setDefaults()
	r, err := newFsys(v, opt, false)
	if err != nil {
		return nil, nil, err
	}
	// A vault never mounted gets its root directory, as a mount gives it.
	if err := r.ensureRoot(); err != nil {
		r.idx.Close()
		return nil, nil, err
	}
	return r.idx, r.store, nil
}

// ChangeOffline runs fn, which changes the index of the unmounted vault v
// (v holds the vault's lock; idx is its open index), and keeps the
// clean-close record true: a record that matched the index before is
// written again for the index fn left, so the next mount still collects
// unreferenced chunks. A record that does not match refuses the change
// (ErrIndexDamaged), deleting nothing. If fn is interrupted the record is
// gone, as after a crashed mount (the next mount collects nothing).
func ChangeOffline(v *vault.Vault, idx *meta.Index, fn func() error) error {
	r := &fsys{v: v, idx: idx}
	st, err := verifyClean(r, false)
	if err != nil {
		return fmt.Errorf("%s: %w; %s", v.IndexDir(), err, RecoverHint)
	}
	if st.recorded && !st.whole {
		return fmt.Errorf("%s: %w: %s; %s", v.IndexDir(), ErrIndexDamaged, st.problem, RecoverHint)
	}
	if st.recorded {
		if err := consumeClean(v); err != nil {
			return err
		}
	}
	r.owe.Store(st.owed) // a collection still owed stays owed
	st.track(idx)
	ferr := fn()
	if st.recorded {
		if err := writeClean(r); err != nil && ferr == nil {
			ferr = err
		}
	}
	return ferr
}

// cleanState is what a mount or check learns from the clean-close record.
type cleanState struct {
	recorded bool         // the last mount ended cleanly (a record exists)
	whole    bool         // recorded, and the index matches it
	owed     bool         // unreferenced chunks may be in the store: collect
	walked   bool         // whole was decided by a walk of every chunk reference
	problem  string       // why it does not match, when recorded && !whole
	then     uint64       // chunk references at the clean unmount
	now      uint64       // chunk references now
	sum      *meta.RefSum // the index's RefSum, when whole and known
}

// track makes idx keep its RefSum from the one the record gave, if the
// index is whole and the record had one: then the next clean-close record
// needs no walk.
func (st cleanState) track(idx *meta.Index) {
	if st.whole && st.sum != nil {
		idx.TrackRefs(*st.sum)
	}
}

// verifyClean compares the index with the clean-close record, if any. With
// full, or when the record says a collection is owed, it walks every chunk
// reference and compares their digest; otherwise it checks the mark and
// that the index's table files are all there, and reads nothing else.
func verifyClean(r *fsys, full bool) (cleanState, error) { return verifyCleanWalked(r, full, nil) }

// verifyCleanWalked is verifyClean given, in walked (if not nil), the
// index's RefSum from a walk the caller made anyway (check): a full
// comparison then reads no record again.
func verifyCleanWalked(r *fsys, full bool, walked *meta.RefSum) (cleanState, error) {
	sealed, err := os.ReadFile(cleanPath(r.v))
	if errors.Is(err, os.ErrNotExist) {
		return cleanState{}, nil
	}
	if err != nil {
		return cleanState{}, fmt.Errorf("clean-close record: %w", err)
	}
	st := cleanState{recorded: true}
	pt, err := r.v.Keys.Meta.Open(nil, sealed, cleanAssociated(r.v))
	if err != nil || (len(pt) != cleanLen && len(pt) != cleanLenV1) {
		st.problem = fmt.Sprintf("the clean-unmount record %s does not open with this vault's key", cleanPath(r.v))
		return st, nil
	}
	st.then = binary.BigEndian.Uint64(pt[16:])
	st.owed = len(pt) == cleanLenV1 || pt[cleanLenV1]&cleanOwed != 0
	var recSum *meta.RefSum
	if len(pt) == cleanLen && pt[cleanLenV1]&cleanSum != 0 {
		recSum = &meta.RefSum{N: st.then, Sum: [sha256.Size]byte(pt[24:])}
	}
	mark, err := r.idx.GetRepl(cleanMark)
	if !full && !st.owed {
		switch terr := r.idx.CheckTables(); {
		case errors.Is(err, meta.ErrNotFound) || (err == nil && !bytes.Equal(mark, pt[:16])):
			st.problem = "the mark written last at the clean unmount is missing: the index lost its last changes (a torn or truncated log), or it is another copy of the index"
		case err != nil:
			st.problem = fmt.Sprintf("the clean-unmount mark does not read: %v", err)
		case terr != nil:
			st.problem = fmt.Sprintf("index records were lost since the clean unmount: %v", terr)
		default:
			st.whole, st.sum = true, recSum
		}
		return st, nil
	}
	st.walked = true
	var matches bool
	if recSum != nil {
		var s meta.RefSum
		if walked != nil {
			s = *walked
		} else {
			var werr error
			if s, werr = r.idx.WalkRefSum(); werr != nil {
				return st, fmt.Errorf("reading the index: %w", werr)
			}
		}
		st.now, matches = s.N, s == *recSum
	} else {
		s, werr := summarize(r.idx)
		if werr != nil {
			return st, fmt.Errorf("reading the index: %w", werr)
		}
		st.now, matches = s.chunks, s.digest == [sha256.Size]byte(pt[24:])
	}
	switch {
	case errors.Is(err, meta.ErrNotFound) || (err == nil && !bytes.Equal(mark, pt[:16])):
		st.problem = "the mark written last at the clean unmount is missing: the index lost its last changes (a torn or truncated log), or it is another copy of the index"
	case err != nil:
		st.problem = fmt.Sprintf("the clean-unmount mark does not read: %v", err)
	case !matches:
		st.problem = fmt.Sprintf("its chunk references changed since the clean unmount (%d then, %d now): index records were lost or changed (a missing table file?)", st.then, st.now)
	default:
		st.whole, st.sum = true, recSum
	}
	return st, nil
}

// consumeClean removes the clean-close record before a mount changes the
// index, so that a crash from now on leaves none.
func consumeClean(v *vault.Vault) error {
	if err := os.Remove(cleanPath(v)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("clean-close record: %w", err)
	}
	if err := fsutil.SyncDir(v.Home); err != nil {
		return fmt.Errorf("clean-close record: %w", err)
	}
	return nil
}

// SetAsideUnreferenced moves every chunk that the vault's index does not
// reference (all of them, if there is no index) out of the store into a new
// directory beside it, dir, and removes the clean-close record, so that the
// next mount accepts the index as it is and nothing the index lost is ever
// deleted (`fincrypt recover`). The vault must not be mounted.
func SetAsideUnreferenced(v *vault.Vault) (n int, dir string, err error) {
	refs := map[meta.ChunkID]bool{}
	exists, err := meta.Exists(v.IndexDir(), nil)
	if err != nil {
		return 0, "", err
	}
	if exists {
		idx, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{ReadOnly: true})
		if err != nil {
			return 0, "", err
		}
		var bad error
		err = idx.Walk(meta.Visitor{
			Chunk: func(_, _ uint64, ref meta.ChunkRef) { refs[ref.ID] = true },
			Blob:  func(id meta.ChunkID, _ uint32) { refs[id] = true },
			Pin:   func(id meta.ChunkID, _ meta.Pin) { refs[id] = true },
			Bad: func(key []byte, err error) {
				if bad == nil {
					bad = fmt.Errorf("index record %x: %w", key, err)
				}
			},
		})
		idx.Close()
		if err == nil {
			err = bad // an unreadable record could reference any chunk
		}
		if err != nil {
			return 0, "", fmt.Errorf("reading the index: %w", err)
		}
	}
	if _, err := os.Stat(v.StoreDir()); errors.Is(err, os.ErrNotExist) {
		return 0, "", consumeClean(v)
	}
	store, err := chunkstore.Open(v.StoreDir())
	if err != nil {
		return 0, "", err
	}
	defer store.Close()
	dir = fmt.Sprintf("%s.lost-%s", filepath.Clean(v.StoreDir()), time.Now().UTC().Format("20060102T150405Z"))
	changed := map[string]bool{}
	err = store.List(func(id meta.ChunkID) error {
		if refs[id] {
			return nil
		}
		dst, err := store.SetAside(id, dir)
		if err != nil {
			return err
		}
		if store.Format() == chunkstore.FormatFiles {
			changed[filepath.Dir(store.Path(id))] = true
		}
		changed[filepath.Dir(dst)] = true
		n++
		return nil
	}, nil)
	if n > 0 {
		changed[dir], changed[filepath.Dir(dir)] = true, true
	}
	for d := range changed {
		if serr := fsutil.SyncDir(d); err == nil {
			err = serr
		}
	}
	if serr := store.Sync(); err == nil {
		err = serr // the chunks set aside from packs leave them durably
	}
	if err != nil {
		return n, dir, fmt.Errorf("setting unreferenced chunks aside: %w", err)
	}
	if n == 0 {
		dir = ""
	}
	return n, dir, consumeClean(v)
}
