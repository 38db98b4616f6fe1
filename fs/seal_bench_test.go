package fs

import (
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/vault"
)

// BenchmarkSealChunk measures sealing one 1 MiB chunk, alone and with the
// write to the chunk store, against a plain copy of the same bytes (ratio).
func BenchmarkSealChunk(b *testing.B) {
	keys, err := vault.DeriveKeys(make([]byte, vault.KeySize))
	if err != nil {
		b.Fatal(err)
	}
	store, err := chunkstore.Open(filepath.Join(b.TempDir(), "store"))
	if err != nil {
		b.Fatal(err)
	}
	pt := make([]byte, 1<<20)
	dst := make([]byte, 0, len(pt)+vault.Overhead)
	b.Run("seal", func(b *testing.B) {
		b.SetBytes(int64(len(pt)))
		for i := 0; b.Loop(); i++ {
			keys.Chunk.Seal(dst[:0], pt, vault.ChunkAD(1, uint64(i), uint64(i)))
		}
	})
	b.Run("seal+store", func(b *testing.B) {
		b.SetBytes(int64(len(pt)))
		for i := 0; b.Loop(); i++ {
			ct := keys.Chunk.Seal(dst[:0], pt, vault.ChunkAD(1, uint64(i), uint64(i)))
			if err := store.Put(chunkstore.NewID(), ct); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("copy", func(b *testing.B) {
		b.SetBytes(int64(len(pt)))
		for b.Loop() {
			dst = append(dst[:0], pt...)
		}
	})
}
