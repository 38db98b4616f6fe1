package fs_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// benchSize is the file size of the sequential benchmarks; FINCRYPT_BENCH_MB
// overrides it (default 256 MiB).
func benchSize() int {
	if mb, err := strconv.Atoi(os.Getenv("FINCRYPT_BENCH_MB")); err == nil && mb > 0 {
		return mb << 20
	}
	return 256 << 20
}

func seqWrite(b *testing.B, p string, size int, buf []byte) time.Duration {
	start := time.Now()
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	for n := 0; n < size; n += len(buf) {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func seqRead(b *testing.B, p string, buf []byte) time.Duration {
	start := time.Now()
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	for {
		_, err := f.Read(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	return time.Since(start)
}

func smallFiles(b *testing.B, dir string, n int, data []byte) time.Duration {
	start := time.Now()
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// BenchmarkThroughput compares the mount with a plain directory on the same
// disk, measured in the same run: sequential write (1 MiB writes, fsync at
// the end), sequential read, and 2,000 small files. Metrics are MB/s (files/s
// for small files) of each and the ratio fincrypt/plain.
func BenchmarkThroughput(b *testing.B) {
	requireFUSE(b)
	size := benchSize()
	tm := mountVault(b, newVault(b, fastKDF))
	plain := b.TempDir()
	buf := randBytes(1, 1<<20)
	small := randBytes(2, 4096)
	var fw, pw, fr, pr, fs, ps time.Duration
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		name := fmt.Sprintf("seq%d", i)
		pw += seqWrite(b, filepath.Join(plain, name), size, buf)
		fw += seqWrite(b, tm.path(name), size, buf)
		pr += seqRead(b, filepath.Join(plain, name), buf)
		fr += seqRead(b, tm.path(name), buf)
		ps += smallFiles(b, filepath.Join(plain, "small"+name), 2000, small)
		fs += smallFiles(b, tm.path("small"+name), 2000, small)
		os.Remove(filepath.Join(plain, name))
		os.Remove(tm.path(name))
	}
	mbps := func(d time.Duration) float64 { return float64(b.N) * float64(size) / 1e6 / d.Seconds() }
	fps := func(d time.Duration) float64 { return float64(b.N) * 2000 / d.Seconds() }
	b.ReportMetric(mbps(fw), "fincrypt-write-MB/s")
	b.ReportMetric(mbps(pw), "plain-write-MB/s")
	b.ReportMetric(pw.Seconds()/fw.Seconds(), "write-ratio")
	b.ReportMetric(mbps(fr), "fincrypt-read-MB/s")
	b.ReportMetric(mbps(pr), "plain-read-MB/s")
	b.ReportMetric(pr.Seconds()/fr.Seconds(), "read-ratio")
	b.ReportMetric(fps(fs), "fincrypt-files/s")
	b.ReportMetric(fps(ps), "plain-files/s")
	b.ReportMetric(ps.Seconds()/fs.Seconds(), "smallfiles-ratio")
}
