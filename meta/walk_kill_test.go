package meta

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// walkSeen records what a walk visits, by identity, and fails on a record
// visited twice: a walk visits every record exactly once.
type walkSeen struct {
	t    *testing.T
	mu   sync.Mutex
	name string
	seen map[string]int
	bad  map[string]error
}

func newWalkSeen(t *testing.T, name string) *walkSeen {
	return &walkSeen{t: t, name: name, seen: map[string]int{}, bad: map[string]error{}}
}

func (s *walkSeen) note(kind, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := kind + " " + id
	s.seen[k]++
	if s.seen[k] > 1 {
		s.t.Errorf("%s: %s visited %d times", s.name, k, s.seen[k])
	}
}

func (s *walkSeen) visitor() Visitor {
	return Visitor{
		Inode:  func(n Inode) { s.note("inode", fmt.Sprint(n.Ino, n.Size)) },
		Dirent: func(d Dirent) { s.note("dirent", fmt.Sprint(d.Parent, d.Name, d.Ino)) },
		Chunk:  func(ino, idx uint64, r ChunkRef) { s.note("chunk", fmt.Sprint(ino, idx, r.ID, r.Len)) },
		Xattr:  func(ino uint64, name string, v []byte) { s.note("xattr", fmt.Sprint(ino, name, string(v))) },
		Orphan: func(ino uint64) { s.note("orphan", fmt.Sprint(ino)) },
		Blob:   func(id ChunkID, n uint32) { s.note("blob", fmt.Sprint(id, n)) },
		Pin:    func(id ChunkID, p Pin) { s.note("pin", fmt.Sprint(id, p.Ino, p.Index)) },
		Bad: func(key []byte, err error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if _, dup := s.bad[string(key)]; dup {
				s.t.Errorf("%s: bad record %x reported twice", s.name, key)
			}
			s.bad[string(key)] = err
		},
	}
}

func kindOf(k string) string {
	for i := range k {
		if k[i] == ' ' {
			return k[:i]
		}
	}
	return k
}

// everyKindIndex is an index holding records of every kind a walk reads,
// and of the kinds it passes over (counters, the replication engine's
// state, the version cache, backup trees, snapshots and folders).
func everyKindIndex(t *testing.T) *Index {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 9))
	t.Cleanup(func() { x.Close() })
	if _, err := x.NextIno(); err != nil { // a counter record
		t.Fatal(err)
	}
	b := x.NewBatch()
	for i := range 10 {
		ino := uint64(10 + i)
		b.PutInode(&Inode{Ino: ino, Mode: 0o100644, Nlink: 1, Size: uint64(i)})
		b.PutDirent(&Dirent{Parent: RootIno, Name: fmt.Sprintf("f%d", i), Ino: ino, Type: 0o100000})
		b.PutChunk(ino, uint64(i), &ChunkRef{ID: ChunkID{0xc0, byte(i)}, Version: 1, Len: 7})
		b.PutXattr(ino, fmt.Sprintf("user.%d", i), []byte{byte('a' + i)})
		if i < 3 {
			b.AddOrphan(ino)
		}
	}
	seg := Segment{ID: SegmentID{0x5e}, Kind: KindData, State: SegmentDurable, K: 1, N: 2, Healthy: 2,
		Pieces: []SegmentPiece{{Node: [32]byte{1}}, {Node: [32]byte{2}}}}
	b.PutSegment(&seg)
	b.PutLocation(ChunkID{0xc0, 0}, &Location{Segment: seg.ID, Offset: 0, Length: 40})
	b.PutRepl("queue/1", []byte("x"))
	b.PutTreeCache(TreeCacheDir, RootIno, []byte("dir"))
	b.PutBlob(ChunkID{0xb1}, 100)
	b.PutBlob(ChunkID{0xb2}, 200)
	b.PutPin(ChunkID{0xa1}, Pin{Ino: 10, Index: 5, Version: 2, Len: 9})
	b.PutPin(ChunkID{0xa2}, Pin{Ino: 11, Index: 6, Version: 2, Len: 9})
	b.PutTree(TreeID{0x7e}, []byte("tree"))
	b.PutBackupSnapshot(BackupSnapID{0x5a}, []byte("snap"))
	b.PutBackupRoot("/home/u")
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	return x
}

var everyKindWant = map[string]int{"inode": 10, "dirent": 10, "chunk": 10, "xattr": 10, "orphan": 3, "blob": 2, "pin": 2}

// what a version of the mount reads (WalkTree): no orphans, no blobs.
var treeKindWant = map[string]int{"inode": 10, "dirent": 10, "chunk": 10, "xattr": 10, "pin": 2}

func countKinds(s *walkSeen) map[string]int {
	n := map[string]int{}
	for k := range s.seen {
		n[kindOf(k)]++
	}
	return n
}

func sameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

type namedWalk struct {
	name string
	walk func(Visitor) error
	want map[string]int
}

func walksOf(x *Index) []namedWalk {
	return []namedWalk{
		{"Walk", x.Walk, everyKindWant},
		{"WalkParallel", x.WalkParallel, everyKindWant},
		{"WalkParallelRefSum", func(v Visitor) error { _, err := x.WalkParallelRefSum(v); return err }, everyKindWant},
		{"WalkTree", x.WalkTree, treeKindWant},
	}
}

// TestWalksVisitEveryRecordOnce: each walk (sequential, parallel, parallel
// with its reference sum, and a version's WalkTree) visits every record of
// the kinds it reads exactly once, reports none of a sound index as bad,
// and passes over the records it does not read.
func TestWalksVisitEveryRecordOnce(t *testing.T) {
	x := everyKindIndex(t)
	for _, w := range walksOf(x) {
		s := newWalkSeen(t, w.name)
		if err := w.walk(s.visitor()); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		if got := countKinds(s); !sameCounts(got, w.want) {
			t.Errorf("%s visited %v, want %v", w.name, got, w.want)
		}
		for k, err := range s.bad {
			t.Errorf("%s: sound record %x reported bad: %v", w.name, k, err)
		}
	}
	// A walk with no callbacks at all visits without failing.
	if err := x.WalkParallel(Visitor{}); err != nil {
		t.Fatal(err)
	}
}

// TestWalksReportDamage: a record that does not decrypt, does not decode,
// whose name does not match its key, or whose key is of no known kind is
// given to Bad (with ErrCorrupt where it decrypted), once, with its key;
// the walk goes on and still visits every sound record.
func TestWalksReportDamage(t *testing.T) {
	x := everyKindIndex(t)
	seal := func(key, plain []byte) {
		t.Helper()
		if err := x.db.Set(key, x.keys.Meta.Seal(nil, plain, key), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	junk := []byte{0xff, 1, 2}
	type damage struct {
		key  []byte
		tree bool // a record WalkTree reads
	}
	var dmg []damage
	add := func(key, plain []byte, tree bool) {
		seal(key, plain)
		dmg = append(dmg, damage{key, tree})
	}
	add(key8(pInode, 99), junk, true)                                  // an inode that does not decode
	add(append(key8(pInode, 98), 0), (&Inode{Ino: 98}).encode(), true) // an inode key one byte long
	add(keyMAC(pDirent, RootIno, x.keys.NameMAC(RootIno, "g")), junk, true)
	add(keyMAC(pDirent, RootIno, x.keys.NameMAC(RootIno, "h")), // a sound dirent under another name's key
		(&Dirent{Name: "other", Ino: 10, Type: 0o100000}).encode(), true)
	add(key16(pChunk, 99, 0), junk, true)
	add(keyMAC(pXattr, 99, x.xattrMAC(99, "user.x")), junk, true)
	add(keyMAC(pXattr, 99, x.xattrMAC(99, "user.y")), encodeXattr("user.z", []byte("v")), true)
	add(locationKey(ChunkID{0xd1}), junk, false)
	add(segmentKey(SegmentID{0xd2}), junk, false)
	add(pendingKey(ChunkID{0xd3}), junk, false)
	add(blobKey(ChunkID{0xd4}), junk, false)
	add(pinKey(ChunkID{0xd5}), junk, true)
	add([]byte{'Z', 1, 2}, nil, false)                 // a key of no known kind
	add(append(blobKey(ChunkID{0xd6}), 0), nil, false) // a blob key one byte long
	// A value that does not open under its key.
	badSeal := key8(pInode, 97)
	if err := x.db.Set(badSeal, []byte("not sealed at all, not even close"), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	dmg = append(dmg, damage{badSeal, true})

	for _, w := range walksOf(x) {
		s := newWalkSeen(t, w.name)
		if err := w.walk(s.visitor()); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		if got := countKinds(s); !sameCounts(got, w.want) {
			t.Errorf("%s with damaged records visited %v, want %v", w.name, got, w.want)
		}
		want := 0
		for _, d := range dmg {
			if w.name == "WalkTree" && !d.tree {
				continue
			}
			want++
			err, ok := s.bad[string(d.key)]
			if !ok {
				t.Errorf("%s: damaged record %x not reported", w.name, d.key)
				continue
			}
			if err == nil || (string(d.key) != string(badSeal) && !errors.Is(err, ErrCorrupt)) {
				t.Errorf("%s: damaged record %x reported with %v, want ErrCorrupt", w.name, d.key, err)
			}
		}
		if len(s.bad) != want {
			var keys []string
			for k := range s.bad {
				keys = append(keys, fmt.Sprintf("%x", k))
			}
			sort.Strings(keys)
			t.Errorf("%s reported %d bad records, want %d: %v", w.name, len(s.bad), want, keys)
		}
	}
}

// TestWalkRefSumsAgree: the parallel walk's reference sum is the
// sequential one's, whether or not the visitor has callbacks; it changes
// when a chunk reference, a blob or a pin is added, and comes back when
// it is dropped again.
func TestWalkRefSumsAgree(t *testing.T) {
	x := everyKindIndex(t)
	sum := func(what string) RefSum {
		t.Helper()
		seq, err := x.WalkRefSum()
		if err != nil {
			t.Fatal(err)
		}
		bare, err := x.WalkParallelRefSum(Visitor{})
		if err != nil {
			t.Fatal(err)
		}
		s := newWalkSeen(t, what)
		full, err := x.WalkParallelRefSum(s.visitor())
		if err != nil {
			t.Fatal(err)
		}
		if seq != bare || seq != full {
			t.Fatalf("%s: WalkRefSum %x/%d, parallel without callbacks %x/%d, with callbacks %x/%d",
				what, seq.Sum, seq.N, bare.Sum, bare.N, full.Sum, full.N)
		}
		return seq
	}
	base := sum("sound index")
	if base.N != 10+2+2 {
		t.Fatalf("reference sum counts %d elements, want 14 (10 chunk references, 2 blobs, 2 pins)", base.N)
	}
	steps := []struct {
		name      string
		add, drop func(b *Batch)
	}{
		{"chunk reference", func(b *Batch) { b.PutChunk(10, 77, &ChunkRef{ID: ChunkID{0xe1}, Version: 1, Len: 3}) },
			func(b *Batch) { b.DeleteChunk(10, 77) }},
		{"blob", func(b *Batch) { b.PutBlob(ChunkID{0xe2}, 5) }, func(b *Batch) { b.DeleteBlob(ChunkID{0xe2}) }},
		{"pin", func(b *Batch) { b.PutPin(ChunkID{0xe3}, Pin{Ino: 12, Index: 1, Version: 3, Len: 4}) },
			func(b *Batch) { b.DeletePin(ChunkID{0xe3}, Pin{Ino: 12, Index: 1, Version: 3, Len: 4}) }},
	}
	for _, st := range steps {
		b := x.NewBatch()
		st.add(b)
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		with := sum("with a " + st.name)
		if with.N != base.N+1 || with.Sum == base.Sum {
			t.Fatalf("adding a %s: sum %x/%d, before %x/%d", st.name, with.Sum, with.N, base.Sum, base.N)
		}
		b = x.NewBatch()
		st.drop(b)
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		if back := sum("after dropping the " + st.name); back != base {
			t.Fatalf("dropping the %s: sum %x/%d, want %x/%d", st.name, back.Sum, back.N, base.Sum, base.N)
		}
	}
	// A record that does not open is part of the sum too.
	if err := x.db.Set(key8(pInode, 96), []byte("garbage, not sealed"), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if bad := sum("with a damaged record"); bad.N != base.N+1 || bad.Sum == base.Sum {
		t.Fatalf("a damaged record left the sum at %x/%d", bad.Sum, bad.N)
	}
}
