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

// TestPowerLossKeepsReleases: a deletion the node acknowledged stays
// recorded as a release across a power cut. The release is what refuses a
// replayed put ticket for the deleted piece (Endpoint.checkReleased): lost,
// a client's old ticket could store the piece again, on the operator's
// disk and unpaid. Seeded puts and deletes, each run cut after its last
// delete; after the "reboot" every deleted piece is gone and released.
func TestPowerLossKeepsReleases(t *testing.T) {
	runs := powerloss.Runs(t, powerloss.DefaultRuns)
	for seed := 0; seed < runs; seed++ {
		powerLossReleases(t, uint64(seed))
	}
}

func powerLossReleases(t *testing.T, seed uint64) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 21))
	mem := vfs.NewCrashableMem()
	opt := DiskStoreOptions{Capacity: 1 << 30, Logger: slog.New(slog.DiscardHandler), FS: mem}
	const dir = "/node/data"
	st, err := OpenDiskStore(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	var ids []challenge.PieceID
	deleted := map[challenge.PieceID]bool{}
	steps := 2 + rng.IntN(12)
	for step := 0; step < steps; step++ {
		data := make([]byte, 1+rng.IntN(8<<10))
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
		ids = append(ids, id)
		// Delete some, always at least the last step's: the cut comes
		// right after an acknowledged delete.
		if rng.IntN(2) == 0 || step == steps-1 {
			del := ids[rng.IntN(len(ids))]
			if step == steps-1 {
				del = id
			}
			if err := st.Delete(del); err != nil {
				t.Fatal(err)
			}
			deleted[del] = true
		}
	}
	clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(50), RNG: rand.New(rand.NewPCG(seed, 22))})
	st.Close()

	opt.FS = clone
	st, err = OpenDiskStore(dir, opt)
	if err != nil {
		t.Fatalf("seed %d: the piece store does not open after the power cut: %v", seed, err)
	}
	defer st.Close()
	for id := range deleted {
		if _, err := st.Stat(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("seed %d: deleted piece %s came back: %v", seed, id, err)
		}
		if _, ok := st.ReleasedAt(id); !ok {
			t.Fatalf("seed %d: deleted piece %s: its release was lost in the power cut (a replayed put ticket would store it again)", seed, id)
		}
	}
}
