package replicate

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
)

// snapBenchVault is an engine on the fake network whose index holds files
// files, each an inode, a directory entry and one chunk located in a data
// segment, built directly in the index (no mount), and a first snapshot.
func snapBenchVault(b *testing.B, files int) (*engine, *fakeNet) {
	e, f := peerEngine(b, 4, nil)
	seg := meta.Segment{ID: meta.SegmentID{0xda}, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4,
		Used: 1 << 30, Class: 1 << 30, Created: time.Now().UnixNano()}
	commit(b, e.idx, func(bt *meta.Batch) { bt.PutSegment(&seg) })
	for start := 0; start < files; start += 2000 {
		commit(b, e.idx, func(bt *meta.Batch) {
			for i := start; i < min(start+2000, files); i++ {
				ino := uint64(100 + i)
				var id meta.ChunkID
				binary.BigEndian.PutUint64(id[:], ino)
				bt.PutLocation(id, &meta.Location{Segment: seg.ID, Offset: uint32(i) * 4124, Length: 4124})
				bt.PutInode(&meta.Inode{Ino: ino, Mode: 0o100644, Size: 4096, Nlink: 1})
				bt.PutDirent(&meta.Dirent{Parent: meta.RootIno, Name: fmt.Sprintf("file-%07d", i), Ino: ino, Type: 0o100000})
				bt.PutChunk(ino, 0, &meta.ChunkRef{ID: id, Version: 1, Len: 4096})
			}
		})
	}
	if err := e.r.Snapshot(); err != nil {
		b.Fatal(err)
	}
	return e, f
}

// snapAfterNewFile adds one file to the index and takes a snapshot (a base
// if base, as every snapshot was before deltas): the CPU it took (this
// process: the engine, the fake mediator and nodes) and the sealed bytes it
// stored.
func snapAfterNewFile(b *testing.B, e *engine, f *fakeNet, n int, base bool) (time.Duration, uint64) {
	ino := uint64(10_000_000 + n)
	commit(b, e.idx, func(bt *meta.Batch) {
		bt.PutInode(&meta.Inode{Ino: ino, Mode: 0o100644, Nlink: 1})
		bt.PutDirent(&meta.Dirent{Parent: meta.RootIno, Name: fmt.Sprintf("new-%d", n), Ino: ino, Type: 0o100000})
	})
	if base {
		e.r.snapMu.Lock()
		e.r.chain = nil
		e.r.snapMu.Unlock()
	}
	c0, _ := cpuTime(b)
	if err := e.r.Snapshot(); err != nil {
		b.Fatal(err)
	}
	c1, _ := cpuTime(b)
	c := pointerChain(b, e, f.snapshotPointer())
	last := c.parts[len(c.parts)-1]
	if last.delta == base {
		b.Fatalf("asked for a base %v, stored a delta %v", base, last.delta)
	}
	return c1 - c0, last.sealed
}

// BenchmarkSnapshotDelta: one snapshot after one new file, in a vault of
// 10,000 and of 100,000 files, as a delta and as a base (what every
// snapshot was before; the baseline, measured in the same run, alternating,
// three pairs, medians). Figures: each one's CPU (ms) and sealed bytes,
// and the ratios delta/base at 100k and 100k/10k of each: a delta's cost
// follows the change, a base's the vault.
func BenchmarkSnapshotDelta(b *testing.B) {
	type fig struct{ cpu, bytes [2]float64 } // [base, delta]
	figs := map[int]fig{}
	for range b.N {
		sizes := []int{10_000, 100_000}
		if os.Getenv("FINCRYPT_BENCH_1M") != "" {
			sizes = append(sizes, 1_000_000) // a minute or more to build
		}
		for _, files := range sizes {
			e, f := snapBenchVault(b, files)
			var cpus [2][]float64
			var size [2]uint64
			for i := range 3 {
				for k, base := range []bool{true, false} {
					c, n := snapAfterNewFile(b, e, f, 2*i+k, base)
					cpus[k] = append(cpus[k], c.Seconds()*1000)
					size[k] = n
				}
			}
			var g fig
			for k := range 2 {
				slices.Sort(cpus[k])
				g.cpu[k], g.bytes[k] = cpus[k][1], float64(size[k])
			}
			// What a delta read of the whole index before the state sum:
			// its state hash (v1, a walk).
			kf, err := e.r.readKeyFile()
			if err != nil {
				b.Fatal(err)
			}
			h0, _ := cpuTime(b)
			if _, err := stateHash(e.idx, kf, e.idx.Export); err != nil {
				b.Fatal(err)
			}
			h1, _ := cpuTime(b)
			b.Logf("%d files: base %.1f ms (%.1f-%.1f), %d B; delta %.1f ms (%.1f-%.1f), %d B; a v1 state hash (a walk, what a delta did before) %.1f ms",
				files, g.cpu[0], cpus[0][0], cpus[0][2], size[0], g.cpu[1], cpus[1][0], cpus[1][2], size[1], (h1-h0).Seconds()*1000)
			figs[files] = g
			e.r.cancel()
		}
	}
	s, l := figs[10_000], figs[100_000]
	b.ReportMetric(l.cpu[0], "base-ms@100k")
	b.ReportMetric(l.cpu[1], "delta-ms@100k")
	b.ReportMetric(l.bytes[0], "base-B@100k")
	b.ReportMetric(l.bytes[1], "delta-B@100k")
	b.ReportMetric(l.cpu[1]/l.cpu[0], "delta/base-cpu@100k")
	b.ReportMetric(l.bytes[1]/l.bytes[0], "delta/base-B@100k")
	b.ReportMetric(l.cpu[0]/s.cpu[0], "100k/10k-base-cpu")
	b.ReportMetric(l.cpu[1]/s.cpu[1], "100k/10k-delta-cpu")
	b.ReportMetric(l.bytes[1]/s.bytes[1], "100k/10k-delta-B")
	if m, ok := figs[1_000_000]; ok {
		b.ReportMetric(m.cpu[1], "delta-ms@1M")
		b.ReportMetric(m.cpu[0], "base-ms@1M")
	}
}
