// Command fsbench runs one file-system workload in a directory and prints
// one line: "<workload> <value> <unit>". scripts/bench.sh runs it on a plain
// directory, a Fincrypt mount and a gocryptfs mount in the same run, and
// prints the ratios.
//
//	fsbench write DIR SIZE      sequential write of SIZE bytes, 1 MiB per write, fsync at the end
//	fsbench read DIR            sequential read of what write wrote, verifying every byte
//	fsbench small-write DIR N   N small files (1-16 KiB) in 100 directories, each created and written
//	fsbench small-read DIR N    read them back and verify
//	fsbench untar DIR TARBALL   tar xf TARBALL inside DIR, then sync (syncAfter)
//	fsbench git-status DIR      git status in the repository DIR/repo (cloned there beforehand)
//	fsbench git-checkout DIR REV  git checkout REV in DIR/repo, then sync (syncAfter)
//	fsbench mktree DIR N        N empty files in directories of 1000 under DIR/tree
//	fsbench find DIR N          find over DIR/tree, checking it lists the N files and their directories
//	fsbench fill DIR N          N files of 1-4 KiB, 1000 a directory under DIR/fill, by 8 parallel writers
//	fsbench write-fsync DIR     a 4 KiB file written and fsynced in a deep directory, 50 times: the median
package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/fincrypt/fincrypt/internal/units"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: fsbench write|read|small-write|small-read|untar DIR [ARG]")
		os.Exit(2)
	}
	dir := os.Args[2]
	arg := ""
	if len(os.Args) > 3 {
		arg = os.Args[3]
	}
	var err error
	switch os.Args[1] {
	case "write":
		err = seqWrite(dir, arg)
	case "read":
		err = seqRead(dir)
	case "small-write":
		err = small(dir, arg, true)
	case "small-read":
		err = small(dir, arg, false)
	case "untar":
		err = untar(dir, arg)
	case "git-status":
		err = gitStatus(dir)
	case "git-checkout":
		err = gitCheckout(dir, arg)
	case "mktree":
		err = mktree(dir, arg)
	case "find":
		err = find(dir, arg)
	case "fill":
		err = fill(dir, arg)
	case "write-fsync":
		err = writeFsync(dir)
	default:
		err = fmt.Errorf("unknown workload %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fsbench:", err)
		os.Exit(1)
	}
}

// block is the data pattern of the sequential file: position-dependent, so a
// misplaced block is caught, and incompressible enough to be honest.
func block(i int64, b []byte) {
	r := rand.New(rand.NewPCG(uint64(i), 0x5eed))
	for j := 0; j+8 <= len(b); j += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[j+k] = byte(v >> (8 * k))
		}
	}
}

const blockSize = 1 << 20

func seqWrite(dir, sizeArg string) error {
	size, err := units.ParseSize(sizeArg)
	if err != nil {
		return err
	}
	n := int64(size / blockSize)
	blocks := make([][]byte, 16) // a few distinct blocks, reused: generation stays out of the timing
	for i := range blocks {
		blocks[i] = make([]byte, blockSize)
		block(int64(i), blocks[i])
	}
	f, err := os.Create(filepath.Join(dir, "seq.bin"))
	if err != nil {
		return err
	}
	start := time.Now()
	for i := int64(0); i < n; i++ {
		if _, err := f.Write(blocks[i%16]); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	report("seq-write", float64(n*blockSize)/1e6/time.Since(start).Seconds(), "MB/s")
	return nil
}

func seqRead(dir string) error {
	f, err := os.Open(filepath.Join(dir, "seq.bin"))
	if err != nil {
		return err
	}
	defer f.Close()
	want := make([][]byte, 16)
	for i := range want {
		want[i] = make([]byte, blockSize)
		block(int64(i), want[i])
	}
	buf := make([]byte, blockSize)
	start := time.Now()
	var total int64
	for i := int64(0); ; i++ {
		n, err := io.ReadFull(f, buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if !bytes.Equal(buf[:n], want[i%16][:n]) {
			return fmt.Errorf("block %d differs from what was written", i)
		}
		total += int64(n)
	}
	report("seq-read", float64(total)/1e6/time.Since(start).Seconds(), "MB/s")
	return nil
}

func smallContent(i int) []byte {
	b := make([]byte, 1024+(i*2654435761)%(15*1024))
	block(int64(i)+1e6, b)
	return b
}

func small(dir, nArg string, write bool) error {
	n, err := strconv.Atoi(nArg)
	if err != nil || n <= 0 {
		return fmt.Errorf("want a file count, got %q", nArg)
	}
	root := filepath.Join(dir, "small")
	start := time.Now()
	for i := 0; i < n; i++ {
		d := filepath.Join(root, strconv.Itoa(i%100))
		p := filepath.Join(d, "f"+strconv.Itoa(i))
		if write {
			if i < 100 {
				if err := os.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			if err := os.WriteFile(p, smallContent(i), 0o644); err != nil {
				return err
			}
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, smallContent(i)) {
			return fmt.Errorf("%s differs from what was written", p)
		}
	}
	name := "small-read"
	if write {
		name = "small-write"
	}
	report(name, float64(n)/time.Since(start).Seconds(), "files/s")
	return nil
}

func untar(dir, tarball string) error {
	start := time.Now()
	cmd := exec.Command("tar", "xf", tarball, "-C", dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return err
	}
	if err := syncAfter(dir); err != nil {
		return err
	}
	report("untar", time.Since(start).Seconds(), "s")
	return nil
}

func gitStatus(dir string) error {
	start := time.Now()
	cmd := exec.Command("git", "-C", filepath.Join(dir, "repo"), "status", "--porcelain")
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("git status: %w", err)
	}
	if len(out) != 0 {
		return fmt.Errorf("git status: the fresh checkout is not clean:\n%s", out)
	}
	report("git-status", time.Since(start).Seconds(), "s")
	return nil
}

func gitCheckout(dir, rev string) error {
	repo := filepath.Join(dir, "repo")
	start := time.Now()
	cmd := exec.Command("git", "-C", repo, "checkout", "-q", rev)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("git checkout %s: %w", rev, err)
	}
	if err := syncAfter(repo); err != nil {
		return err
	}
	report("git-checkout", time.Since(start).Seconds(), "s")
	return nil
}

// syncAfter ends the untar and git-checkout rows: syncfs(2) of dir's file
// system, and of $FSBENCH_SYNC's if set. On a FUSE mount (Fincrypt,
// gocryptfs) syncfs of the mount writes back only what the kernel caches
// and asks the server nothing (the kernel sends FUSE_SYNCFS to virtiofs
// only), while on a plain directory it writes everything to the disk; so
// scripts/bench.sh sets FSBENCH_SYNC to its scratch directory, on the disk
// every target writes to (the plain files, gocryptfs's ciphertext,
// Fincrypt's store and index), and each row ends with that disk synced.
func syncAfter(dir string) error {
	dirs := []string{dir}
	if d := os.Getenv("FSBENCH_SYNC"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if out, err := exec.Command("sync", "-f", d).CombinedOutput(); err != nil {
			return fmt.Errorf("sync -f %s: %w: %s", d, err, out)
		}
	}
	return nil
}

const treeFanout = 1000

func mktree(dir, nArg string) error {
	n, err := strconv.Atoi(nArg)
	if err != nil || n <= 0 {
		return fmt.Errorf("want an entry count, got %q", nArg)
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		d := filepath.Join(dir, "tree", strconv.Itoa(i/treeFanout))
		if i%treeFanout == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		f, err := os.Create(filepath.Join(d, "e"+strconv.Itoa(i)))
		if err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	report("mktree", float64(n)/time.Since(start).Seconds(), "files/s")
	return nil
}

func find(dir, nArg string) error {
	n, err := strconv.Atoi(nArg)
	if err != nil || n <= 0 {
		return fmt.Errorf("want an entry count, got %q", nArg)
	}
	start := time.Now()
	out, err := exec.Command("find", filepath.Join(dir, "tree")).Output()
	if err != nil {
		return fmt.Errorf("find: %w", err)
	}
	got := bytes.Count(out, []byte("\n"))
	want := 1 + n + (n+treeFanout-1)/treeFanout
	if got != want {
		return fmt.Errorf("find listed %d entries, want %d", got, want)
	}
	report("find", time.Since(start).Seconds(), "s")
	return nil
}

func report(name string, v float64, unit string) {
	fmt.Printf("%s %.2f %s\n", name, v, unit)
}

// fill writes N files of 1-4 KiB, 1000 a directory, with 8 writers each
// taking whole directories in turn: the vault of ../shared/MEASURED.md.
func fill(dir, nArg string) error {
	n, err := strconv.Atoi(nArg)
	if err != nil || n <= 0 {
		return fmt.Errorf("want a file count, got %q", nArg)
	}
	const writers, perDir = 8, 1000
	dirs := (n + perDir - 1) / perDir
	start := time.Now()
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		go func(w int) {
			for d := w; d < dirs; d += writers {
				p := filepath.Join(dir, "fill", strconv.Itoa(d))
				if err := os.MkdirAll(p, 0o755); err != nil {
					errs <- err
					return
				}
				for i := d * perDir; i < min(n, (d+1)*perDir); i++ {
					b := make([]byte, 1024+(i*2654435761)%(3*1024))
					block(int64(i)+2e6, b)
					if err := os.WriteFile(filepath.Join(p, "f"+strconv.Itoa(i)), b, 0o644); err != nil {
						errs <- err
						return
					}
				}
			}
			errs <- nil
		}(w)
	}
	for w := 0; w < writers; w++ {
		if err := <-errs; err != nil {
			return err
		}
	}
	report("fill", float64(n)/time.Since(start).Seconds(), "files/s")
	return nil
}

// writeFsync times a 4 KiB write and fsync of a new file in a directory
// eight levels deep, 50 times, and reports the median.
func writeFsync(dir string) error {
	d := filepath.Join(dir, "deep", "a", "b", "c", "d", "e", "f", "g")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	b := make([]byte, 4096)
	var took []time.Duration
	for i := 0; i < 50; i++ {
		block(int64(i)+3e6, b)
		start := time.Now()
		f, err := os.Create(filepath.Join(d, "w"+strconv.Itoa(i)))
		if err != nil {
			return err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	report("write-fsync", float64(took[len(took)/2].Microseconds())/1000, "ms")
	return nil
}
