package replicate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// TestSnapshotListCodec: a snapshot's segment list decodes to what was
// encoded, and a list that is damaged, truncated, too long, or whose
// segments do not add up to the snapshot's size is refused as ErrSnapshot
// (a restore then fails with an error instead of importing a partial
// index).
func TestSnapshotListCodec(t *testing.T) {
	segs := []snapSegment{{id: [16]byte{1}, class: 4096, used: 4000}, {id: [16]byte{2}, class: 8192, used: 8192}, {id: [16]byte{3}, class: 4096, used: 0}}
	good := encodeList(12192, segs)
	n, got, err := decodeList(good)
	if err != nil || n != 12192 || len(got) != 3 {
		t.Fatalf("decode: %d bytes, %d segments, %v", n, len(got), err)
	}
	for i := range segs {
		if got[i] != segs[i] {
			t.Fatalf("segment %d: %+v, want %+v", i, got[i], segs[i])
		}
	}
	if n, got, err := decodeList(encodeList(0, nil)); err != nil || n != 0 || len(got) != 0 {
		t.Fatalf("an empty list: %d, %d, %v", n, len(got), err)
	}
	full := make([]snapSegment, maxSnapshotSegments)
	if _, got, err := decodeList(encodeList(0, full)); err != nil || len(got) != maxSnapshotSegments {
		t.Fatalf("a list of the most segments: %d, %v", len(got), err)
	}
	edit := func(fn func(b []byte) []byte) []byte { return fn(bytes.Clone(good)) }
	hdr := len(listMagic)
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"another magic", edit(func(b []byte) []byte { b[0] ^= 1; return b })},
		{"a header cut short", good[:hdr+11]},
		{"the magic alone", good[:hdr]},
		{"a count one too many", edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[hdr+8:], 4); return b })},
		{"a count one too few", edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[hdr+8:], 2); return b })},
		{"an entry cut short", good[:len(good)-1]},
		{"a byte after the entries", append(bytes.Clone(good), 0)},
		{"more segments than a list may hold", encodeList(0, make([]snapSegment, maxSnapshotSegments+1))},
		{"a segment using more than its class", encodeList(4097, []snapSegment{{class: 4096, used: 4097}})},
		{"a size the segments do not hold", edit(func(b []byte) []byte { binary.BigEndian.PutUint64(b[hdr:], 12193); return b })},
		{"a size one short", edit(func(b []byte) []byte { binary.BigEndian.PutUint64(b[hdr:], 12191); return b })},
	} {
		if _, _, err := decodeList(c.b); !errors.Is(err, ErrSnapshot) {
			t.Errorf("%s: %v, want ErrSnapshot", c.name, err)
		}
	}
}

// TestSnapshotRecordsCodec: serialised records read back as written, in
// order; a header or a record cut short is ErrSnapshot, never a shorter
// index; the reader's error stops the walk.
func TestSnapshotRecordsCodec(t *testing.T) {
	recs := []record{{[]byte("a"), []byte("one")}, {[]byte("bb"), bytes.Repeat([]byte{7}, 300)}, {[]byte("c"), nil}} // an empty value last
	blob := recordsOf(encodeRecords(recs))
	read := func(b []byte) ([]record, error) {
		var out []record
		err := importRecords(b)(func(k, v []byte) error {
			out = append(out, record{bytes.Clone(k), bytes.Clone(v)})
			return nil
		})
		return out, err
	}
	got, err := read(blob)
	if err != nil || len(got) != len(recs) {
		t.Fatalf("%d records, %v", len(got), err)
	}
	for i := range recs {
		if !bytes.Equal(got[i].key, recs[i].key) || !bytes.Equal(got[i].sealed, recs[i].sealed) {
			t.Fatalf("record %d: %q=%q, want %q=%q", i, got[i].key, got[i].sealed, recs[i].key, recs[i].sealed)
		}
	}
	if got, err := read([]byte(snapshotMagic)); err != nil || len(got) != 0 {
		t.Fatalf("no records: %d, %v", len(got), err)
	}
	// (Cut between two records it is a shorter serialisation: the sealed
	// snapshot's size, in its list, and its tag guard against that.)
	bounds := map[int]bool{}
	at := len(snapshotMagic)
	for _, rc := range recs {
		at += 8 + len(rc.key) + len(rc.sealed)
		bounds[at] = true
	}
	for cut := len(snapshotMagic) + 1; cut < len(blob); cut++ {
		if bounds[cut] {
			continue
		}
		if _, err := read(blob[:cut]); !errors.Is(err, ErrSnapshot) {
			t.Fatalf("cut at %d of %d: %v, want ErrSnapshot", cut, len(blob), err)
		}
	}
	if _, err := read(blob[1:]); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("a bad header: %v", err)
	}
	// A length that claims the rest and one byte more.
	long := bytes.Clone(blob)
	binary.BigEndian.PutUint32(long[len(snapshotMagic):], uint32(len(long)-len(snapshotMagic)-4+1))
	if _, err := read(long); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("a key longer than the rest: %v", err)
	}
	// A length that claims exactly the rest is a whole key with no value.
	exact := bytes.Clone(blob)
	binary.BigEndian.PutUint32(exact[len(snapshotMagic):], uint32(len(exact)-len(snapshotMagic)-4))
	if _, err := read(exact); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("a key with no value after it: %v", err)
	}
	stop := errors.New("stop")
	calls := 0
	if err := importRecords(blob)(func(k, v []byte) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("the reader's error: %v after %d calls", err, calls)
	}
	// Merged records keep key order, those added before, between and after.
	extra := []record{{[]byte("d"), []byte("4")}, {[]byte("0"), []byte("first")}, {[]byte("b"), []byte("2")}}
	merged, err := mergeRecords(encodeRecords(recs), extra)
	if err != nil {
		t.Fatal(err)
	}
	got, err = read(recordsOf(merged))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range got {
		keys = append(keys, string(r.key))
	}
	if want := "0 a b bb c d"; joinKeys(keys) != want {
		t.Fatalf("merged keys %q, want %q", joinKeys(keys), want)
	}
	if !bytes.Equal(got[0].sealed, []byte("first")) || !bytes.Equal(got[5].sealed, []byte("4")) {
		t.Fatalf("merged values: %q, %q", got[0].sealed, got[5].sealed)
	}
	if _, err := mergeRecords(encodeRecords(recs)[:len(snapshotMagic)+vault.NonceSize+3], nil); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("merging a damaged blob: %v", err)
	}
	// The associated data of a snapshot binds its kind, account and
	// sequence.
	a := fnet.AccountID{1}
	ads := map[string]bool{}
	for _, ad := range [][]byte{snapshotAD("index", a, 1), snapshotAD("list", a, 1), snapshotAD("index", fnet.AccountID{2}, 1), snapshotAD("index", a, 2)} {
		ads[string(ad)] = true
	}
	if len(ads) != 4 {
		t.Fatal("two snapshots' associated data are equal")
	}
}

func joinKeys(keys []string) string {
	out := ""
	for i, k := range keys {
		if i > 0 {
			out += " "
		}
		out += k
	}
	return out
}

// TestRestoreRefusesAHomeInUse: Restore never writes into a home that
// holds a key file or an index, and touches nothing there.
func TestRestoreRefusesAHomeInUse(t *testing.T) {
	for _, name := range []string{vault.KeyFileName, vault.IndexDirName} {
		home := t.TempDir()
		p := filepath.Join(home, name)
		if err := os.WriteFile(p, []byte("mine"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Restore(context.Background(), RestoreOptions{Home: home, Mediator: fnet.Address{HostPort: "127.0.0.1:1"}})
		if !errors.Is(err, ErrHomeNotEmpty) {
			t.Fatalf("a home with %s: %v, want ErrHomeNotEmpty", name, err)
		}
		if b, err := os.ReadFile(p); err != nil || string(b) != "mine" {
			t.Fatalf("%s changed: %q, %v", name, b, err)
		}
		if ents, _ := os.ReadDir(home); len(ents) != 1 {
			t.Fatalf("Restore left %d entries in the home", len(ents))
		}
	}
}
