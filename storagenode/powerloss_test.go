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
	powerloss.Seeds(t, powerloss.DefaultRuns, func(seed uint64) { powerLossPieces(t, seed) })
}

// openCutPieces opens a node's piece store on fs.
func openCutPieces(t *testing.T, fs vfs.FS) *DiskStore {
	t.Helper()
	st, err := OpenDiskStore("/node/data", DiskStoreOptions{Capacity: 1 << 30, Logger: slog.New(slog.DiscardHandler), FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// cutPieces cuts the power under st (closed after the cut, as a node that
// never ran again) and opens the piece store on what the disk kept (the
// "reboot" reconciles its files and index).
func cutPieces(t *testing.T, seed uint64, disk *powerloss.Disk, st *DiskStore) *DiskStore {
	t.Helper()
	clone := disk.Cut()
	st.Close()
	st, err := OpenDiskStore("/node/data", DiskStoreOptions{Capacity: 1 << 30, Logger: slog.New(slog.DiscardHandler), FS: clone})
	if err != nil {
		t.Fatalf("seed %d: the piece store does not open after the power cut: %v", seed, err)
	}
	return st
}

// putRandomPiece stores a piece of 1 to max random bytes, for account 1.
func putRandomPiece(t *testing.T, st *DiskStore, rng *rand.Rand, max int) (challenge.PieceID, []byte) {
	t.Helper()
	data := powerloss.Fill(rng, make([]byte, 1+rng.IntN(max)))
	id, err := challenge.ComputeID(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(context.Background(), id, int64(len(data)), fnet.AccountID{1}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return id, data
}

func powerLossPieces(t *testing.T, seed uint64) {
	disk := powerloss.NewDisk(seed, 5)
	rng := disk.Rand
	st := openCutPieces(t, disk.MemFS)
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
		id, data := putRandomPiece(t, st, rng, 40<<10)
		stored[id] = data
		ids = append(ids, id)
	}
	st = cutPieces(t, seed, disk, st)
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
