package chunkstore

import (
	"encoding/binary"
	"iter"
	"math/bits"

	"github.com/fincrypt/fincrypt/meta"
)

// chunkTable is the packs' map of chunk id -> slot: open addressing with
// linear probing over one array of 32-byte entries that hold no pointer
// (the garbage collector does not scan it). Opening a store sizes it for
// the chunks the packs' indexes list, at tableOpenLoad: at a million chunks
// it takes 46 MB where a Go map made with that hint took 78 MB (its tables
// round up to powers of two), and loading it touches one entry per record
// where the map touched two. It is not safe for concurrent use (packSet.mu
// guards it).
type chunkTable struct {
	ents []tableEntry
	n    int // entries in use
}

type tableEntry struct {
	id meta.ChunkID
	s  slot // s.pack holds the pack's index plus one: 0 marks a free entry
}

const (
	// tableOpenLoad is the share of the entries in use after a table is
	// made for a known number of chunks; tableMaxLoad the share at which
	// it grows (by tableGrow). A look-up of a missing id reads about
	// (1+1/(1-load)^2)/2 entries: 6 at 0.7, 13 at 0.8 (two to a cache line).
	tableOpenLoad = 0.7
	tableMaxLoad  = 0.8
	tableGrow     = 1.5
	tableMinSize  = 16
)

// newChunkTable returns a table with room for n chunks at tableOpenLoad.
func newChunkTable(n int) *chunkTable {
	return &chunkTable{ents: make([]tableEntry, max(tableMinSize, int(float64(n)/tableOpenLoad)+1))}
}

// mix64 is the finalizer of MurmurHash3: ids are random, but tests use
// small ones, which must not pile up on a few entries.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// home is the entry where id's probe starts.
func (t *chunkTable) home(id *meta.ChunkID) int {
	h := mix64(binary.LittleEndian.Uint64(id[:8]) ^ mix64(binary.LittleEndian.Uint64(id[8:])))
	i, _ := bits.Mul64(h, uint64(len(t.ents)))
	return int(i)
}

// find returns the entry holding id, or the free entry where it would go.
func (t *chunkTable) find(id *meta.ChunkID) (int, bool) {
	i := t.home(id)
	for {
		e := &t.ents[i]
		if e.s.pack == 0 {
			return i, false
		}
		if e.id == *id {
			return i, true
		}
		if i++; i == len(t.ents) {
			i = 0
		}
	}
}

func (t *chunkTable) len() int { return t.n }

// get returns id's slot.
func (t *chunkTable) get(id meta.ChunkID) (slot, bool) {
	i, ok := t.find(&id)
	if !ok {
		return slot{}, false
	}
	s := t.ents[i].s
	s.pack--
	return s, true
}

// has reports whether id is in the table.
func (t *chunkTable) has(id meta.ChunkID) bool {
	_, ok := t.find(&id)
	return ok
}

// put sets id's slot and returns the one it replaces, if any.
func (t *chunkTable) put(id meta.ChunkID, s slot) (prev slot, replaced bool) {
	i, ok := t.find(&id)
	if ok {
		prev = t.ents[i].s
		prev.pack--
	} else {
		if float64(t.n+1) > tableMaxLoad*float64(len(t.ents)) {
			t.resize(int(float64(len(t.ents))*tableGrow) + 1)
			i, _ = t.find(&id)
		}
		t.n++
	}
	s.pack++
	t.ents[i] = tableEntry{id: id, s: s}
	return prev, ok
}

// del removes id. The entries after it in its run move back to fill the
// gap (backward-shift deletion), so that no probe stops early and no
// tombstone is left.
func (t *chunkTable) del(id meta.ChunkID) {
	i, ok := t.find(&id)
	if !ok {
		return
	}
	t.n--
	j := i
	for {
		if j++; j == len(t.ents) {
			j = 0
		}
		if t.ents[j].s.pack == 0 {
			break
		}
		// The entry at j stays if its home lies cyclically in (i, j]:
		// its probe does not pass the gap at i.
		k := t.home(&t.ents[j].id)
		if i <= j {
			if i < k && k <= j {
				continue
			}
		} else if i < k || k <= j {
			continue
		}
		t.ents[i] = t.ents[j]
		i = j
	}
	t.ents[i] = tableEntry{}
}

// resize moves every entry to a table of n entries.
func (t *chunkTable) resize(n int) {
	old := t.ents
	t.ents = make([]tableEntry, max(n, tableMinSize))
	for k := range old {
		if old[k].s.pack != 0 {
			i, _ := t.find(&old[k].id)
			t.ents[i] = old[k]
		}
	}
}

// all yields every id and its slot; the loop must not change the table.
func (t *chunkTable) all() iter.Seq2[meta.ChunkID, slot] {
	return func(yield func(meta.ChunkID, slot) bool) {
		for k := range t.ents {
			if e := &t.ents[k]; e.s.pack != 0 {
				s := e.s
				s.pack--
				if !yield(e.id, s) {
					return
				}
			}
		}
	}
}
