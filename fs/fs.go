// Package fs is Fincrypt's FUSE file system: a go-fuse/v2 node tree whose
// state lives in the encrypted index (package meta) and whose file data lives
// as sealed chunks in the local chunk store (package chunkstore).
//
// File data is cut into fixed-size chunks (the vault's chunk size). A chunk
// is sealed with AES-256-GCM under vault.ChunkAD(ino, index, version), stored
// under a fresh random chunk id, and the chunk map in the index points at it.
// Chunks are never rewritten in place: a changed chunk gets a new id and
// version, and the old one is deleted once the index commit that replaced it
// is durable. docs/FORMAT.md §2 describes the formats.
package fs

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/internal/fsutil"
	"github.com/fincrypt/fincrypt/internal/readwin"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// Options tune a mount. The zero value gives the defaults.
type Options struct {
	AllowOther bool   // allow_other + default_permissions (kernel enforces mode bits/owners)
	Debug      bool   // go-fuse debug logging
	FsName     string // shown in /proc/mounts, e.g. "fincrypt"; default "fincrypt"

	// Logger receives the file system's messages; nil discards them.
	Logger *slog.Logger
	// AttrTimeout and EntryTimeout are how long the kernel may cache the
	// attributes and names of the vault's tree; zero means DefaultTimeout.
	// Every change to the tree goes through this mount's kernel, which
	// updates or drops what it cached (a create or unlink drops the
	// directory's attributes, a write the file's times), so a long timeout
	// is safe and spares a LOOKUP or GETATTR per path component once the
	// kernel has seen it. Missing names and the snapshot view, which change
	// without a request (a new backup snapshot), keep viewTimeout.
	AttrTimeout, EntryTimeout time.Duration
	// MaxDirtyChunks bounds the unsealed chunks buffered per open file;
	// zero means DefaultMaxDirtyChunks.
	MaxDirtyChunks int
	// SyncInterval is how often superseded chunks are reclaimed (after an
	// index sync); zero means DefaultSyncInterval.
	SyncInterval time.Duration
	// Attach, if set, starts a service that shares the mount's index and
	// chunk store (the replication engine). It runs after recovery, before
	// the mount serves; its Close runs after the last flush and before the
	// index closes.
	Attach func(idx *meta.Index, store *chunkstore.Store) (io.Closer, error)
	// Faults records the failures of the mount's background work (shown
	// by `fincrypt status`; share it with the replication engine); nil: a
	// board of the mount's own. The mount makes it stop the process for a
	// panic inside the index's database, as for one in a FUSE handler.
	Faults *fault.Board
	// Metrics, if set, counts every FUSE request by operation with its
	// latency (opmetrics.go).
	Metrics *OpMetrics
	// VersionInterval is how often the mount records a version of its
	// tree, when anything changed (versions.go); zero: never by itself.
	VersionInterval time.Duration
	// CommitOpenAfter is how long a file kept open may hold writes only
	// in the mount before the background commits them to the index (as a
	// close would, without waiting for the sealing); zero means
	// DefaultCommitOpenAfter, negative never.
	CommitOpenAfter time.Duration
	// WritebackCache asks the kernel for its write-back cache
	// (FUSE_WRITEBACK_CACHE, writeback.go): write(2) fills the page cache
	// and returns; the kernel sends the dirty pages later, in large WRITEs,
	// and at the latest on fsync(2) and close(2). Off by default: it
	// measured slower than the direct path (writeback.go).
	WritebackCache bool
	// MaxInodes bounds the inodes the mount keeps for the kernel: past it,
	// the mount asks the kernel to forget those it learned of first
	// (inodecap.go; Linux 6.18 and later, elsewhere a no-op). Zero means
	// DefaultMaxInodes, negative no bound.
	MaxInodes int
	// FS is the file system the index and the chunk store live on; nil:
	// the operating system's. The power-loss tests mount over Pebble's
	// crashable in-memory one (vfs.NewCrashableMem) and cut the power.
	FS vfs.FS
}

// Defaults for Options.
const (
	DefaultTimeout        = time.Hour
	DefaultMaxDirtyChunks = 8
	DefaultSyncInterval   = 5 * time.Second
	// DefaultCommitOpenAfter is the age at which a local file system's
	// dirty data is written back (Linux's dirty_expire_centisecs).
	DefaultCommitOpenAfter = 30 * time.Second
	// MaxNameLen is the longest name, in bytes, a directory entry may have.
	MaxNameLen = 255
	// MaxXattrSize is the largest extended attribute value.
	MaxXattrSize = 64 << 10
	// sealParallel is how many chunks a mount seals and stores at once.
	sealParallel = 4
)

// viewTimeout is the kernel's cache time for what can change without a
// request through it: missing names (the view's .snapshots appears with the
// first backup snapshot) and the snapshot view's entries.
const viewTimeout = time.Second

func (o *Options) setDefaults() {
	if o.FsName == "" {
		o.FsName = "fincrypt"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.AttrTimeout == 0 {
		o.AttrTimeout = DefaultTimeout
	}
	if o.EntryTimeout == 0 {
		o.EntryTimeout = DefaultTimeout
	}
	if o.MaxDirtyChunks <= 0 {
		o.MaxDirtyChunks = DefaultMaxDirtyChunks
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.CommitOpenAfter == 0 {
		o.CommitOpenAfter = DefaultCommitOpenAfter
	}
	if o.Faults == nil {
		o.Faults = fault.New(o.Logger)
	}
	if o.MaxInodes == 0 {
		o.MaxInodes = DefaultMaxInodes
	}
}

// fsys is the state shared by every node of one mount.
type fsys struct {
	// plusDirs holds, for each directory a listing last handed every entry
	// of to the kernel, when that listing began (monoNow; dirHandle).
	plusMu    sync.Mutex
	plusDirs  map[uint64]int64
	plusSwept int // len(plusDirs) after its last sweep

	v     *vault.Vault
	idx   *meta.Index
	store *chunkstore.Store
	cs    uint64 // chunk size
	opt   Options
	log   *slog.Logger
	bufs  sync.Pool // *[]byte of capacity cs
	// smallBufs[k] holds *[]byte of capacity smallBufMin<<k, up to cs/4
	// (newBuf).
	smallBufs []sync.Pool
	sealBufs  sync.Pool // *[]byte of capacity cs+Overhead
	loads     bgLoads   // readers' windows loading in the background
	startTime time.Time

	// mu serialises read-modify-write sequences on the index (inodes,
	// directory entries). Lock order: openFile.mu before mu; openMu is a leaf.
	mu sync.Mutex

	openMu sync.Mutex
	open   map[uint64]*openFile
	// released: when files left open (last release, after committing
	// their size), for fillAttr (releaseGrace); prunedAt: its last pruning.
	released map[uint64]time.Time
	prunedAt time.Time

	sealSem chan struct{} // bounds chunks sealed and written at once
	space   *spaceGuard   // nil when read-only

	syncMu  sync.Mutex // serialises syncIndex
	pendMu  sync.Mutex
	pending []meta.ChunkID // superseded chunks, deleted after the next index sync

	// owe says the store may hold chunks that no index entry references
	// (this mount began after a crash, or a chunk could not be deleted):
	// the clean-close record then asks the next mount to collect them.
	owe atomic.Bool

	missed atomic.Pointer[lookupMiss] // the last name a LOOKUP found missing (node_dir_ops.go)

	inodes *inodeCap // the inodes the kernel holds, bounded (inodecap.go)

	snaps *snapView // MOUNT/.snapshots (snapshots.go)
	vers  versioner // versions of the mount (versions.go)
}

func newFsys(v *vault.Vault, opt Options, readOnly bool) (*fsys, error) {
	if err := guardStore(v, readOnly); err != nil {
		return nil, err
	}
	idx, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{ReadOnly: readOnly, Logger: opt.Logger.With("component", "pebble"), FS: opt.FS})
	if err != nil {
		return nil, &indexOpenError{fmt.Errorf("%w; %s", err, RecoverHint)}
	}
	var store *chunkstore.Store
	switch {
	case opt.FS != nil && readOnly:
		idx.Close()
		return nil, errors.New("a read-only mount on Options.FS is not supported")
	case opt.FS != nil:
		store, err = chunkstore.OpenFSFormat(v.StoreDir(), opt.FS, newStoreFormat)
	case readOnly:
		if _, err := os.Stat(v.StoreDir()); err != nil {
			idx.Close()
			return nil, fmt.Errorf("chunk store: %w", err)
		}
		store, err = chunkstore.OpenExisting(v.StoreDir())
	default:
		store, err = chunkstore.OpenFormat(v.StoreDir(), newStoreFormat)
	}
	if err != nil {
		idx.Close()
		return nil, err
	}
	cs := uint64(v.KeyFile.ChunkSize)
	r := &fsys{v: v, idx: idx, store: store, cs: cs, opt: opt, log: opt.Logger, open: map[uint64]*openFile{}, startTime: time.Now(),
		sealSem: make(chan struct{}, sealParallel)}
	r.snaps = newSnapView(r)
	r.inodes = newInodeCap(max(opt.MaxInodes, 0))
	r.bufs.New = func() any { b := make([]byte, 0, cs); return &b }
	r.smallBufs = newSmallBufs(cs)
	r.sealBufs.New = func() any { b := make([]byte, 0, cs+vault.Overhead); return &b }
	return r, nil
}

// indexOpenError is an index that does not open (damaged, or another
// vault's): check reports it as a problem of the vault.
type indexOpenError struct{ err error }

func (e *indexOpenError) Error() string { return e.err.Error() }
func (e *indexOpenError) Unwrap() error { return e.err }

// Mounted is a mounted vault. (Go does not allow a type and a function both
// named Mount in one package, so the function Mount returns a *Mounted.)
type Mounted struct {
	r      *fsys
	svc    io.Closer // Options.Attach's service, or nil
	server *fuse.Server
	dir    string
	stop   chan struct{}
	bgDone chan struct{}

	wg       sync.WaitGroup // the versions goroutine
	once     sync.Once
	closed   chan struct{} // closed when shutdown has finished
	closeErr error
}

// Mount opens the index and store of the unlocked vault v (v was opened with
// Lock: true) and mounts at mountpoint; it returns once the mount is ready to
// serve. As root it mounts with mount(2); other users need fusermount3.
func Mount(v *vault.Vault, mountpoint string, opt Options) (*Mounted, error) {
	opt.setDefaults()
	r, err := newFsys(v, opt, false)
	if err != nil {
		return nil, err
	}
	opt.Faults.SetFatal(r.fatalBackground)
	fail := func(err error) (*Mounted, error) {
		r.idx.Close()
		return nil, err
	}
	// Before anything changes the index: is it the one the last clean
	// unmount left? A damaged index stops the mount, deleting nothing.
	clean, err := verifyClean(r, false)
	if err != nil {
		return fail(fmt.Errorf("%s: %w; %s", v.IndexDir(), err, RecoverHint))
	}
	if clean.recorded && !clean.whole {
		return fail(fmt.Errorf("%s: %w: %s; %s", v.IndexDir(), ErrIndexDamaged, clean.problem, RecoverHint))
	}
	if err := consumeClean(v); err != nil {
		return fail(err)
	}
	clean.track(r.idx)
	// A new index (no root yet, no record) has nothing to collect: the
	// first mount of a vault owes the next one no walk.
	_, rootErr := r.idx.GetInode(meta.RootIno)
	fresh := !clean.recorded && errors.Is(rootErr, meta.ErrNotFound)
	if fresh {
		sum, err := r.idx.WalkRefSum() // an index without a root holds next to nothing
		if err != nil {
			return fail(err)
		}
		r.idx.TrackRefs(sum)
	}
	// Before the first write to the index: at a full disk this gives back
	// the ballast, so that recovery can write.
	if r.space, err = newSpaceGuard(v.IndexDir(), r.log); err != nil {
		return fail(err)
	}
	if err := r.ensureRoot(); err != nil {
		return fail(err)
	}
	// After a crash (no record) chunks no file references may be left in
	// the store; they are collected by the first mount after a clean
	// unmount, which then walks the index once.
	r.owe.Store(!clean.whole && !fresh)
	if clean.whole && clean.owed && !clean.walked {
		return fail(fmt.Errorf("clean-close record: a collection is owed but the index was not walked"))
	}
	if err := r.recover(clean.whole && clean.owed); err != nil {
		return fail(fmt.Errorf("recovery: %w", err))
	}
	var svc io.Closer
	if opt.Attach != nil {
		if svc, err = opt.Attach(r.idx, r.store); err != nil {
			return fail(err)
		}
		if s, ok := svc.(CommitBeforeSyncer); ok {
			s.CommitBeforeSync(r.flushOpenFiles)
		}
		if s, ok := svc.(UnsavedReporter); ok {
			s.ReportUnsaved(r.unsavedOpenFiles)
		}
	}
	// The tree's own replies carry opt's timeouts (fillEntry); these
	// defaults apply to the rest (the snapshot view, missing names).
	view := viewTimeout
	mo := &gofs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:   opt.AllowOther,
			Options:      []string{"default_permissions"},
			FsName:       opt.FsName,
			Name:         "fincrypt",
			MaxWrite:     fuse.MAX_KERNEL_WRITE,
			MaxReadAhead: fuse.MAX_KERNEL_WRITE,
			DirectMount:  os.Geteuid() == 0,
			Debug:        opt.Debug,
			// Every change goes through this kernel, so its page cache is
			// never stale: keep it across opens and attribute changes.
			ExplicitDataCacheControl: true,
			PanicHandler:             r.panicked,
			// The set-id bits are cleared here, sparing a GETXATTR per
			// WRITE and a GETATTR per chown (killpriv.go).
			ExtraCapabilities: killPrivCaps | writebackCaps(opt.WritebackCache),
		},
		EntryTimeout:    &view,
		AttrTimeout:     &view,
		NegativeTimeout: &view,
		RootStableAttr:  &gofs.StableAttr{Ino: meta.RootIno},
		// Mode bits as stored: go-fuse would otherwise show a file created
		// or chmodded to 0000 as 0644 (0755 for a directory).
		NullPermissions: true,
		Logger:          slog.NewLogLogger(opt.Logger.Handler(), slog.LevelWarn),
	}
	mo.MountOptions.Logger = fuseLogger(opt.Logger.Handler(), opt.Debug)
	releaseStartupHeap() // procs.go
	root := &rootNode{fs: r}
	server, err := mountRaw(mountpoint, root, mo, opt.Metrics)
	if err != nil {
		if svc != nil {
			svc.Close()
		}
		return fail(fmt.Errorf("mount %s: %w", mountpoint, err))
	}
	closeFuseOnExec(r.log)
	raiseReadAhead(mountpoint, r.log)
	abs, aerr := filepath.Abs(mountpoint)
	if aerr != nil {
		abs = mountpoint
	}
	m := &Mounted{r: r, svc: svc, server: server, dir: abs, closed: make(chan struct{}), stop: make(chan struct{}), bgDone: make(chan struct{})}
	go m.background()
	go r.inodes.run(root.EmbeddedInode(), server)
	if opt.VersionInterval > 0 {
		m.wg.Add(1)
		go m.versions(opt.VersionInterval)
	}
	r.log.Info("mounted", "mountpoint", mountpoint, "chunk_size", r.cs)
	return m, nil
}

// mountRaw is gofs.Mount with the raw file system wrapped by metrics.
func mountRaw(dir string, root gofs.InodeEmbedder, mo *gofs.Options, m *OpMetrics) (*fuse.Server, error) {
	raw := fuse.RawFileSystem(killPrivFS{gofs.NewNodeFS(root, mo)})
	if m != nil {
		raw = m.wrap(raw)
	}
	server, release, err := newServer(raw, dir, &mo.MountOptions) // procs.go
	if err != nil {
		return nil, err
	}
	go func() {
		server.Serve()
		release()
	}()
	if err := server.WaitMount(); err != nil {
		return nil, err // as gofs.Mount: the serve loop ends with the failed mount
	}
	return server, nil
}

// fuseLogger is go-fuse's own log (fuse.MountOptions.Logger). Left unset,
// go-fuse writes to the standard logger, which the command routes to slog at
// INFO: its internal chatter ("trySplice: splice: want ... bytes") would fill
// the mount log. Its messages are debug output, then, unless the user asked
// for the FUSE trace (Options.Debug, --debug-fuse): that trace is logged at
// INFO so that it shows without --debug.
func fuseLogger(h slog.Handler, trace bool) *log.Logger {
	level := slog.LevelDebug
	if trace {
		level = slog.LevelInfo
	}
	return slog.NewLogLogger(h.WithAttrs([]slog.Attr{slog.String("component", "go-fuse")}), level)
}

// readAheadKB is the kernel read-ahead of a mount, in KiB. The kernel gives a
// FUSE mount 128 KiB whatever the server asks for at INIT, so a cold
// sequential reader waits for each 256 KiB request in turn; with a few MiB
// read ahead, several chunks are asked for (and loaded) at once.
const readAheadKB = readwin.KernelKB

// raiseReadAhead sets the read-ahead of the mount's backing device info
// (/sys/class/bdi/MAJOR:MINOR/read_ahead_kb, writable by root). Elsewhere it
// leaves the kernel's default: reads stay correct, only slower.
func raiseReadAhead(mountpoint string, log *slog.Logger) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		log.Debug("read-ahead left at the default", "err", err)
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(strconv.Itoa(readAheadKB)), 0); err != nil {
		log.Debug("read-ahead left at the default", "err", err)
	}
}

// closeFuseOnExec marks this process's /dev/fuse descriptors close-on-exec.
// go-fuse's DirectMount opens /dev/fuse without O_CLOEXEC, so a program the
// mounting process starts would inherit the connection and keep it alive
// after the server dies, leaving every access to the mount hanging.
func closeFuseOnExec(log *slog.Logger) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		log.Warn("cannot list file descriptors", "err", err)
		return
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "/dev/fuse" {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
				log.Warn("cannot set close-on-exec on /dev/fuse", "fd", fd, "err", err)
			}
		}
	}
}

// background reclaims superseded chunks every SyncInterval, and commits
// what files kept open held too long (CommitOpenAfter).
func (m *Mounted) background() {
	defer close(m.bgDone)
	every := m.r.opt.SyncInterval
	if a := m.r.opt.CommitOpenAfter; a > 0 {
		every = min(every, max(a/4, 10*time.Millisecond))
	}
	t := time.NewTicker(every)
	defer t.Stop()
	lastSync := time.Now()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			if a := m.r.opt.CommitOpenAfter; a > 0 {
				m.r.commitOldWrites(a)
			}
			if time.Since(lastSync) < m.r.opt.SyncInterval-every/2 {
				continue
			}
			lastSync = time.Now()
			m.r.pendMu.Lock()
			n := len(m.r.pending)
			m.r.pendMu.Unlock()
			if n > 0 {
				// A fault here fails this sync only; the next tick retries.
				if err := m.r.opt.Faults.Run("sync", m.r.syncAll); err != nil {
					m.r.log.Error("background sync", "err", err)
				}
			}
		}
	}
}

// Wait blocks until the file system is unmounted (by Unmount, fusermount -u
// or umount), then flushes and closes the index and store.
func (m *Mounted) Wait() {
	m.server.Wait()
	m.shutdown()
}

// Unmount flushes everything, unmounts, and closes the index and store. If
// the file system was already unmounted from outside (and Wait returned, or
// is about to), it only finishes the shutdown and returns its result.
func (m *Mounted) Unmount() error {
	select {
	case <-m.closed:
		return m.closeErr
	default:
	}
	if err := m.server.Unmount(); err != nil {
		if isMounted(m.dir) {
			return fmt.Errorf("unmount: %w", err)
		}
		// Unmounted meanwhile by umount or fusermount -u.
	}
	m.server.Wait()
	return m.shutdown()
}

// isMounted reports whether dir is a mount point in this mount namespace.
func isMounted(dir string) bool { return fsutil.IsMountPoint(dir) }

// Detach unmounts lazily (umount -l): the mount point is freed at once,
// programs that still hold files or directories of the mount keep using
// them, and the file system is flushed and closed when the last is released
// (Wait then returns). Use it when Unmount fails because the mount is busy.
func (m *Mounted) Detach() error {
	var err error
	if os.Geteuid() == 0 {
		err = syscall.Unmount(m.dir, syscall.MNT_DETACH)
	} else {
		var out []byte
		out, err = exec.Command("fusermount3", "-u", "-z", m.dir).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
		}
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", m.dir, err)
	}
	return nil
}

// CommitBeforeSyncer is an attached service (Options.Attach) that asks for
// what the open files hold to be in the index before it takes a sync's mark:
// close(2) returns with a file's last chunks only queued for sealing, so a
// sync asked for just after (`fincrypt sync` after a copy) would otherwise
// be covered by a snapshot that misses them.
type CommitBeforeSyncer interface {
	CommitBeforeSync(commit func() error)
}

// UnsavedReporter is an attached service (Options.Attach) that counts,
// in what it calls pending, what open files hold and the index does not
// yet: written chunks not yet sealed and committed, and a size or time not
// yet committed. Until a file's last close (or fsync) they live only in the
// mount, so a status that left them out would call a vault restorable
// while a restore would miss them.
type UnsavedReporter interface {
	ReportUnsaved(unsaved func() (inos []uint64, chunks int, bytes uint64))
}

// unsavedOpenFiles returns the open files holding anything not yet in the
// index, and the chunks and bytes written to them and not yet committed
// (a chunk both queued and written again counts once, at its newest size).
func (r *fsys) unsavedOpenFiles() (inos []uint64, chunks int, bytes uint64) {
	for _, of := range r.openFiles() {
		var c unsavedCount
		if of.mu.TryLock() {
			c = of.unsavedLocked()
			of.unlock()
		} else {
			// Busy (a read may hold it for a network fetch, a release
			// waits for its chunks): a status must not wait for that. What
			// it held when last let go, and unsaved if written since last
			// seen clean (a write holding it now).
			c = of.lastSeen()
			c.any = c.any || of.touched.Load()
		}
		if c.any {
			inos = append(inos, of.ino)
			chunks += c.chunks
			bytes += c.bytes
		}
	}
	return inos, chunks, bytes
}

// commitOldWrites starts committing what each open file holds outside the
// index since longer than age: its written chunks are queued for sealing
// (the worker commits them with the size), an uncommitted size or time
// alone is committed. A file busy with another request is left for the
// next round.
func (r *fsys) commitOldWrites(age time.Duration) {
	for _, of := range r.openFiles() {
		if !of.touched.Load() || !of.mu.TryLock() {
			continue
		}
		if of.unsavedLocked().any && time.Since(of.touchedAt) >= age {
			var err error
			if len(of.dirty) > 0 {
				err = of.flushAsyncLocked()
			} else if of.metaDirty() && len(of.queue) == 0 {
				var old []meta.ChunkID
				if old, err = of.commit(nil, nil); err == nil {
					r.supersede(old...)
				}
			}
			if err != nil {
				// Kept for the file's next write, fsync or close to report.
				if of.asyncErr == nil {
					of.asyncErr = err
				}
			}
			of.touchedAt = time.Now() // what is left (sealing) is looked at again after age
		}
		of.unlock()
	}
}

// openFiles returns the files open now.
func (r *fsys) openFiles() []*openFile {
	r.openMu.Lock()
	defer r.openMu.Unlock()
	files := make([]*openFile, 0, len(r.open))
	for _, of := range r.open {
		files = append(files, of)
	}
	return files
}

// flushOpenFiles commits what every open file has written (each error,
// joined; the others are still flushed).
func (r *fsys) flushOpenFiles() error {
	var errs []error
	for _, of := range r.openFiles() {
		of.mu.Lock()
		if err := of.flushLocked(); err != nil {
			errs = append(errs, err)
		}
		of.unlock()
	}
	return errors.Join(errs...)
}

func (m *Mounted) shutdown() error {
	m.once.Do(func() {
		close(m.stop)
		<-m.bgDone
		close(m.r.inodes.stop)
		<-m.r.inodes.done
		m.wg.Wait()
		r := m.r
		r.loads.closeAndWait()
		var errs []error
		if err := r.flushOpenFiles(); err != nil {
			errs = append(errs, err)
		}
		if err := r.syncAll(); err != nil {
			errs = append(errs, err)
		}
		if m.svc != nil {
			if err := m.svc.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			// Last: the next mount may collect unreferenced chunks only
			// if the index it finds is this one, whole.
			if err := writeClean(r); err != nil {
				r.log.Warn("no clean-unmount record: the next mount will not collect unreferenced chunks", "err", err)
			}
		}
		if err := r.idx.Close(); err != nil {
			errs = append(errs, err)
		}
		m.closeErr = errors.Join(errs...)
		defer close(m.closed)
		if m.closeErr != nil {
			r.log.Error("unmount", "err", m.closeErr)
		} else {
			r.log.Info("unmounted")
		}
	})
	return m.closeErr
}

// ensureRoot creates the root directory of a new index.
func (r *fsys) ensureRoot() error {
	_, err := r.idx.GetInode(meta.RootIno)
	if err == nil {
		return nil
	}
	if !errors.Is(err, meta.ErrNotFound) {
		return err
	}
	now := time.Now().UnixNano()
	root := meta.Inode{Ino: meta.RootIno, Mode: syscall.S_IFDIR | 0o755, Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()),
		Nlink: 2, Atime: now, Mtime: now, Ctime: now}
	b := r.idx.NewBatch()
	b.PutInode(&root)
	return b.Commit(true)
}

// recover purges inodes that were unlinked while open when the last mount
// ended and, if collect (the index is known whole and the last mount says
// unreferenced chunks may be left: see clean.go), deletes chunks that no
// index entry references (written but never committed before a crash, or
// superseded but not yet deleted). Without collect it reads nothing but
// the orphan list.
func (r *fsys) recover(collect bool) error {
	orphans, err := r.idx.Orphans()
	if err != nil {
		return err
	}
	for _, ino := range orphans {
		b := r.idx.NewBatch()
		if _, err := r.purgeInode(b, ino); err != nil {
			b.Discard()
			return err
		}
		if err := b.Commit(false); err != nil {
			return err
		}
	}
	if err := r.idx.Sync(); err != nil {
		return err
	}
	if !collect {
		if r.owe.Load() {
			r.log.Info("the last mount did not end with a clean unmount: chunks no file references are kept until the next clean unmount and mount")
		}
		return nil
	}
	refs := map[meta.ChunkID]struct{}{}
	var bad error
	err = r.idx.Walk(meta.Visitor{
		Chunk: func(_, _ uint64, ref meta.ChunkRef) { refs[ref.ID] = struct{}{} },
		Blob:  func(id meta.ChunkID, _ uint32) { refs[id] = struct{}{} },   // kept by a backup
		Pin:   func(id meta.ChunkID, _ meta.Pin) { refs[id] = struct{}{} }, // kept by a version
		Bad: func(key []byte, err error) {
			if bad == nil {
				bad = fmt.Errorf("index record %x: %w (run `fincrypt check`)", key, err)
			}
		},
	})
	if err != nil {
		return err
	}
	if bad != nil {
		// An unreadable chunk map entry could reference any chunk: collect nothing.
		r.log.Error("index has unreadable records; not collecting unreferenced chunks", "err", bad)
		r.owe.Store(true)
		return nil
	}
	removed := 0
	err = r.store.List(func(id meta.ChunkID) error {
		if _, ok := refs[id]; ok {
			return nil
		}
		removed++
		return r.store.Delete(id)
	}, nil)
	if err != nil {
		r.owe.Store(true)
		return err
	}
	if removed > 0 {
		r.log.Info("removed unreferenced chunks", "count", removed)
	}
	return r.store.Sync()
}

// newStoreFormat is the format of a store the mount creates (tests that
// work on format 1's chunk files set it to chunkstore.FormatFiles).
var newStoreFormat = chunkstore.CurrentFormat

// panicked handles a panic in a FUSE handler. Answering EIO and serving on
// could leave locks held (Pebble panics with its own mutex held when it
// cannot write its log), so that every later call on the mount hangs: the
// process stops instead, the kernel fails the mount's calls at once, and the
// next mount recovers the index as after a crash (fsynced data is intact).
func (r *fsys) panicked(v any) fuse.Status {
	buf := make([]byte, 64<<10)
	buf = buf[:runtime.Stack(buf, false)]
	r.log.Error("the file system stopped after an internal error; remount to recover", "panic", fmt.Sprint(v), "stack", string(buf))
	fmt.Fprintf(os.Stderr, "fincrypt: the file system stopped after an internal error: %v\n", v)
	os.Exit(exitPanic)
	return fuse.EIO
}

// fatalBackground handles a panic in background work that ran inside the
// index's database: as for a handler (panicked), the process stops rather
// than leave the database's locks held and every later call hanging.
func (r *fsys) fatalBackground(work string, v any, stack []byte) {
	r.log.Error("the file system stopped after an internal error in the index; remount to recover", "work", work, "panic", fmt.Sprint(v), "stack", string(stack))
	fmt.Fprintf(os.Stderr, "fincrypt: the file system stopped after an internal error in the index (%s): %v\n", work, v)
	os.Exit(exitPanic)
}

// exitPanic is the mount process's exit status after a panic in a handler.
const exitPanic = 70

// supersede schedules chunk id for deletion once the commit that stopped
// referencing it is durable.
func (r *fsys) supersede(ids ...meta.ChunkID) {
	if len(ids) == 0 {
		return
	}
	r.pendMu.Lock()
	r.pending = append(r.pending, ids...)
	r.pendMu.Unlock()
}

// syncAll makes every chunk and every index commit so far durable, in that
// order, then deletes the chunks superseded before it.
func (r *fsys) syncAll() error {
	if err := r.store.Sync(); err != nil {
		return err
	}
	return r.syncIndex()
}

// syncIndex makes every index commit so far durable, then deletes the chunks
// those commits superseded.
func (r *fsys) syncIndex() error {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	r.pendMu.Lock()
	n := len(r.pending)
	r.pendMu.Unlock()
	if err := r.idx.Sync(); err != nil {
		return fmt.Errorf("index sync: %w", err)
	}
	// While a version of the mount is being taken, dropped chunks wait
	// for the next sync: the version may pin them (backup.TakeVersion).
	unlock, ok := r.idx.TryLockDrops()
	if !ok {
		// Should the mount end before the next sync, the next mount
		// collects them.
		r.owe.Store(true)
		return nil
	}
	defer unlock()
	r.pendMu.Lock()
	del := append([]meta.ChunkID(nil), r.pending[:n]...)
	r.pending = append(r.pending[:0], r.pending[n:]...)
	r.pendMu.Unlock()
	for _, id := range del {
		if pinned, err := r.idx.Pinned(id); err != nil || pinned {
			if err != nil {
				r.owe.Store(true) // the next mount collects it if no pin keeps it
			}
			continue // a version keeps it (Sweep deletes it once none does)
		}
		if err := r.store.Delete(id); err != nil {
			r.owe.Store(true) // the next mount collects it
			r.log.Warn("deleting superseded chunk", "err", err)
		}
	}
	if len(del) > 0 {
		r.store.FreeDeleted() // packs: give the space back now, not at the next sync
	}
	return nil
}

// purgeInode adds to b the removal of inode ino with its chunks, xattrs and
// orphan record, and returns the chunk ids, which the caller passes to
// supersede once b is committed.
func (r *fsys) purgeInode(b *meta.Batch, ino uint64) ([]meta.ChunkID, error) {
	var ids []meta.ChunkID
	err := r.idx.Chunks(ino, 0, func(idx uint64, ref meta.ChunkRef) error {
		b.DeleteChunk(ino, idx)
		ids = append(ids, ref.ID)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = r.idx.ListXattr(ino, func(name string, _ []byte) error {
		b.DeleteXattr(ino, name)
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.DeleteInode(ino)
	b.DeleteOrphan(ino)
	return ids, nil
}

// errno maps an error to the errno a program expects.
func (r *fsys) errno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	switch {
	case errors.Is(err, errChunk) || errors.Is(err, vault.ErrTampered) || errors.Is(err, meta.ErrCorrupt):
		r.log.Error(op, "err", err)
		return syscall.EIO
	case errors.Is(err, meta.ErrNotFound):
		return syscall.ENOENT
	case errors.As(err, &e):
		if e == syscall.ENOSPC || e == syscall.EDQUOT {
			r.log.Warn(op, "err", err)
		}
		return e
	default:
		r.log.Error(op, "err", err)
		return syscall.EIO
	}
}
