// Command genvault fills an unmounted vault with files written directly
// through the index API (package meta), not through a mount: vaults of
// millions of files in minutes, for scripts/scale.sh's generated rows
// (SCALE_GEN_SIZES).
//
//	genvault [-evicted] HOME N
//
// HOME is a vault made by `fincrypt init` (the password comes from
// $FINCRYPT_PASSWORD), best mounted and unmounted once, so that it has a
// clean-close record: genvault keeps that record true (fs.ChangeOffline), and
// the next mount reads no more of the index than after any clean unmount.
// It adds N files of 1-4 KiB under HOME's root, 1000 a directory, laid out
// as `fsbench fill` lays them out (fill/D/fI): one inode, one directory entry
// and one chunk reference each, with the chunk sealed into the local store
// and on the pending feed, as a vault without a network holds it. With
// -evicted the chunks are not stored: each is located in a durable segment
// instead (1000 chunks a segment), as a cache trimmed to nothing leaves them,
// so that the index grows to tens of millions of records without as many
// chunks on disk.
package main

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	ffs "github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

const perDir = 1000

func main() {
	evicted := flag.Bool("evicted", false, "locate every chunk in a durable segment instead of storing it")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile to `FILE`")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: genvault [-evicted] HOME N\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	n, err := strconv.Atoi(flag.Arg(1))
	if err != nil || n <= 0 {
		fmt.Fprintf(os.Stderr, "genvault: want a file count, got %q\n", flag.Arg(1))
		os.Exit(2)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "genvault: %v\n", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "genvault: %v\n", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	if err := run(flag.Arg(0), n, *evicted); err != nil {
		fmt.Fprintf(os.Stderr, "genvault: %v\n", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
	fmt.Printf("gen %.2f files/s\n", float64(n)/time.Since(start).Seconds())
}

func run(home string, n int, evicted bool) error {
	pw := os.Getenv("FINCRYPT_PASSWORD")
	if pw == "" {
		return errors.New("set FINCRYPT_PASSWORD to the vault's password")
	}
	v, err := vault.Open(home, []byte(pw), vault.OpenOptions{Lock: true})
	if err != nil {
		return err
	}
	defer v.Close()
	idx, store, err := ffs.OpenOffline(v, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	err = ffs.ChangeOffline(v, idx, func() error { return generate(v, idx, store, n, evicted) })
	if serr := store.Sync(); err == nil {
		err = serr
	}
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if cerr := idx.Close(); err == nil {
		err = cerr
	}
	return err
}

// generate adds n files under fill/ in the root, a batch a directory.
func generate(v *vault.Vault, idx *meta.Index, store *chunkstore.Store, n int, evicted bool) error {
	now := time.Now().UnixNano()
	root, err := idx.GetInode(meta.RootIno)
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	top, err := mkdir(idx, &root, "fill", now)
	if err != nil {
		return err
	}
	plain := make([]byte, 4096)
	if _, err := rand.Read(plain); err != nil {
		return err
	}
	var sealed []byte
	dirs := (n + perDir - 1) / perDir
	for d := range dirs {
		dino, err := idx.NextIno()
		if err != nil {
			return err
		}
		b := idx.NewBatch()
		top.Nlink++
		b.PutInode(&meta.Inode{Ino: dino, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Atime: now, Mtime: now, Ctime: now})
		b.PutDirent(&meta.Dirent{Parent: top.Ino, Name: strconv.Itoa(d), Ino: dino, Type: syscall.S_IFDIR})
		var seg meta.SegmentID
		rand.Read(seg[:])
		off := uint32(0)
		for i := d * perDir; i < min(n, (d+1)*perDir); i++ {
			fino, err := idx.NextIno()
			if err != nil {
				b.Discard()
				return err
			}
			ver, err := idx.NextVersion()
			if err != nil {
				b.Discard()
				return err
			}
			size := 1024 + (i*2654435761)%(3*1024) // as fsbench fill
			id := chunkstore.NewID()
			if evicted {
				sealedLen := uint32(size + vault.Overhead)
				b.PutLocation(id, &meta.Location{Segment: seg, Offset: off, Length: sealedLen})
				off += sealedLen
			} else {
				sealed = v.Keys.Chunk.Seal(sealed[:0], plain[:size], vault.ChunkAD(fino, 0, ver))
				if err := store.Put(id, sealed); err != nil {
					b.Discard()
					return err
				}
			}
			b.PutInode(&meta.Inode{Ino: fino, Mode: syscall.S_IFREG | 0o644, Nlink: 1, Size: uint64(size), Atime: now, Mtime: now, Ctime: now})
			b.PutDirent(&meta.Dirent{Parent: dino, Name: "f" + strconv.Itoa(i), Ino: fino, Type: syscall.S_IFREG})
			b.PutChunk(fino, 0, &meta.ChunkRef{ID: id, Version: ver, Len: uint32(size)})
		}
		if evicted {
			b.PutSegment(&meta.Segment{ID: seg, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4,
				Used: off, Class: off, Created: now, Checked: now, Pieces: make([]meta.SegmentPiece, 4)})
		}
		if err := b.Commit(false); err != nil {
			return err
		}
		if (d+1)%1000 == 0 {
			fmt.Fprintf(os.Stderr, "genvault: %d of %d files\n", (d+1)*perDir, n)
		}
	}
	b := idx.NewBatch()
	b.PutInode(top)
	if err := b.Commit(false); err != nil {
		return err
	}
	if err := store.Sync(); err != nil {
		return err
	}
	return idx.Sync()
}

// mkdir makes directory name in parent (which must not hold it) and
// commits it, with parent's link count.
func mkdir(idx *meta.Index, parent *meta.Inode, name string, now int64) (*meta.Inode, error) {
	if _, err := idx.Lookup(parent.Ino, name); err == nil {
		return nil, fmt.Errorf("%s already exists in the vault's root: genvault fills a vault once", name)
	} else if !errors.Is(err, meta.ErrNotFound) {
		return nil, err
	}
	ino, err := idx.NextIno()
	if err != nil {
		return nil, err
	}
	d := &meta.Inode{Ino: ino, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Atime: now, Mtime: now, Ctime: now}
	parent.Nlink++
	parent.Mtime, parent.Ctime = now, now
	b := idx.NewBatch()
	b.PutInode(d)
	b.PutInode(parent)
	b.PutDirent(&meta.Dirent{Parent: parent.Ino, Name: name, Ino: ino, Type: syscall.S_IFDIR})
	return d, b.Commit(false)
}
