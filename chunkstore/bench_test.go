package chunkstore_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
)

// benchEnv reads a positive integer from the environment.
func benchEnv(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// BenchmarkStoreOpen measures opening a format 2 store of
// FINCRYPT_BENCH_CHUNKS chunks (default 10000; `make bench` keeps the
// default, the figure is 1000000) of FINCRYPT_BENCH_CHUNK_SIZE
// bytes (default 1024), sealed in packs by an earlier session: warm (the
// packs in the page cache) and cold (evicted from it with
// posix_fadvise(DONTNEED), file by file: nobody else's cache is dropped),
// and read-only as `fincrypt check` opens it (OpenExisting: no directory
// fsyncs, whose latency on a busy disk can hide the rest). It reports the
// time of one open, the CPU time it took (the process's, from getrusage:
// steadier than the time on a shared machine) and the heap the open store
// holds.
func BenchmarkStoreOpen(b *testing.B) {
	n := benchEnv(b, "FINCRYPT_BENCH_CHUNKS", 10000)
	size := benchEnv(b, "FINCRYPT_BENCH_CHUNK_SIZE", 1024)
	dir := filepath.Join(b.TempDir(), "store")
	s, err := chunkstore.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	ids := make([]meta.ChunkID, n)
	for i := range n {
		ids[i] = chunkstore.NewID()
		if err := s.Put(ids[i], buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil {
		b.Fatal(err)
	}
	s.Close()
	// A first open as the next mount does (it may write what later opens
	// read), then the measured ones.
	s, err = chunkstore.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		b.Fatal(err)
	}
	s.Close()
	for _, mode := range []string{"warm", "cold", "readonly"} {
		cold, name := mode == "cold", mode
		b.Run(fmt.Sprintf("chunks=%d/%s", n, name), func(b *testing.B) {
			var heap uint64
			var cpu time.Duration
			for range b.N {
				if cold {
					b.StopTimer()
					evict(b, dir)
					b.StartTimer()
				}
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				c0 := cpuTime(b)
				var s *chunkstore.Store
				var err error
				if mode == "readonly" {
					s, err = chunkstore.OpenExisting(dir)
				} else {
					s, err = chunkstore.Open(dir)
				}
				if err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime(b) - c0
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap = after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
				if _, ok := s.Has(ids[rng.IntN(n)]); !ok {
					b.Fatal("a chunk is missing after the open")
				}
				runtime.KeepAlive(s)
				s.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
			b.ReportMetric(float64(heap)/float64(n), "heap-B/chunk")
		})
	}
}

// cpuTime is the CPU time the process used so far (user and system).
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// evict drops the files under dir from the page cache.
func evict(b *testing.B, dir string) {
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
		return nil
	})
}

// BenchmarkPutSync compares the two store formats on many small chunks:
// 8 goroutines put FINCRYPT_BENCH_PUTS (default 10000) chunks of 4 KiB,
// as an untar through the mount does, then one Sync (the background sync
// or the unmount); in "fsync" every 100th chunk of a goroutine is also
// synced on its own (SyncIDs, a file's fsync). Each op runs both formats;
// "packs/files" is format 2's time over format 1's (below 1: packs are
// faster).
func BenchmarkPutSync(b *testing.B) {
	n := benchEnv(b, "FINCRYPT_BENCH_PUTS", 10000)
	const workers, size = 8, 4096
	for _, fsyncEvery := range []int{0, 100} {
		name := "put"
		if fsyncEvery > 0 {
			name = "fsync"
		}
		b.Run(name, func(b *testing.B) {
			var took [3]time.Duration
			for range b.N {
				for _, format := range []int{chunkstore.FormatFiles, chunkstore.FormatPacks} {
					took[format] += putSyncRun(b, format, n, workers, size, fsyncEvery)
				}
			}
			b.ReportMetric(float64(took[chunkstore.FormatFiles].Nanoseconds())/float64(b.N*n), "files-ns/chunk")
			b.ReportMetric(float64(took[chunkstore.FormatPacks].Nanoseconds())/float64(b.N*n), "packs-ns/chunk")
			b.ReportMetric(took[chunkstore.FormatPacks].Seconds()/took[chunkstore.FormatFiles].Seconds(), "packs/files")
		})
	}
}

func putSyncRun(b *testing.B, format, n, workers, size, fsyncEvery int) time.Duration {
	b.StopTimer()
	dir := filepath.Join(b.TempDir(), "store")
	s, err := chunkstore.OpenFormat(dir, format)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	bufs := make([][]byte, workers)
	for w := range bufs {
		bufs[w] = make([]byte, size)
		for i := range bufs[w] {
			bufs[w][i] = byte(w + i)
		}
	}
	runtime.GC()
	b.StartTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				id := chunkstore.NewID()
				if err := s.Put(id, bufs[w]); err != nil {
					errs <- err
					return
				}
				if fsyncEvery > 0 && (i/workers)%fsyncEvery == fsyncEvery-1 {
					if err := s.SyncIDs([]meta.ChunkID{id}); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	b.StopTimer()
	return took
}
