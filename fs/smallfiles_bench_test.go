package fs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// smallFileCount is the number of files per target and iteration of
// BenchmarkSmallFiles; FINCRYPT_BENCH_FILES overrides it (default 2,000).
func smallFileCount() int {
	if n, err := strconv.Atoi(os.Getenv("FINCRYPT_BENCH_FILES")); err == nil && n > 0 {
		return n
	}
	return 2000
}

// smallRound is how many files one target gets before the other has its
// turn, so that both see the same load on a shared machine.
const smallRound = 200

// smallWorkload creates file i (content data) under dir, whose 10
// subdirectories exist.
type smallWorkload func(dir string, i int, data []byte) error

// createSmall is what most programs do: open(O_CREAT|O_TRUNC), one write, close.
func createSmall(dir string, i int, data []byte) error {
	return os.WriteFile(filepath.Join(dir, strconv.Itoa(i%10), strconv.Itoa(i)), data, 0o644)
}

// tarSmall is what tar x does for each file: open(O_CREAT|O_EXCL), writes of
// 10 KiB, then times, owner and mode set on the open file, then close.
func tarSmall(dir string, i int, data []byte) error {
	p := filepath.Join(dir, strconv.Itoa(i%10), strconv.Itoa(i))
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = func() error {
		for off := 0; off < len(data); off += 10 << 10 {
			if _, err := unix.Write(fd, data[off:min(off+10<<10, len(data))]); err != nil {
				return err
			}
		}
		mt := unix.NsecToTimespec(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), []unix.Timespec{mt, mt}, 0); err != nil {
			return fmt.Errorf("futimens: %w", err)
		}
		if err := unix.Fchown(fd, os.Getuid(), os.Getgid()); err != nil {
			return fmt.Errorf("fchown: %w", err)
		}
		return unix.Fchmod(fd, 0o644)
	}()
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// BenchmarkSmallFiles creates small files (1 to 16 KiB, in 10 directories)
// through a mount and in a plain directory on the same disk, in alternating
// rounds of 200 files, and reports the files/s of each and the ratio
// fincrypt/plain. "create" writes each file as os.WriteFile does, "tar" as
// tar x does (times, owner and mode set before close). A mount's round ends
// when its files are released, sealed and committed, so its background work
// is counted and does not slow the plain directory's next round.
func BenchmarkSmallFiles(b *testing.B) {
	requireFUSE(b)
	n := smallFileCount()
	data := make([][]byte, n)
	for i := range data {
		data[i] = randBytes(uint64(i), 1024+(i*2654435761)%(15*1024))
	}
	for _, w := range []struct {
		name string
		fn   smallWorkload
	}{{"create", createSmall}, {"tar", tarSmall}} {
		b.Run(w.name, func(b *testing.B) {
			tm := mountVault(b, newVault(b, fastKDF))
			plain := b.TempDir()
			run := func(dir string, from int) time.Duration {
				start := time.Now()
				if from == 0 {
					for d := 0; d < 10; d++ {
						if err := os.MkdirAll(filepath.Join(dir, strconv.Itoa(d)), 0o755); err != nil {
							b.Fatal(err)
						}
					}
				}
				for i := from; i < min(from+smallRound, n); i++ {
					if err := w.fn(dir, i, data[i]); err != nil {
						b.Fatal(err)
					}
				}
				if err := tm.m.WaitIdle(time.Minute); err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			var pt, ft time.Duration
			for it := 0; b.Loop(); it++ {
				name := "it" + strconv.Itoa(it)
				for from := 0; from < n; from += smallRound {
					pt += run(filepath.Join(plain, name), from)
					ft += run(tm.path(name), from)
				}
			}
			fps := func(d time.Duration) float64 { return float64(b.N*n) / d.Seconds() }
			b.ReportMetric(fps(ft), "fincrypt-files/s")
			b.ReportMetric(fps(pt), "plain-files/s")
			b.ReportMetric(pt.Seconds()/ft.Seconds(), "ratio")
		})
	}
}
