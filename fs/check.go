package fs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/fincrypt/fincrypt/backup"
	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// checkBatch is how many chunks a worker of Check takes at a time.
const checkBatch = 256

// checkOpened, if set (by tests), is given the index Check opened.
var checkOpened func(*meta.Index)

// Check verifies the vault offline: every record of the index decrypts under
// its key, every chunk referenced exists and decrypts under its associated
// data with the recorded length, index and store agree (no missing chunk;
// unreferenced chunks are reported), and link counts and directory entries
// are consistent. It writes one line per problem to w and returns the
// problem count; err is for failures that stop the check itself.
//
// Inodes on the orphan list (unlinked while open when the last mount ended)
// and chunks no file references (written but never committed before a
// crash) are consistent states after a crash, not problems. Unreferenced
// chunks are counted in one "note:" line. A damaged index (one that does not
// match its clean-unmount record, is missing or empty while the store holds
// chunks, or does not open) is a problem: the report says what is lost and
// how to get it back (clean.go).
func Check(v *vault.Vault, w io.Writer) (problems int, err error) {
	return CheckWith(v, w, CheckOptions{})
}

// CheckOptions adds to Check.
type CheckOptions struct {
	// Progress, if set, is called before each chunk is checked and once after the
	// last: chunks and their plaintext bytes done, and the totals.
	Progress func(chunks, totalChunks int, bytes, totalBytes int64)
}

// CheckWith is Check with options.
func CheckWith(v *vault.Vault, w io.Writer, o CheckOptions) (problems int, err error) {
	if o.Progress == nil {
		o.Progress = func(int, int, int64, int64) {}
	}
	report := func(format string, args ...any) {
		problems++
		fmt.Fprintf(w, format+"\n", args...)
	}
	exists, err := meta.Exists(v.IndexDir(), nil)
	if err != nil {
		return 0, err
	}
	if !exists {
		n := countFiles(v.StoreDir(), chunkstore.OwnerFile)
		if n == 0 {
			return 0, nil // never mounted: nothing stored, nothing to check
		}
		report("the index %s is missing or empty, but the local store %s holds %d chunk(s): every file name, directory "+
			"and chunk map is lost; the chunks are kept, but cannot be read without it", v.IndexDir(), v.StoreDir(), n)
		fmt.Fprintf(w, "to get it back: %s\n", RecoverHint)
		return problems, nil
	}
	opt := Options{}
	opt.setDefaults()
	r, err := newFsys(v, opt, true)
	var ioe *indexOpenError
	if errors.As(err, &ioe) || errors.Is(err, ErrForeignStore) {
		report("%v", err)
		return problems, nil
	}
	if err != nil {
		return 0, err
	}
	defer r.idx.Close()
	if checkOpened != nil {
		checkOpened(r.idx)
	}

	// What the checks need of each inode, without pointers: at millions
	// of inodes the map is a third the size of one of whole inodes, and
	// the garbage collector does not scan it.
	inodes := map[uint64]checkInode{}
	var inos []uint64 // the inodes' numbers, ascending
	type chunkKey struct{ ino, idx uint64 }
	type chunkAt struct {
		k   chunkKey
		ref meta.ChunkRef
	}
	var chunks []chunkAt           // in index order (the walk's): keys are unique
	links := map[uint64]uint32{}   // dirents naming each inode
	subdirs := map[uint64]uint32{} // directories in each directory
	var dirents []meta.Dirent
	orphans := map[uint64]bool{}
	var xattrOwners []uint64
	type blobRef struct {
		id  meta.ChunkID
		len uint32
	}
	var blobs []blobRef // backup blobs (package backup)
	type pinRef struct {
		id meta.ChunkID
		p  meta.Pin
	}
	var pins []pinRef       // chunks versions of the mount keep
	var badRecords []string // reported after the clean-close record's problem
	// Each kind of record is read on its own core; each callback below
	// touches only its own kind's state (Bad calls are serialised). The
	// walk also sums the chunk references for the comparison with the
	// clean-close record, which then reads none of them again.
	sum, err := r.idx.WalkParallelRefSum(meta.Visitor{
		Inode: func(n meta.Inode) {
			inodes[n.Ino] = checkInode{mode: n.Mode, nlink: n.Nlink, size: n.Size, target: uint64(len(n.Target))}
			inos = append(inos, n.Ino)
		},
		Dirent: func(d meta.Dirent) {
			dirents = append(dirents, d)
			links[d.Ino]++
			if d.Type == syscall.S_IFDIR {
				subdirs[d.Parent]++
			}
		},
		Chunk: func(ino, idx uint64, ref meta.ChunkRef) {
			chunks = append(chunks, chunkAt{chunkKey{ino, idx}, ref})
		},
		Xattr:  func(ino uint64, _ string, _ []byte) { xattrOwners = append(xattrOwners, ino) },
		Orphan: func(ino uint64) { orphans[ino] = true },
		Blob:   func(id meta.ChunkID, n uint32) { blobs = append(blobs, blobRef{id, n}) },
		Pin: func(id meta.ChunkID, p meta.Pin) {
			pins = append(pins, pinRef{id, p})
		},
		Bad: func(key []byte, err error) {
			badRecords = append(badRecords, fmt.Sprintf("index record %x: %v", key, err))
		},
	})
	if err != nil {
		return problems, fmt.Errorf("reading the index: %w", err)
	}
	clean, err := verifyCleanWalked(r, true, &sum)
	if err != nil {
		return problems, err
	}
	if clean.recorded && !clean.whole {
		report("the index does not match the record of the last clean unmount: %s", clean.problem)
	}
	for _, b := range badRecords {
		report("%s", b)
	}

	root, ok := inodes[meta.RootIno]
	if !ok {
		report("root directory (inode %d) is missing", meta.RootIno)
	} else if root.mode&syscall.S_IFMT != syscall.S_IFDIR {
		report("root inode %d is not a directory (mode %o)", meta.RootIno, root.mode)
	}
	for _, d := range dirents {
		p, ok := inodes[d.Parent]
		if !ok {
			report("entry %q in missing directory %d", d.Name, d.Parent)
		} else if p.mode&syscall.S_IFMT != syscall.S_IFDIR {
			report("entry %q in inode %d, which is not a directory", d.Name, d.Parent)
		}
		in, ok := inodes[d.Ino]
		if !ok {
			report("entry %q in directory %d names missing inode %d", d.Name, d.Parent, d.Ino)
			continue
		}
		if in.mode&syscall.S_IFMT != d.Type {
			report("entry %q in directory %d: type %o, inode %d has type %o", d.Name, d.Parent, d.Type, d.Ino, in.mode&syscall.S_IFMT)
		}
		if d.Name == "" || len(d.Name) > MaxNameLen {
			report("entry in directory %d has a bad name of %d bytes", d.Parent, len(d.Name))
		}
	}
	// The walk gives the inodes in key order, which is their numbers'.
	if !slices.IsSorted(inos) {
		slices.Sort(inos)
	}
	for _, ino := range inos {
		in := inodes[ino]
		isDir := in.mode&syscall.S_IFMT == syscall.S_IFDIR
		switch {
		case ino == meta.RootIno:
			if want := 2 + subdirs[ino]; in.nlink != want {
				report("root directory: link count %d, want %d", in.nlink, want)
			}
		case isDir:
			if links[ino] != 1 {
				report("directory %d has %d entries naming it, want 1", ino, links[ino])
			}
			if want := 2 + subdirs[ino]; in.nlink != want {
				report("directory %d: link count %d, want %d", ino, in.nlink, want)
			}
		case in.nlink == 0 && links[ino] == 0:
			if !orphans[ino] {
				report("inode %d has no links and is not on the orphan list", ino)
			}
		default:
			if in.nlink != links[ino] {
				report("inode %d: link count %d, but %d entries name it", ino, in.nlink, links[ino])
			}
			if links[ino] == 0 {
				report("inode %d is not reachable from any directory", ino)
			}
		}
		if in.mode&syscall.S_IFMT == syscall.S_IFLNK && in.target != in.size {
			report("symlink %d: size %d, target of %d bytes", ino, in.size, in.target)
		}
	}
	for ino := range orphans {
		if _, ok := inodes[ino]; !ok {
			report("orphan list names missing inode %d", ino)
		}
	}
	for _, ino := range xattrOwners {
		if _, ok := inodes[ino]; !ok {
			report("extended attribute of missing inode %d", ino)
		}
	}

	// Chunks: the index's view against the store's. The structural checks
	// run in index order; reading and opening the chunks, the bulk of the
	// work, runs on every core, and its problems are reported in index
	// order too.
	referenced := make(map[meta.ChunkID]chunkKey, len(chunks))
	toRead := make([]int, 0, len(chunks))
	var totalBytes int64
	for i := range chunks {
		totalBytes += int64(chunks[i].ref.Len)
	}
	o.Progress(0, len(chunks), 0, totalBytes)
	for i := range chunks {
		k, ref := chunks[i].k, chunks[i].ref
		in, ok := inodes[k.ino]
		switch {
		case !ok:
			report("chunk %d of missing inode %d", k.idx, k.ino)
		case in.mode&syscall.S_IFMT != syscall.S_IFREG:
			report("chunk %d of inode %d, which is not a regular file", k.idx, k.ino)
		case k.idx*r.cs+uint64(ref.Len) > in.size && ref.Len > 0:
			report("inode %d chunk %d: holds bytes up to %d, past the file size %d", k.ino, k.idx, k.idx*r.cs+uint64(ref.Len), in.size)
		}
		if prev, dup := referenced[ref.ID]; dup {
			report("chunk %s is referenced twice (inode %d chunk %d and inode %d chunk %d)", ref.ID, prev.ino, prev.idx, k.ino, k.idx)
		}
		referenced[ref.ID] = k
		if uint64(ref.Len) > r.cs {
			report("inode %d chunk %d: length %d exceeds the chunk size %d", k.ino, k.idx, ref.Len, r.cs)
			continue
		}
		toRead = append(toRead, i)
	}
	// The chunks' locations, read in one pass: a chunk missing from the
	// store is on the network if it has one (a point read per chunk before,
	// most of the check of a vault whose cache holds few of its chunks).
	// If they do not read, each is looked up on its own.
	located := map[meta.ChunkID]bool{}
	locErr := r.idx.Locations(func(id meta.ChunkID, _ meta.Location) error { located[id] = true; return nil })
	isLocated := func(id meta.ChunkID) bool {
		if locErr == nil {
			return located[id]
		}
		_, err := r.idx.GetLocation(id)
		return err == nil
	}
	found := make([]string, len(toRead)) // a problem per chunk read, or ""
	netOnly := make([]bool, len(toRead))
	var next atomic.Int64
	var wg sync.WaitGroup
	var progMu sync.Mutex // Progress is called from one worker at a time
	var doneN, doneBytes int64
	for range max(1, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sealedBuf, plainBuf []byte
			for {
				lo := int(next.Add(checkBatch)) - checkBatch
				if lo >= len(toRead) {
					return
				}
				var batchBytes int64
				for j := lo; j < min(lo+checkBatch, len(toRead)); j++ {
					k, ref := chunks[toRead[j]].k, chunks[toRead[j]].ref
					batchBytes += int64(ref.Len)
					var err error
					sealedBuf, err = r.store.Get(ref.ID, sealedBuf[:0])
					if errors.Is(err, chunkstore.ErrNotFound) {
						if isLocated(ref.ID) {
							netOnly[j] = true // evicted from the local cache; its segment holds it
							continue
						}
						found[j] = fmt.Sprintf("inode %d chunk %d: chunk %s is missing from the store", k.ino, k.idx, ref.ID)
						continue
					}
					if err != nil {
						found[j] = fmt.Sprintf("inode %d chunk %d: %v", k.ino, k.idx, err)
						continue
					}
					plainBuf, err = v.Keys.Chunk.Open(plainBuf[:0], sealedBuf, vault.ChunkAD(k.ino, k.idx, ref.Version))
					if err != nil {
						found[j] = fmt.Sprintf("inode %d chunk %d: chunk %s does not decrypt: %v", k.ino, k.idx, ref.ID, err)
						continue
					}
					if len(plainBuf) != int(ref.Len) {
						found[j] = fmt.Sprintf("inode %d chunk %d: chunk %s holds %d bytes, the index says %d", k.ino, k.idx, ref.ID, len(plainBuf), ref.Len)
					}
				}
				progMu.Lock()
				doneN += int64(min(lo+checkBatch, len(toRead)) - lo)
				doneBytes += batchBytes
				o.Progress(int(doneN), len(chunks), doneBytes, totalBytes)
				progMu.Unlock()
			}
		}()
	}
	wg.Wait()
	onNetwork := 0
	for j := range toRead {
		if netOnly[j] {
			onNetwork++
		}
		if found[j] != "" {
			report("%s", found[j])
		}
	}
	o.Progress(len(chunks), len(chunks), totalBytes, totalBytes)
	var sealedBuf, plainBuf []byte
	// Backup blobs: in the store (or on the network), sealed under their
	// own domain with their id as associated data.
	for _, b := range blobs {
		if _, dup := referenced[b.id]; dup {
			report("backup blob %s has the id of a file chunk", b.id)
		}
		referenced[b.id] = chunkKey{}
		sealedBuf, err = r.store.Get(b.id, sealedBuf[:0])
		if errors.Is(err, chunkstore.ErrNotFound) {
			if isLocated(b.id) {
				onNetwork++
				continue
			}
			report("backup blob %s is missing from the store and from the network", b.id)
			continue
		}
		if err != nil {
			report("backup blob %s: %v", b.id, err)
			continue
		}
		plainBuf, err = v.Keys.Blob.Open(plainBuf[:0], sealedBuf, b.id[:])
		if err != nil {
			report("backup blob %s does not decrypt: %v", b.id, err)
			continue
		}
		if len(plainBuf) != int(b.len) || v.Keys.BlobID("blob", plainBuf) != b.id {
			report("backup blob %s holds %d bytes that do not match its id (the index says %d bytes)", b.id, len(plainBuf), b.len)
		}
	}
	// Chunks versions pin: in the store (or on the network), opening as the
	// chunk of the file they were sealed for. The file may still reference
	// the same chunk.
	pinned := make(map[meta.ChunkID]bool, len(pins))
	for _, pr := range pins {
		pinned[pr.id] = true
		if k, ok := referenced[pr.id]; ok && (k.ino != pr.p.Ino || k.idx != pr.p.Index) {
			report("pinned chunk %s (inode %d chunk %d) is referenced as inode %d chunk %d", pr.id, pr.p.Ino, pr.p.Index, k.ino, k.idx)
		}
		referenced[pr.id] = chunkKey{pr.p.Ino, pr.p.Index}
		if pr.p.Offset != pr.p.Index*r.cs || uint64(pr.p.Len) > r.cs {
			report("pinned chunk %s: offset %d and length %d do not fit chunk %d of size %d", pr.id, pr.p.Offset, pr.p.Len, pr.p.Index, r.cs)
		}
		sealedBuf, err = r.store.Get(pr.id, sealedBuf[:0])
		if errors.Is(err, chunkstore.ErrNotFound) {
			if isLocated(pr.id) {
				onNetwork++
				continue
			}
			report("pinned chunk %s (inode %d chunk %d) is missing from the store and from the network", pr.id, pr.p.Ino, pr.p.Index)
			continue
		}
		if err != nil {
			report("pinned chunk %s: %v", pr.id, err)
			continue
		}
		plainBuf, err = v.Keys.Chunk.Open(plainBuf[:0], sealedBuf, vault.ChunkAD(pr.p.Ino, pr.p.Index, pr.p.Version))
		if err != nil {
			report("pinned chunk %s (inode %d chunk %d) does not decrypt: %v", pr.id, pr.p.Ino, pr.p.Index, err)
			continue
		}
		if len(plainBuf) != int(pr.p.Len) {
			report("pinned chunk %s holds %d bytes, its pin says %d", pr.id, len(plainBuf), pr.p.Len)
		}
	}
	checkSnapshotContents(r.idx, pinned, report)
	if r.idx.FeedReady() {
		blobIDs := make([]meta.ChunkID, 0, len(blobs)+len(pins))
		for _, b := range blobs {
			blobIDs = append(blobIDs, b.id)
		}
		for _, pr := range pins {
			blobIDs = append(blobIDs, pr.id)
		}
		if locErr != nil {
			report("reading chunk locations: %v", locErr)
		} else {
			refs := make([]meta.ChunkRef, len(chunks))
			for i := range chunks {
				refs[i] = chunks[i].ref
			}
			checkFeed(r.idx, refs, located, blobIDs, report)
		}
	}
	if onNetwork > 0 {
		fmt.Fprintf(w, "note: %d chunk(s) are only on the network (evicted from the local cache); not checked offline\n", onNetwork)
	}
	unreferenced, unrefBytes := 0, int64(0)
	err = r.store.List(func(id meta.ChunkID) error {
		if _, ok := referenced[id]; !ok {
			unreferenced++
			if n, err := r.store.Size(id); err == nil {
				unrefBytes += n
			}
		}
		return nil
	}, func(path string) {
		report("unexpected file in the chunk store: %s", path)
	})
	if err != nil {
		return problems, fmt.Errorf("listing the chunk store: %w", err)
	}
	switch {
	case clean.recorded && !clean.whole:
		if clean.then > clean.now {
			fmt.Fprintf(w, "lost: %d chunk reference(s) of files (the index held %d at the clean unmount, %d now)\n", clean.then-clean.now, clean.then, clean.now)
		}
		fmt.Fprintf(w, "lost: %d chunk(s) (%d bytes) in the store are no longer referenced: they hold the data of the files or versions the index lost, and are kept\n", unreferenced, unrefBytes)
		fmt.Fprintf(w, "to get it back: %s\n", RecoverHint)
	case unreferenced > 0 && clean.whole:
		// Superseded but not yet deleted: the next mount deletes them.
		fmt.Fprintf(w, "note: %d chunk(s) in the store are not referenced by any file (superseded, not yet deleted); the next mount deletes them\n", unreferenced)
	case unreferenced > 0:
		// Expected after a crash (chunks written but never committed, or
		// superseded but not yet deleted): not a problem.
		fmt.Fprintf(w, "note: %d chunk(s) (%d bytes) in the store are not referenced by any file (left by a crash or an unclean stop, or the data of files the index lost); "+
			"they are kept until a clean unmount and mount; if files are missing: %s\n", unreferenced, unrefBytes, RecoverHint)
	}
	return problems, nil
}

// checkInode is what Check needs of an inode.
type checkInode struct {
	mode, nlink uint32
	size        uint64
	target      uint64 // a symlink's target length
}

// checkFeed compares the index's pending feed (meta.Index.PendingChunks)
// with the chunk references and their locations (located): a chunk missing from the
// feed would never be uploaded, a stale entry keeps status pending.
func checkFeed(idx *meta.Index, chunks []meta.ChunkRef, located map[meta.ChunkID]bool, blobs []meta.ChunkID, report func(string, ...any)) {
	// The chunks that want a feed entry, sorted and merged with the feed,
	// which comes in chunk id order: at a million chunks two sets of them
	// cost more than the sort.
	want := make([]meta.ChunkID, 0, len(chunks)+len(blobs))
	for _, ref := range chunks {
		if !located[ref.ID] {
			want = append(want, ref.ID)
		}
	}
	for _, id := range blobs {
		if !located[id] {
			want = append(want, id)
		}
	}
	slices.SortFunc(want, func(a, b meta.ChunkID) int { return bytes.Compare(a[:], b[:]) })
	want = slices.Compact(want)
	var missing []meta.ChunkID
	i := 0
	err := idx.PendingChunks(func(p meta.Pending) error {
		for i < len(want) && bytes.Compare(want[i][:], p.ID[:]) < 0 {
			missing = append(missing, want[i])
			i++
		}
		if i < len(want) && want[i] == p.ID {
			i++
		} else if p.Owner != 0 {
			report("pending feed: chunk %s is listed for upload but is located or no longer referenced", p.ID)
		}
		return nil
	})
	if err != nil {
		report("reading the pending feed: %v", err)
		return
	}
	missing = append(missing, want[i:]...)
	for _, id := range missing {
		report("pending feed: chunk %s has no location and is not listed for upload (it would never be uploaded)", id)
	}
}

// checkSnapshotContents reports content a snapshot names that no blob
// record or pin keeps: a version whose chunk could be collected.
func checkSnapshotContents(idx *meta.Index, pinned map[meta.ChunkID]bool, report func(string, ...any)) {
	snaps, err := backup.Snapshots(idx)
	if err != nil {
		report("snapshots: %v", err)
		return
	}
	seen := map[meta.TreeID]bool{}
	var walk func(snap string, id meta.TreeID)
	walk = func(snap string, id meta.TreeID) {
		if seen[id] {
			return
		}
		seen[id] = true
		t, err := backup.LoadTree(idx, id)
		if err != nil {
			report("snapshot %s: %v", snap, err)
			return
		}
		for i := range t.Nodes {
			n := &t.Nodes[i]
			for _, c := range n.Blobs {
				if pinned[c] {
					continue
				}
				if _, err := idx.GetBlob(c); err != nil {
					report("snapshot %s: %q names content %s that no blob record or pin keeps (%v)", snap, n.Name, c, err)
				}
			}
			if n.Type == backup.TypeDir {
				walk(snap, n.Subtree)
			}
		}
	}
	for _, s := range snaps {
		walk(s.ID.String(), s.Tree)
	}
}
