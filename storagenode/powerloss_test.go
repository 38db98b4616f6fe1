package storagenode

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/internal/powerloss"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestPowerLossPieceStore runs a storage node's piece store (piece files
// and index) on a file system that loses what was not synced, uploads and
// deletes seeded random pieces, cuts the power at a random step, and checks
// after the "reboot" (which reconciles files and index) that every piece
// whose upload was acknowledged is there, indexed and byte-identical, and
// that no acknowledged deletion came back.
func TestPowerLossPieceStore(t *testing.T) {
	runs := powerloss.Runs(t, powerloss.DefaultRuns)
	for seed := 0; seed < runs; seed++ {
		powerLossPieces(t, uint64(seed))
	}
}

func powerLossPieces(t *testing.T, seed uint64) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 5))
	mem := vfs.NewCrashableMem()
	opt := DiskStoreOptions{Capacity: 1 << 30, Logger: slog.New(slog.DiscardHandler), FS: mem}
	const dir = "/node/data"
	st, err := OpenDiskStore(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[challenge.PieceID][]byte{}
	deleted := map[challenge.PieceID]bool{}
	var ids []challenge.PieceID
	steps := 5 + rng.IntN(30)
	crashAt := rng.IntN(steps + 1)
	for step := 0; step < crashAt; step++ {
		if len(ids) > 0 && rng.IntN(4) == 0 {
			i := rng.IntN(len(ids))
			id := ids[i]
			ids = append(ids[:i], ids[i+1:]...)
			if err := st.Delete(id); err != nil {
				t.Fatal(err)
			}
			delete(stored, id)
			deleted[id] = true
			continue
		}
		data := make([]byte, 1+rng.IntN(40<<10))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		id, err := challenge.ComputeID(data)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Put(ctx, id, int64(len(data)), fnet.AccountID{1}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		stored[id] = data
		ids = append(ids, id)
	}
	clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(50), RNG: rand.New(rand.NewPCG(seed, 6))})
	st.Close()

	opt.FS = clone
	st, err = OpenDiskStore(dir, opt)
	if err != nil {
		t.Fatalf("seed %d: the piece store does not open after the power cut: %v", seed, err)
	}
	defer st.Close()
	for id, data := range stored {
		info, err := st.Stat(id)
		if err != nil {
			t.Fatalf("seed %d: acknowledged piece %s lost: %v", seed, id, err)
		}
		if info.Account != (fnet.AccountID{1}) {
			t.Fatalf("seed %d: piece %s lost its index entry (re-indexed without its account)", seed, id)
		}
		p, err := st.Open(id)
		if err != nil {
			t.Fatalf("seed %d: piece %s: %v", seed, id, err)
		}
		got := make([]byte, len(data))
		_, err = p.ReadAt(got, 0)
		p.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("seed %d: piece %s does not read back (%v)", seed, id, err)
		}
	}
	for id := range deleted {
		if _, err := st.Stat(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("seed %d: deleted piece %s came back: %v", seed, id, err)
		}
	}
}
