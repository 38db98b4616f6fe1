package meta

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestWalksReportBarePrefixKeys: a key that is only the prefix of a kind
// whose keys carry a name (a counter, a replication engine record, a
// version cache record: one byte, no name) is damage: each walk gives it to
// Bad once, with ErrCorrupt, and still visits every sound record.
func TestWalksReportBarePrefixKeys(t *testing.T) {
	x := everyKindIndex(t)
	var keys [][]byte
	for _, p := range []byte{pCounter, pRepl, pTreeCache} {
		key := []byte{p}
		if err := x.db.Set(key, x.keys.Meta.Seal(nil, []byte{1}, key), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	for _, w := range walksOf(x) {
		if w.name == "WalkTree" {
			continue // reads none of these kinds
		}
		s := newWalkSeen(t, w.name)
		if err := w.walk(s.visitor()); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		if got := countKinds(s); !sameCounts(got, w.want) {
			t.Errorf("%s visited %v, want %v", w.name, got, w.want)
		}
		for _, k := range keys {
			if err, ok := s.bad[string(k)]; !ok || !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: the bare key %q: reported %v (%v), want ErrCorrupt", w.name, k, ok, err)
			}
		}
		if len(s.bad) != len(keys) {
			t.Errorf("%s: %d records reported bad, want %d", w.name, len(s.bad), len(keys))
		}
	}
}

// TestExportPassesAnEmptyKey: a record under the empty key (damage: the
// index never writes one) is exported as it is stored, among the others,
// and Import refuses it with ErrCorrupt; Export does not crash on it.
func TestExportPassesAnEmptyKey(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 2))
	defer x.Close()
	b := x.NewBatch()
	b.PutInode(&Inode{Ino: 5, Mode: 0o100644, Nlink: 1})
	commit(t, b)
	if err := x.db.Set([]byte{}, []byte("damage"), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	recs := exportAll(t, x.Export)
	var empty, inode int
	for _, r := range recs {
		switch {
		case len(r.key) == 0:
			empty++
			if !bytes.Equal(r.sealed, []byte("damage")) {
				t.Errorf("the empty key's value exported as %q", r.sealed)
			}
		case bytes.Equal(r.key, key8(pInode, 5)):
			inode++
		}
	}
	if empty != 1 || inode != 1 {
		t.Fatalf("exported the empty key %d times and the inode %d times, want once each", empty, inode)
	}
	y := openTest(t, t.TempDir(), testKeys(t, 2))
	defer y.Close()
	if err := y.Import(replay(recs)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("import of a record under the empty key: %v, want ErrCorrupt", err)
	}
}

// TestXattrValueLongerThanName: an extended attribute whose value is far
// longer than its name (the common case: a short name, a long value) reads
// back whole, alone and in a listing.
func TestXattrValueLongerThanName(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 2))
	defer x.Close()
	val := bytes.Repeat([]byte("v"), 300)
	b := x.NewBatch()
	b.PutXattr(5, "user.a", val)
	commit(t, b)
	got, err := x.GetXattr(5, "user.a")
	if err != nil || !bytes.Equal(got, val) {
		t.Fatalf("GetXattr: %d bytes, %v; want %d", len(got), err, len(val))
	}
	n := 0
	if err := x.ListXattr(5, func(name string, v []byte) error {
		n++
		if name != "user.a" || !bytes.Equal(v, val) {
			t.Errorf("listed %q with %d bytes", name, len(v))
		}
		return nil
	}); err != nil || n != 1 {
		t.Fatalf("ListXattr: %d listed, %v", n, err)
	}
}
