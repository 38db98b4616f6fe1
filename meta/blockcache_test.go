package meta

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestBlockCacheHoldsTheIndexInUse: an index larger than Pebble's default
// 8 MiB block cache, read through twice, reads no block from its files the
// second time (BlockCacheSize). With the default the blocks evicted one
// another, and a mount's every lookup read index and filter blocks back
// from the tables.
func TestBlockCacheHoldsTheIndexInUse(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 4))
	const n, size = 6000, 4 << 10 // 24 MiB of incompressible values, in several tables
	rng := rand.New(rand.NewPCG(1, 2))
	key := func(i int) []byte { return binary.BigEndian.AppendUint32([]byte{pTreeCache, 0xfe}, uint32(i)) }
	val := make([]byte, size)
	for i := range n {
		for j := 0; j < size; j += 8 {
			binary.LittleEndian.PutUint64(val[j:], rng.Uint64())
		}
		if err := x.db.Set(key(i), val, nil); err != nil {
			t.Fatal(err)
		}
		if i%1500 == 1499 {
			if err := x.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := x.Flush(); err != nil {
		t.Fatal(err)
	}
	readAll := func() {
		for i := range n {
			v, c, err := x.db.Get(key(i))
			if err != nil || len(v) != size {
				t.Fatalf("record %d: %d bytes, %v", i, len(v), err)
			}
			c.Close()
		}
	}
	readAll()
	before := x.db.Metrics().BlockCache.Misses
	readAll()
	if m := x.db.Metrics().BlockCache.Misses - before; m != 0 {
		t.Fatalf("%d blocks read from the tables on the second read of a %d MiB index: the block cache does not hold it", m, n*size>>20)
	}
}
