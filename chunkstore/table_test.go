package chunkstore

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/fincrypt/fincrypt/meta"
)

// TestChunkTableMatchesAMap runs seeded random puts, replacements and
// deletions on a chunk table and a Go map side by side, with random ids and
// small sequential ones (as tests make), through growth from the smallest
// table and in a table made for many more chunks, and compares every
// look-up, the count and the iteration after each step. A deletion that
// leaves a later entry of its run behind the gap (the shift going wrong,
// around the end of the array too) makes that entry's look-up fail here.
func TestChunkTableMatchesAMap(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sized int // newChunkTable's argument
		ids   int // distinct ids drawn from
		small bool
	}{
		{"random, growing", 0, 3000, false},
		{"small ids, growing", 0, 3000, true},
		{"random, sized", 2000, 3000, false},
		{"small ids, few", 0, 40, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.ids), uint64(tc.sized)))
			ids := make([]meta.ChunkID, tc.ids)
			for i := range ids {
				if tc.small {
					binary.BigEndian.PutUint32(ids[i][12:], uint32(i+1))
				} else {
					binary.LittleEndian.PutUint64(ids[i][:8], rng.Uint64())
					binary.LittleEndian.PutUint64(ids[i][8:], rng.Uint64())
				}
			}
			tab := newChunkTable(tc.sized)
			ref := map[meta.ChunkID]slot{}
			check := func(step int) {
				t.Helper()
				if tab.len() != len(ref) {
					t.Fatalf("step %d: %d entries, want %d", step, tab.len(), len(ref))
				}
				for _, id := range ids {
					got, ok := tab.get(id)
					want, wok := ref[id]
					if ok != wok || got != want || tab.has(id) != wok {
						t.Fatalf("step %d: %x: %v %v, want %v %v", step, id, got, ok, want, wok)
					}
				}
				seen := 0
				for id, s := range tab.all() {
					if want, ok := ref[id]; !ok || want != s {
						t.Fatalf("step %d: iteration gives %x %v, want %v %v", step, id, s, want, ok)
					}
					seen++
				}
				if seen != len(ref) {
					t.Fatalf("step %d: iteration gives %d entries, want %d", step, seen, len(ref))
				}
			}
			for step := range 20000 {
				id := ids[rng.IntN(len(ids))]
				switch op := rng.IntN(10); {
				case op < 6:
					s := slot{pack: uint32(rng.IntN(5)), off: rng.Uint32(), n: rng.Uint32(), atime: rng.Uint32()}
					prev, replaced := tab.put(id, s)
					want, had := ref[id]
					if replaced != had || prev != want {
						t.Fatalf("step %d: put replaced %v %v, want %v %v", step, prev, replaced, want, had)
					}
					ref[id] = s
				default:
					tab.del(id)
					delete(ref, id)
				}
				if step%997 == 0 || step > 19900 {
					check(step)
				}
			}
			check(-1)
			for id := range ref { // empty it
				tab.del(id)
				delete(ref, id)
			}
			check(-2)
		})
	}
}
