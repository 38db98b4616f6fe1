package fs

import (
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Idle FUSE readers and the Go scheduler.
//
// A go-fuse server keeps goroutines blocked in read(2) on /dev/fuse, ready
// for the next request: up to maxReaders+1 of them, where maxReaders is
// GOMAXPROCS (at least 2, at most 16) when the server is made. After each
// request its goroutine goes back to reading, so a program that sends one
// request at a time (creating files, untarring, git) keeps all of them
// idle between its requests. A goroutine in a system call keeps its P (the
// runtime's licence to run Go code) until the runtime's monitor takes it
// away, which it does after 20 µs whenever no P is idle. With GOMAXPROCS
// at the number of CPUs, two here, the three idle readers held every P:
// the monitor took them back and woke a thread for each, which found
// nothing to do and slept again; and the reader a request woke had lost
// its P, so the request waited for a thread to be woken with one (mktree:
// 1.6-1.8 futex calls and 9.2 context switches of the mount per file,
// against 0.4-0.8 and 6.4-6.9 with Ps to spare). Measured with fsbench's
// mktree of 100,000 files in two interleaved rounds on a loaded two-CPU
// machine: mount CPU per file 269-288 -> 211-217 µs, context switches per
// file 7.3-7.4 -> 5.3-5.4, 1522-1536 -> 2017-2025 files/s (gocryptfs
// 1855-1939); the sequential 512 MiB write and read rows did not change
// beyond their noise.
//
// So a mount adds to GOMAXPROCS one P per reader its server may keep idle,
// while it serves: the CPUs' Ps stay free for the requests, and the extra
// Ps cost nothing, as their readers wait in the kernel. go-fuse sizes the
// readers from GOMAXPROCS, which is set back to the process's own while a
// server is made, so each mount adds the same number.
var readerProcs struct {
	sync.Mutex
	base  int // GOMAXPROCS before the first serving mount raised it
	extra int // Ps added for the servers serving now
}

// idleReaders is the most goroutines a go-fuse server made at GOMAXPROCS
// procs keeps blocked in read(2) (fuse.NewServer: maxReaders, +1 because a
// reader gives up only once more than maxReaders read).
func idleReaders(procs int) int { return min(max(procs, 2), 16) + 1 }

// newServer is fuse.NewServer with GOMAXPROCS raised by the readers the
// server may keep idle; release gives them back once the server stops
// serving.
func newServer(raw fuse.RawFileSystem, dir string, mo *fuse.MountOptions) (server *fuse.Server, release func(), err error) {
	p := &readerProcs
	p.Lock()
	defer p.Unlock()
	if p.extra == 0 {
		p.base = runtime.GOMAXPROCS(0)
	} else {
		runtime.GOMAXPROCS(p.base) // go-fuse counts its readers from it
	}
	server, err = fuse.NewServer(raw, dir, mo)
	n := 0
	if err == nil {
		n = idleReaders(p.base)
	}
	p.extra += n
	runtime.GOMAXPROCS(p.base + p.extra)
	if err != nil {
		return nil, nil, err
	}
	var once sync.Once
	return server, func() {
		once.Do(func() {
			p.Lock()
			defer p.Unlock()
			p.extra -= n
			runtime.GOMAXPROCS(p.base + p.extra)
		})
	}, nil
}

// releaseStartupHeap returns to the operating system, before the mount
// serves, the heap its start freed: above all the 64 MiB the password's
// key derivation (argon2id) takes to open the vault, which is garbage once
// the vault is open. Left to itself, Go's background scavenger gives such
// memory back a little at a time over the first minutes, paced to 1 % of
// the time of all Ps, which a serving mount raises (newServer above): in
// the first small-file workload after a mount (fsbench small-write, 10,000
// files) madvise(2) from the scavenger was 10 % of the mount's CPU, and
// the mount's RSS began at 104 MB. One forced collection here costs a few
// milliseconds once, and the mount starts at the memory it uses.
func releaseStartupHeap() { debug.FreeOSMemory() }
