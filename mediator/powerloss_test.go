package mediator

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/internal/powerloss"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestPowerLossStore runs the mediator's store on a file system that loses
// what was not synced, commits seeded random contracts (what an upload
// receipt acknowledges), period records (what settlements are computed
// from), repairs and counters, cuts the power at a random step, and checks
// after the "reboot" that everything acknowledged is there and that no
// period record counts twice.
func TestPowerLossStore(t *testing.T) {
	powerloss.Seeds(t, powerloss.DefaultRuns, func(seed uint64) { powerLossStore(t, seed) })
}

// openCutStore opens the mediator's store on fs.
func openCutStore(t *testing.T, fs vfs.FS) *PebbleStore {
	t.Helper()
	st, err := OpenPebbleStore("/mediator/db", PebbleOptions{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// cutPower cuts the power under st (closed after the cut, as a process
// that never ran again) and opens the store on what the disk kept.
func cutPower(t *testing.T, seed uint64, disk *powerloss.Disk, st *PebbleStore) *PebbleStore {
	t.Helper()
	clone := disk.Cut()
	st.Close()
	st, err := OpenPebbleStore("/mediator/db", PebbleOptions{FS: clone})
	if err != nil {
		t.Fatalf("seed %d: the store does not open after the power cut: %v", seed, err)
	}
	return st
}

func powerLossStore(t *testing.T, seed uint64) {
	ctx := context.Background()
	disk := powerloss.NewDisk(seed, 3)
	rng := disk.Rand
	st := openCutStore(t, disk.MemFS)
	randID := func() (b [32]byte) { powerloss.Fill(rng, b[:]); return b }
	acct := fnet.AccountID(randID())
	segs := map[SegmentID]*Segment{}
	var periods []PeriodRecord
	var counter int64
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := 5 + rng.IntN(40)
	crashAt := rng.IntN(steps + 1)
	for step := 0; step < crashAt; step++ {
		switch op := rng.IntN(4); op {
		case 0, 1: // an upload receipt: the segment's contract committed
			var id SegmentID
			r := randID()
			copy(id[:], r[:16])
			seg := &Segment{ID: id, Account: acct, Scheme: erasure.Scheme{K: 2, N: 4}, PieceSize: 4096, Created: base}
			for i := 0; i < 4; i++ {
				seg.Pieces = append(seg.Pieces, Piece{Index: i, ID: randID(), Node: fnet.NodeID(randID()), State: PieceHealthy})
			}
			if err := st.CommitSegment(ctx, seg); err != nil {
				t.Fatal(err)
			}
			segs[id] = seg
		case 2: // a period's records
			rec := PeriodRecord{Period: base.Add(time.Duration(len(periods)+1) * time.Hour), Node: fnet.NodeID(randID()), Account: acct,
				Bytes: uint64(1 + rng.IntN(1<<30)), Pieces: 1, Passed: 1, Price: 100}
			if err := st.PutPeriodRecords(ctx, []PeriodRecord{rec}); err != nil {
				t.Fatal(err)
			}
			periods = append(periods, rec)
		case 3:
			v, err := st.AddCounter(ctx, "repaired", 1)
			if err != nil {
				t.Fatal(err)
			}
			counter = v
		}
	}
	st = cutPower(t, seed, disk, st)
	defer st.Close()
	for id, want := range segs {
		got, err := st.GetSegment(ctx, id)
		if err != nil {
			t.Fatalf("seed %d: committed segment %s lost: %v", seed, id, err)
		}
		if len(got.Pieces) != len(want.Pieces) || got.Pieces[3].ID != want.Pieces[3].ID {
			t.Fatalf("seed %d: segment %s came back different", seed, id)
		}
	}
	recs, err := st.PeriodRecords(ctx, base, base.Add(1000*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(periods) {
		t.Fatalf("seed %d: %d period records after the power cut, %d acknowledged", seed, len(recs), len(periods))
	}
	if v, err := st.Counter(ctx, "repaired"); err != nil || v != counter {
		t.Fatalf("seed %d: counter %d after the power cut, %d acknowledged (%v)", seed, v, counter, err)
	}
}
