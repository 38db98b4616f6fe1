package replicate

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// engine is a replicator over a real index and chunk store, without a
// mount: tests write chunks and index records themselves and drive the
// engine's steps directly.
type engine struct {
	p     *testplanet.Planet
	v     *vault.Vault
	idx   *meta.Index
	store *chunkstore.Store
	r     *Replicator
	ino   uint64
}

// newEngine starts a planet of five nodes and an idle replicator on it:
// the timers are long, so that nothing runs unless the test asks.
func newEngine(t *testing.T, tune func(*Config)) *engine {
	t.Helper()
	return newEngineOn(t, testplanet.Config{StorageNodes: 5}, tune)
}

// newEngineOn is newEngine on a planet of the given shape.
func newEngineOn(t *testing.T, pc testplanet.Config, tune func(*Config)) *engine {
	t.Helper()
	p := testplanet.New(t, pc)
	home := filepath.Join(t.TempDir(), "home")
	newVault(t, home)
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	idx, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store, err := chunkstore.Open(v.StoreDir())
	if err != nil {
		idx.Close()
		t.Fatal(err)
	}
	cfg := fastConfig()
	cfg.ScanInterval, cfg.FlushAfter, cfg.CheckInterval = time.Hour, time.Hour, time.Hour
	cfg.MaintainInterval, cfg.SnapshotInterval = time.Hour, time.Hour
	// The test drives the rounds: nothing starts one by itself (a round
	// beside the test's would plan the same chunks).
	cfg.noWake = true
	if tune != nil {
		tune(&cfg)
	}
	r, err := New(v, idx, store, p.Client, cfg)
	if err != nil {
		idx.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		idx.Close()
	})
	e := &engine{p: p, v: v, idx: idx, store: store, r: r, ino: 100}
	// The first round runs at once; wait for it so that the test's own
	// steps do not overlap it.
	deadline := time.Now().Add(30 * time.Second)
	for r.rounds.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the engine's first round did not end within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return e
}

// addChunks stores chunks of the given sealed sizes under a new inode and
// references them from the index; it returns their ids and bytes.
func (e *engine) addChunks(t *testing.T, rng *rand.Rand, sizes ...int) ([]meta.ChunkID, map[meta.ChunkID][]byte) {
	t.Helper()
	e.ino++
	ids := make([]meta.ChunkID, len(sizes))
	data := map[meta.ChunkID][]byte{}
	b := e.idx.NewBatch()
	for i, n := range sizes {
		ids[i] = chunkstore.NewID()
		d := make([]byte, n)
		for j := range d {
			d[j] = byte(rng.Uint32())
		}
		if err := e.store.Put(ids[i], d); err != nil {
			t.Fatal(err)
		}
		data[ids[i]] = d
		b.PutChunk(e.ino, uint64(i), &meta.ChunkRef{ID: ids[i], Version: 1, Len: uint32(n - vault.Overhead)})
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	return ids, data
}

// planFor is the planned segment of the pending chunks among ids, as the
// scan sees them now.
func (e *engine) planFor(t *testing.T, ids []meta.ChunkID) *plannedSegment {
	t.Helper()
	all, err := e.r.pending()
	if err != nil {
		t.Fatal(err)
	}
	walked, err := e.r.scanPending()
	if err != nil {
		t.Fatal(err)
	}
	if len(walked) != len(all) {
		t.Fatalf("the pending feed holds %d chunks, a walk finds %d", len(all), len(walked))
	}
	want := map[meta.ChunkID]bool{}
	for _, id := range ids {
		want[id] = true
	}
	p := &plannedSegment{}
	for _, c := range all {
		if want[c.id] {
			p.chunks = append(p.chunks, c)
			p.used += c.size
		}
	}
	if len(p.chunks) != len(ids) {
		t.Fatalf("scan found %d of the %d chunks pending", len(p.chunks), len(ids))
	}
	return p
}

// upload uploads a planned segment as the engine does, trying again while
// the network refuses it (a loaded machine can leave too few nodes healthy
// for a moment); a panic is not retried.
func (e *engine) upload(t *testing.T, p *plannedSegment) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := e.r.uploadSegment(p)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// uploadPending uploads every pending chunk in one segment, if any.
func (e *engine) uploadPending(t *testing.T) {
	t.Helper()
	all, err := e.r.pending()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 {
		return
	}
	p := &plannedSegment{chunks: all}
	for _, c := range all {
		p.used += c.size
	}
	e.upload(t, p)
}

// checkUploaded asserts that exactly the chunks in want have a location,
// and that the network copy of their segment holds their bytes there.
func (e *engine) checkUploaded(t *testing.T, want map[meta.ChunkID][]byte, gone []meta.ChunkID) {
	t.Helper()
	for _, id := range gone {
		if _, err := e.idx.GetLocation(id); err == nil {
			t.Fatalf("chunk %s was deleted before the pack but has a location", id)
		}
	}
	segs := map[meta.SegmentID][]byte{}
	for id, d := range want {
		loc, err := e.idx.GetLocation(id)
		if err != nil {
			t.Fatalf("chunk %s: no location after the upload: %v", id, err)
		}
		data, ok := segs[loc.Segment]
		if !ok {
			seg, err := e.idx.GetSegment(loc.Segment)
			if err != nil {
				t.Fatal(err)
			}
			// Generous: under -race on a loaded machine a dial alone
			// took over 5 s (a failed clean-clone CI run). A node that
			// does not answer is backed up after the hedge.
			if data, err = FetchSegment(e.p.Context(), e.p.Client, fnet.SegmentID(seg.ID), int(seg.Class), time.Minute, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			segs[loc.Segment] = data
		}
		end := int(loc.Offset) + int(loc.Length)
		if end > len(data) || !bytes.Equal(data[loc.Offset:end], d) {
			t.Fatalf("chunk %s: the segment does not hold its %d bytes at %d+%d", id, len(d), loc.Offset, loc.Length)
		}
	}
}

// TestUploadAfterChunksVanished deletes and replaces chunks between the
// scan that planned a segment and the upload that packs it, as a busy file
// system does. The uploader used to lose the chunks already packed and
// panic on the padding (the mount died: "slice bounds out of range
// [:69632] with capacity 0").
func TestUploadAfterChunksVanished(t *testing.T) {
	e := newEngine(t, nil)
	rng := rand.New(rand.NewPCG(16, 21))
	cases := []struct {
		name  string
		sizes []int
		del   []int // deleted after the scan
		grow  map[int]int
	}{
		{name: "last deleted", sizes: []int{3000, 5000, 7000}, del: []int{2}},
		{name: "middle deleted", sizes: []int{40000, 9000, 30000}, del: []int{1}},
		{name: "all deleted", sizes: []int{1000, 2000}, del: []int{0, 1}},
		// A chunk bigger than the scan said: the buffer planned for the
		// class no longer holds it.
		{name: "grown past the class", sizes: []int{30000, 1000, 2000}, grow: map[int]int{1: 60000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ids, data := e.addChunks(t, rng, tc.sizes...)
			p := e.planFor(t, ids)
			var gone []meta.ChunkID
			for _, i := range tc.del {
				if err := e.store.Delete(ids[i]); err != nil {
					t.Fatal(err)
				}
				delete(data, ids[i])
				gone = append(gone, ids[i])
			}
			for i, n := range tc.grow {
				d := make([]byte, n)
				for j := range d {
					d[j] = byte(rng.Uint32())
				}
				e.store.Delete(ids[i])
				if err := e.store.Put(ids[i], d); err != nil {
					t.Fatal(err)
				}
				data[ids[i]] = d
			}
			e.upload(t, p)
			e.checkUploaded(t, data, gone)
		})
	}
}

// TestPackSegment checks packing against the store as it is at pack time.
func TestPackSegment(t *testing.T) {
	id := func(i byte) meta.ChunkID { return meta.ChunkID{i} }
	store := map[meta.ChunkID][]byte{
		id(1): bytes.Repeat([]byte{1}, 10),
		id(2): bytes.Repeat([]byte{2}, 20),
		id(4): bytes.Repeat([]byte{4}, 40),
	}
	get := fakeGet(store, nil)
	plan := []pendingChunk{{id: id(1), size: 10}, {id: id(2), size: 20}, {id: id(3), size: 30}, {id: id(4), size: 5}}
	p, skipped, err := packSegment(get, plan, 100)
	if err != nil || len(skipped) != 0 {
		t.Fatal(err, skipped)
	}
	want := append(append(append([]byte{}, store[id(1)]...), store[id(2)]...), store[id(4)]...)
	if !bytes.Equal(p.content, want) {
		t.Fatalf("content %v, want %v", p.content, want)
	}
	if fmt.Sprint(p.locs) != fmt.Sprint([]meta.Location{{Offset: 0, Length: 10}, {Offset: 10, Length: 20}, {Offset: 30, Length: 40}}) {
		t.Fatalf("locations %v", p.locs)
	}
	// Chunk 4 grew past the limit: left for another segment.
	p, skipped, err = packSegment(get, plan, 69)
	if err != nil || len(skipped) != 1 || len(p.ids) != 2 || len(p.content) != 30 {
		t.Fatalf("limit 69: %d ids, %d bytes, skipped %v, err %v", len(p.ids), len(p.content), skipped, err)
	}
	// A read error fails the segment.
	boom := errors.New("disk error")
	if _, _, err = packSegment(fakeGet(store, map[meta.ChunkID]error{id(2): boom}), plan, 100); !errors.Is(err, boom) {
		t.Fatalf("read error: got %v", err)
	}
	// Padding: to the class, whatever the capacity of the content.
	for _, c := range [][]byte{nil, make([]byte, 5, 5), make([]byte, 5, 1<<17)} {
		d, err := padToClass(c, SizeClasses[0])
		if err != nil || len(d) != SizeClasses[0] {
			t.Fatalf("padToClass(len %d cap %d): %d bytes, %v", len(c), cap(c), len(d), err)
		}
	}
	if _, err := padToClass(make([]byte, 10), 5); err == nil {
		t.Fatal("padToClass accepted content bigger than the class")
	}
}

// fakeGet is a chunk store in memory that behaves as badly as a Get may:
// on an error it returns nil, not dst.
func fakeGet(store map[meta.ChunkID][]byte, fail map[meta.ChunkID]error) chunkGetter {
	return func(id meta.ChunkID, dst []byte) ([]byte, error) {
		if err := fail[id]; err != nil {
			return nil, err
		}
		d, ok := store[id]
		if !ok {
			return nil, fmt.Errorf("chunk %s: %w", id, chunkstore.ErrNotFound)
		}
		return append(dst, d...), nil
	}
}

// FuzzPackSegment plans a random set of chunks, then deletes, grows,
// shrinks and breaks some of them before packing, as files that change
// while a segment is built do. The packed segment must hold exactly the
// chunks that are there at pack time and fit, each at its location.
func FuzzPackSegment(f *testing.F) {
	f.Add(uint64(1), uint8(5), uint32(70000), uint8(60))
	f.Add(uint64(2), uint8(1), uint32(100), uint8(255))
	f.Add(uint64(3), uint8(20), uint32(1<<17), uint8(10))
	f.Add(uint64(4), uint8(8), uint32(0), uint8(0))
	f.Fuzz(func(t *testing.T, seed uint64, n uint8, limit uint32, churn uint8) {
		rng := rand.New(rand.NewPCG(seed, uint64(n)<<32|uint64(limit)))
		lim := int(limit % (1 << 18))
		count := int(n % 32)
		store := map[meta.ChunkID][]byte{}
		fail := map[meta.ChunkID]error{}
		var plan []pendingChunk
		maxChunk := max(1, lim/3+1)
		for i := 0; i < count; i++ {
			var id meta.ChunkID
			id[0], id[1] = byte(i), byte(seed)
			size := 1 + rng.IntN(maxChunk)
			d := make([]byte, size)
			d[0], d[size-1] = byte(i), byte(i+1)
			store[id] = d
			plan = append(plan, pendingChunk{id: id, ino: uint64(i % 3), size: size})
		}
		// Between the scan and the pack.
		boom := errors.New("unreadable")
		for _, c := range plan {
			if rng.IntN(256) >= int(churn) {
				continue
			}
			switch rng.IntN(4) {
			case 0:
				delete(store, c.id)
			case 1:
				store[c.id] = make([]byte, 1+rng.IntN(2*maxChunk)) // replaced, any size
			case 2:
				store[c.id] = store[c.id][:1+rng.IntN(len(store[c.id]))]
			case 3:
				if rng.IntN(8) == 0 {
					fail[c.id] = boom
				}
			}
		}
		p, skipped, err := packSegment(fakeGet(store, fail), plan, lim)
		// What a correct pack holds: the chunks present, in plan order,
		// each that still fits the limit.
		var want []meta.ChunkID
		wantSkipped, used := 0, 0
		failed := false
		for _, c := range plan {
			if fail[c.id] != nil {
				failed = true
				break
			}
			d, ok := store[c.id]
			if !ok {
				continue
			}
			if used+len(d) > lim {
				wantSkipped++
				continue
			}
			used += len(d)
			want = append(want, c.id)
		}
		if failed {
			if !errors.Is(err, boom) {
				t.Fatalf("a chunk could not be read, yet packSegment returned %v", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(skipped) != wantSkipped || len(p.ids) != len(want) || len(p.locs) != len(p.ids) || len(p.content) != used {
			t.Fatalf("packed %d chunks in %d bytes, skipped %d; want %d in %d, skipped %d",
				len(p.ids), len(p.content), len(skipped), len(want), used, wantSkipped)
		}
		off := 0
		for i, id := range p.ids {
			if id != want[i] {
				t.Fatalf("chunk %d is %s, want %s", i, id, want[i])
			}
			l := p.locs[i]
			if int(l.Offset) != off || int(l.Length) != len(store[id]) || !bytes.Equal(p.content[off:off+int(l.Length)], store[id]) {
				t.Fatalf("chunk %d at %d+%d does not hold its %d bytes (expected at %d)", i, l.Offset, l.Length, len(store[id]), off)
			}
			off += int(l.Length)
		}
		if class := classFor(len(p.content)); class > 0 {
			d, err := padToClass(p.content, class)
			if err != nil || len(d) != class || !bytes.Equal(d[:len(p.content)], p.content) {
				t.Fatalf("padding %d bytes to class %d: %d bytes, %v", len(p.content), class, len(d), err)
			}
		}
	})
}

// TestRepackKeepsLocationWhenCacheCannotKeepChunk: repacking brings a
// segment's live chunks back into the local store, then forgets their
// locations. When the store cannot keep a fetched chunk (here: its
// directory is immutable, as a full disk would refuse it), the location
// must stay: otherwise the chunk is pending with no copy anywhere once the
// old segment is released.
func TestRepackKeepsLocationWhenCacheCannotKeepChunk(t *testing.T) {
	e := newEngine(t, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	ids, _ := e.addChunks(t, rng, 5000)
	e.upload(t, e.planFor(t, ids))
	loc, err := e.idx.GetLocation(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	seg, err := e.idx.GetSegment(loc.Segment)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := e.r.EvictAll(); err != nil || n != 1 {
		t.Fatalf("evicted %d, %v", n, err)
	}
	// What the store writes a chunk into, made immutable: the chunk's
	// directory (format 1), or the packs and their directory (format 2).
	frozen := []string{filepath.Dir(e.store.Path(ids[0]))}
	if e.store.Format() == chunkstore.FormatPacks {
		d := filepath.Join(e.store.Dir(), "packs")
		frozen = []string{d}
		ents, _ := os.ReadDir(d)
		for _, en := range ents {
			frozen = append(frozen, filepath.Join(d, en.Name()))
		}
	}
	for _, f := range frozen {
		if out, err := exec.Command("chattr", "+i", f).CombinedOutput(); err != nil {
			t.Skipf("chattr +i: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("chattr", "-i", f).Run() })
	}
	if err := e.r.repack(seg, ids, liveRefsOf(t, e.idx, ids)); err == nil {
		t.Fatal("repack succeeded though the store could not keep the chunk")
	}
	if _, err := e.idx.GetLocation(ids[0]); err != nil {
		t.Fatalf("repack dropped the location of a chunk the store does not hold: %v", err)
	}
	for _, f := range frozen {
		exec.Command("chattr", "-i", f).Run()
	}
	if err := e.r.repack(seg, ids, liveRefsOf(t, e.idx, ids)); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.store.Has(ids[0]); !ok {
		t.Fatal("repack left the chunk out of the local store")
	}
}

// liveRefsOf is where each of ids is referenced (repack's argument).
func liveRefsOf(t *testing.T, idx *meta.Index, ids []meta.ChunkID) []liveRef {
	t.Helper()
	at := map[meta.ChunkID]liveRef{}
	if err := idx.Walk(meta.Visitor{Chunk: func(ino, i uint64, ref meta.ChunkRef) {
		at[ref.ID] = liveRef{ino: ino, idx: i, size: ref.Len + vault.Overhead}
	}}); err != nil {
		t.Fatal(err)
	}
	out := make([]liveRef, len(ids))
	for i, id := range ids {
		out[i] = at[id]
	}
	return out
}

// dataSegments counts the data segments the engine's index records.
func (e *engine) dataSegments() int {
	n := 0
	e.idx.Segments(func(s meta.Segment) error {
		if s.Kind == meta.KindData {
			n++
		}
		return nil
	})
	return n
}
