package fs_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	fincryptfs "github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/internal/powerloss"
	"github.com/fincrypt/fincrypt/vault"
)

// TestPowerLossMount runs the mount with its index and chunk store on a
// crashable in-memory file system (Options.FS), cuts the power at a seeded
// point of a seeded workload of writes, fsyncs, renames and removals, and
// mounts what the disk kept: every file whose fsync(2) returned reads back
// as it was then (fsync of a file makes its data and every index commit
// before it durable: its name too), and a rename or removal made durable by
// an fsync of the directory stays done. Then files written without fsync
// and a clean unmount: a power cut after it keeps them all. It is the
// power-loss test of the mount's own sync points (fsync of a file, of a
// directory, the unmount); a kill -9 (TestCrashDurability) keeps the page
// cache and cannot see them.
func TestPowerLossMount(t *testing.T) {
	requireFUSE(t)
	powerloss.Seeds(t, powerloss.DefaultRuns, func(seed uint64) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { powerLossMount(t, seed) })
	})
}

func powerLossMount(t *testing.T, seed uint64) {
	disk := powerloss.NewDisk(seed, 0)
	rng := disk.Rand
	home := newVault(t, vault.CreateOptions{ChunkSize: 64 << 10})
	// The index and the store live on disk; the space guard measures the
	// index directory's file system, the real one.
	if err := os.MkdirAll(filepath.Join(home, vault.IndexDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	// No background sync: only the workload's fsyncs make anything durable.
	opt := fincryptfs.Options{FS: disk, SyncInterval: time.Hour, CommitOpenAfter: -1}
	tm := mountVaultOpt(t, home, opt)

	acked := map[string][]byte{} // name -> content at its last fsync
	gone := map[string]bool{}    // names whose removal an fsync made durable
	var names []string           // acknowledged names, for the picks
	pick := func() string {
		names = names[:0]
		for n := range acked {
			names = append(names, n)
		}
		sort.Strings(names)
		if len(names) == 0 {
			return ""
		}
		return names[rng.IntN(len(names))]
	}
	syncDir := func(dir string) {
		d, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.Sync(); err != nil {
			t.Fatalf("fsync %s: %v", dir, err)
		}
	}
	if err := os.Mkdir(tm.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	const ops = 24
	cutAt := rng.IntN(ops + 1)
	for op, next := 0, 0; op < cutAt; op++ {
		switch k := rng.IntN(6); {
		case k <= 1 || len(acked) == 0: // a new file, fsynced
			name := filepath.Join([]string{"", "d"}[rng.IntN(2)], fmt.Sprintf("f%d", next))
			next++
			data := powerloss.Fill(rng, make([]byte, 1+rng.IntN(200<<10)))
			if !writeSynced(tm.path(name), os.O_EXCL, data) {
				t.Fatalf("write and fsync of new file %s failed", name)
			}
			acked[name] = data
			delete(gone, name)
		case k == 2: // part of an acknowledged file rewritten, fsynced
			name := pick()
			data := append([]byte(nil), acked[name]...)
			off := rng.IntN(len(data) + 1)
			part := powerloss.Fill(rng, make([]byte, 1+rng.IntN(100<<10)))
			if end := off + len(part); end > len(data) {
				data = append(data, make([]byte, end-len(data))...)
			}
			copy(data[off:], part)
			f, err := os.OpenFile(tm.path(name), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(part, int64(off)); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatalf("fsync %s: %v", name, err)
			}
			f.Close()
			acked[name] = data
		case k == 3: // a file written and closed without fsync: not acknowledged
			name := fmt.Sprintf("u%d", next)
			next++
			writeFile(t, tm.path(name), powerloss.Fill(rng, make([]byte, 1+rng.IntN(200<<10))))
		case k == 4: // an acknowledged file renamed, the directories fsynced
			from := pick()
			to := filepath.Join([]string{"", "d"}[rng.IntN(2)], fmt.Sprintf("r%d", next))
			next++
			if err := os.Rename(tm.path(from), tm.path(to)); err != nil {
				t.Fatal(err)
			}
			syncDir(filepath.Dir(tm.path(to)))
			syncDir(filepath.Dir(tm.path(from)))
			acked[to] = acked[from]
			delete(acked, from)
			gone[from] = true
			delete(gone, to)
		case k == 5: // an acknowledged file removed, its directory fsynced
			name := pick()
			if err := os.Remove(tm.path(name)); err != nil {
				t.Fatal(err)
			}
			syncDir(filepath.Dir(tm.path(name)))
			delete(acked, name)
			gone[name] = true
		}
	}
	cut := disk.Cut()
	tm.unmount()
	// The power cut came before the clean unmount could leave its record.
	if err := os.Remove(filepath.Join(home, fincryptfs.CleanFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	opt.FS = cut
	after := mountVaultOpt(t, home, opt)
	for name, want := range acked {
		got, err := os.ReadFile(after.path(name))
		if err != nil {
			t.Fatalf("seed %d, cut before op %d: file %s, fsynced, after the power cut: %v", seed, cutAt, name, err)
		}
		mustEqual(t, fmt.Sprintf("seed %d, cut before op %d: file %s, fsynced, after the power cut", seed, cutAt, name), got, want)
	}
	for name := range gone {
		if _, err := os.Lstat(after.path(name)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("seed %d, cut before op %d: %s came back after its rename or removal was fsynced (%v)", seed, cutAt, name, err)
		}
	}

	// Files written without fsync, then a clean unmount: everything is
	// durable when it returns (a power cut right after keeps only what was
	// synced, nothing more).
	for i := range 1 + rng.IntN(4) {
		name := fmt.Sprintf("c%d", i)
		data := powerloss.Fill(rng, make([]byte, 1+rng.IntN(200<<10)))
		writeFile(t, after.path(name), data)
		acked[name] = data
	}
	after.unmount()
	opt.FS = cut.CrashClone(vfs.CrashCloneCfg{})
	again := mountVaultOpt(t, home, opt)
	for name, want := range acked {
		got, err := os.ReadFile(again.path(name))
		if err != nil {
			t.Fatalf("seed %d: file %s after a clean unmount and a power cut: %v", seed, name, err)
		}
		mustEqual(t, fmt.Sprintf("seed %d: file %s after a clean unmount and a power cut", seed, name), got, want)
	}
}
