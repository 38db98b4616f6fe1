package storagenode

import (
	"errors"
	"testing"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/internal/powerloss"
)

// TestPowerLossKeepsReleases: a deletion the node acknowledged stays
// recorded as a release across a power cut. The release is what refuses a
// replayed put ticket for the deleted piece (Endpoint.checkReleased): lost,
// a client's old ticket could store the piece again, on the operator's
// disk and unpaid. Seeded puts and deletes, each run cut after its last
// delete; after the "reboot" every deleted piece is gone and released.
func TestPowerLossKeepsReleases(t *testing.T) {
	powerloss.Seeds(t, powerloss.DefaultRuns, func(seed uint64) { powerLossReleases(t, seed) })
}

func powerLossReleases(t *testing.T, seed uint64) {
	disk := powerloss.NewDisk(seed, 21)
	rng := disk.Rand
	st := openCutPieces(t, disk.MemFS)
	var ids []challenge.PieceID
	deleted := map[challenge.PieceID]bool{}
	steps := 2 + rng.IntN(12)
	for step := 0; step < steps; step++ {
		id, _ := putRandomPiece(t, st, rng, 8<<10)
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
	st = cutPieces(t, seed, disk, st)
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
