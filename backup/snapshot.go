package backup

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/fincrypt/fincrypt/meta"
)

// Snapshot is one backup pass: what the backed-up folders held at Time.
type Snapshot struct {
	ID    meta.BackupSnapID
	Time  time.Time
	Host  string
	Paths []string // the backed-up folders, absolute, sorted
	Tree  meta.TreeID
	// Files is the number of files, NewBytes the plaintext bytes of the
	// blobs this pass stored first, TotalBytes the size of every file.
	Files      uint64
	Dirs       uint64
	NewBytes   uint64
	TotalBytes uint64
	// Source is what the snapshot is of: backed-up folders, or a version
	// of the mount itself (version.go).
	Source Source
}

// Source is what a snapshot records.
type Source uint8

// Sources of snapshots.
const (
	// SourceBackup is a backup pass of folders outside the mount.
	SourceBackup Source = 0
	// SourceMount is a version of the mount's own tree.
	SourceMount Source = 1
)

func (s Source) String() string {
	switch s {
	case SourceBackup:
		return "backup"
	case SourceMount:
		return "mount"
	}
	return fmt.Sprintf("source %d", uint8(s))
}

// snapRecV1 is a backup's record; snapRecV2 adds the source byte (written
// for versions of the mount only, so backups stay readable by older
// versions of fincrypt).
const (
	snapRecV1 = 1
	snapRecV2 = 2
)

func (s *Snapshot) encode() []byte {
	v := byte(snapRecV1)
	if s.Source != SourceBackup {
		v = snapRecV2
	}
	b := []byte{v}
	b = binary.BigEndian.AppendUint64(b, uint64(s.Time.UnixNano()))
	b = appendStr(b, s.Host)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.Paths)))
	for _, p := range s.Paths {
		b = appendStr(b, p)
	}
	b = append(b, s.Tree[:]...)
	for _, v := range []uint64{s.Files, s.Dirs, s.NewBytes, s.TotalBytes} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	if v == snapRecV2 {
		b = append(b, byte(s.Source))
	}
	return b
}

func decodeSnapshot(id meta.BackupSnapID, b []byte) (Snapshot, error) {
	r := &reader{b: b}
	s := Snapshot{ID: id}
	v := r.u8()
	if r.err == nil && v != snapRecV1 && v != snapRecV2 {
		return s, fmt.Errorf("snapshot %s: record version %d, this fincrypt reads %d and %d: %w", id, v, snapRecV1, snapRecV2, ErrCorrupt)
	}
	s.Time = time.Unix(0, int64(r.u64()))
	s.Host = r.str()
	for n := r.u16(); n > 0 && r.err == nil; n-- {
		s.Paths = append(s.Paths, r.str())
	}
	copy(s.Tree[:], r.take(meta.TreeIDSize))
	s.Files, s.Dirs, s.NewBytes, s.TotalBytes = r.u64(), r.u64(), r.u64(), r.u64()
	if v == snapRecV2 {
		s.Source = Source(r.u8())
		if r.err == nil && s.Source != SourceBackup && s.Source != SourceMount {
			r.err = fmt.Errorf("unknown source %d: %w", s.Source, ErrCorrupt)
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d bytes after the record: %w", len(r.b), ErrCorrupt)
	}
	if r.err != nil {
		return s, fmt.Errorf("snapshot %s: %w", id, r.err)
	}
	return s, nil
}

func newSnapID() meta.BackupSnapID {
	var id meta.BackupSnapID
	if _, err := rand.Read(id[:]); err != nil {
		panic(err)
	}
	return id
}

// Snapshots lists every backup snapshot, oldest first.
func Snapshots(idx *meta.Index) ([]Snapshot, error) {
	var out []Snapshot
	err := idx.BackupSnapshots(func(id meta.BackupSnapID, enc []byte) error {
		s, err := decodeSnapshot(id, enc)
		if err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, err
}

// ErrNoSnapshot means no snapshot matches an id.
var ErrNoSnapshot = errors.New("no such snapshot")

// FindSnapshot returns the snapshot whose id starts with prefix (hex), or
// the newest one for "latest".
func FindSnapshot(idx *meta.Index, prefix string) (Snapshot, error) {
	all, err := Snapshots(idx)
	if err != nil {
		return Snapshot{}, err
	}
	if prefix == "latest" {
		if len(all) == 0 {
			return Snapshot{}, fmt.Errorf("latest: %w (no backup ran yet)", ErrNoSnapshot)
		}
		return all[len(all)-1], nil
	}
	var found []Snapshot
	for _, s := range all {
		if prefix != "" && strings.HasPrefix(s.ID.String(), strings.ToLower(prefix)) {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return Snapshot{}, fmt.Errorf("%q: %w (see fincrypt snapshots)", prefix, ErrNoSnapshot)
	case 1:
		return found[0], nil
	}
	return Snapshot{}, fmt.Errorf("%q names %d snapshots: give more digits", prefix, len(found))
}
