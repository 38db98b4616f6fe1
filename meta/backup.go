package meta

import (
	"encoding/binary"
	"fmt"

	"github.com/fincrypt/fincrypt/vault"
)

// Records of backups (package backup). They share the index, its sealing and
// its snapshots with the file system's records, so an index snapshot on the
// network carries every backup snapshot; docs/FORMAT.md §6 describes them.
const (
	pBlob       = 'B' // B blobid(16)   -> blob record (a sealed blob in the chunk store)
	pTree       = 'T' // T treeid(16)   -> tree record (one directory of a backup)
	pBackupSnap = 'V' // V snapid(8)    -> backup snapshot record
	pBackupRoot = 'W' // W mac(16)      -> a backed-up folder (its absolute path)
)

const blobRecV1 = 1

func blobKey(id ChunkID) []byte { return append([]byte{pBlob}, id[:]...) }

func decodeBlob(b []byte) (uint32, error) {
	if len(b) != 5 || b[0] != blobRecV1 {
		return 0, fmt.Errorf("blob record of %d bytes, version %v: %w", len(b), firstByte(b), ErrCorrupt)
	}
	return binary.BigEndian.Uint32(b[1:]), nil
}

// GetBlob reports the plaintext length of blob id; ErrNotFound if the index
// holds no such blob.
func (x *Index) GetBlob(id ChunkID) (uint32, error) {
	b, err := x.get(blobKey(id))
	if err != nil {
		return 0, err
	}
	return decodeBlob(b)
}

// Blobs calls fn with every blob and its plaintext length.
func (x *Index) Blobs(fn func(id ChunkID, plainLen uint32) error) error {
	return x.scan([]byte{pBlob}, func(key, val []byte) error {
		if len(key) != 1+ChunkIDSize {
			return fmt.Errorf("blob key %x: %w", key, ErrCorrupt)
		}
		n, err := decodeBlob(val)
		if err != nil {
			return err
		}
		return fn(ChunkID(key[1:]), n)
	})
}

// PutBlob records that sealed blob id (plainLen bytes of plaintext) is in
// the chunk store: from now on it is kept, uploaded and never collected
// until DeleteBlob. A blob no segment holds yet joins the pending feed, as
// an owner-less mark.
func (b *Batch) PutBlob(id ChunkID, plainLen uint32) {
	if b.x.tracksLive() && b.isLocated(id) && b.pinOf(id) == nil {
		// A located blob put again is live already, unless its record was
		// dropped (in this batch or before): then it lives again.
		if _, dropped := b.dead[id]; dropped {
			b.revived(id)
		} else if ok, err := b.x.has(blobKey(id)); err != nil {
			b.fail(err)
		} else if !ok {
			b.revived(id)
		}
	}
	v := make([]byte, 5)
	v[0] = blobRecV1
	binary.BigEndian.PutUint32(v[1:], plainLen)
	b.set(blobKey(id), v)
	b.noteRef(blobKey(id), refChange{blob: &plainLen, kind: pBlob})
	if !b.isLocated(id) {
		b.markPending(id, 0, 0, plainLen+vault.Overhead)
	}
}

// DeleteBlob forgets blob id, and takes it off the pending feed.
func (b *Batch) DeleteBlob(id ChunkID) {
	b.del(blobKey(id))
	b.noteRef(blobKey(id), refChange{kind: pBlob})
	b.unmarkPending(id)
	b.died(id)
}

// TreeIDSize is the size of a tree id.
const TreeIDSize = 16

// TreeID names a tree record by its content.
type TreeID [TreeIDSize]byte

func treeKey(id TreeID) []byte { return append([]byte{pTree}, id[:]...) }

// GetTree returns the encoded tree id (package backup decodes it).
func (x *Index) GetTree(id TreeID) ([]byte, error) {
	b, err := x.get(treeKey(id))
	if err != nil {
		return nil, fmt.Errorf("tree %x: %w", id[:], err)
	}
	return b, nil
}

// HasTree reports whether tree id exists.
func (x *Index) HasTree(id TreeID) (bool, error) {
	_, err := x.raw(treeKey(id))
	if err == ErrNotFound {
		return false, nil
	}
	return err == nil, err
}

// Trees calls fn with the id of every tree.
func (x *Index) Trees(fn func(id TreeID) error) error {
	return x.scan([]byte{pTree}, func(key, _ []byte) error {
		if len(key) != 1+TreeIDSize {
			return fmt.Errorf("tree key %x: %w", key, ErrCorrupt)
		}
		return fn(TreeID(key[1:]))
	})
}

// PutTree writes an encoded tree.
func (b *Batch) PutTree(id TreeID, enc []byte) { b.set(treeKey(id), enc) }

// DeleteTree removes a tree.
func (b *Batch) DeleteTree(id TreeID) { b.del(treeKey(id)) }

// BackupSnapID names a backup snapshot.
type BackupSnapID [8]byte

// String is the hex form users type.
func (s BackupSnapID) String() string { return fmt.Sprintf("%x", s[:]) }

func backupSnapKey(id BackupSnapID) []byte { return append([]byte{pBackupSnap}, id[:]...) }

// GetBackupSnapshot returns the encoded snapshot id.
func (x *Index) GetBackupSnapshot(id BackupSnapID) ([]byte, error) {
	return x.get(backupSnapKey(id))
}

// BackupSnapshots calls fn with every backup snapshot, encoded.
func (x *Index) BackupSnapshots(fn func(id BackupSnapID, enc []byte) error) error {
	return x.scan([]byte{pBackupSnap}, func(key, val []byte) error {
		if len(key) != 9 {
			return fmt.Errorf("backup snapshot key %x: %w", key, ErrCorrupt)
		}
		return fn(BackupSnapID(key[1:]), val)
	})
}

// PutBackupSnapshot writes an encoded backup snapshot.
func (b *Batch) PutBackupSnapshot(id BackupSnapID, enc []byte) { b.set(backupSnapKey(id), enc) }

// DeleteBackupSnapshot removes a backup snapshot.
func (b *Batch) DeleteBackupSnapshot(id BackupSnapID) { b.del(backupSnapKey(id)) }

func (x *Index) backupRootKey(path string) []byte {
	mac := x.keys.NameMAC(0, "backup root\x00"+path)
	return append([]byte{pBackupRoot}, mac[:]...)
}

// BackupRoots lists the backed-up folders.
func (x *Index) BackupRoots() ([]string, error) {
	var out []string
	err := x.scan([]byte{pBackupRoot}, func(key, val []byte) error {
		if string(x.backupRootKey(string(val))) != string(key) {
			return fmt.Errorf("backup root: path does not match its key: %w", ErrCorrupt)
		}
		out = append(out, string(val))
		return nil
	})
	return out, err
}

// PutBackupRoot adds a backed-up folder (an absolute path).
func (b *Batch) PutBackupRoot(path string) { b.set(b.x.backupRootKey(path), []byte(path)) }

// DeleteBackupRoot removes a backed-up folder.
func (b *Batch) DeleteBackupRoot(path string) { b.del(b.x.backupRootKey(path)) }
