package fs

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
)

// OpMetrics counts the FUSE requests the mount serves, by operation, with
// their latency (fincrypt_mount_fuse_op_duration_seconds{op}, whose count
// is the number of requests) and errors (fincrypt_mount_fuse_op_errors_total
// {op}, any status but OK; a lookup of a missing name is an answer, not an error). It wraps the
// raw file system at one place (Options.Metrics): every request of the
// listed operations passes through it; others are not counted.
type OpMetrics struct {
	dur  *prometheus.HistogramVec
	errs *prometheus.CounterVec
}

// fuseOps are the operations counted, one label value each.
var fuseOps = []string{"lookup", "getattr", "setattr", "mknod", "mkdir", "unlink", "rmdir", "rename", "link", "symlink",
	"readlink", "create", "open", "read", "write", "flush", "fsync", "release", "opendir", "readdir", "readdirplus",
	"statfs", "fallocate", "getxattr", "listxattr", "setxattr", "removexattr", "copy_file_range", "lseek"}

// NewOpMetrics makes the FUSE operation metrics.
func NewOpMetrics() *OpMetrics {
	m := &OpMetrics{
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "fincrypt", Subsystem: "mount", Name: "fuse_op_duration_seconds",
			Help:    "Time to serve a FUSE request, by operation.",
			Buckets: []float64{1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1, 5}}, []string{"op"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "fincrypt", Subsystem: "mount", Name: "fuse_op_errors_total",
			Help: "FUSE requests answered with an error, by operation."}, []string{"op"}),
	}
	for _, op := range fuseOps {
		m.dur.WithLabelValues(op)
		m.errs.WithLabelValues(op)
	}
	return m
}

// Collectors are the metrics to register.
func (m *OpMetrics) Collectors() []prometheus.Collector { return []prometheus.Collector{m.dur, m.errs} }

// opStat is one operation's pre-resolved histogram and error counter.
type opStat struct {
	dur  prometheus.Observer
	errs prometheus.Counter
}

func (o *opStat) done(start time.Time, st fuse.Status) fuse.Status {
	o.dur.Observe(time.Since(start).Seconds())
	if st != fuse.OK {
		o.errs.Inc()
	}
	return st
}

// metricsFS wraps a raw file system, timing each counted request. The
// methods not overridden here pass through uncounted.
type metricsFS struct {
	fuse.RawFileSystem
	lookup, getattr, setattr, mknod, mkdir, unlink, rmdir, rename, link, symlink, readlink, create, open, read, write,
	flush, fsync, release, opendir, readdir, readdirplus, statfs, fallocate, getxattr, listxattr, setxattr, removexattr,
	copyFileRange, lseek *opStat
}

func (m *OpMetrics) wrap(fs fuse.RawFileSystem) fuse.RawFileSystem {
	w := &metricsFS{RawFileSystem: fs}
	st := func(op string) *opStat {
		return &opStat{dur: m.dur.WithLabelValues(op), errs: m.errs.WithLabelValues(op)}
	}
	w.lookup, w.getattr, w.setattr, w.mknod, w.mkdir = st("lookup"), st("getattr"), st("setattr"), st("mknod"), st("mkdir")
	w.unlink, w.rmdir, w.rename, w.link, w.symlink = st("unlink"), st("rmdir"), st("rename"), st("link"), st("symlink")
	w.readlink, w.create, w.open, w.read, w.write = st("readlink"), st("create"), st("open"), st("read"), st("write")
	w.flush, w.fsync, w.release, w.opendir, w.readdir = st("flush"), st("fsync"), st("release"), st("opendir"), st("readdir")
	w.readdirplus, w.statfs, w.fallocate, w.getxattr = st("readdirplus"), st("statfs"), st("fallocate"), st("getxattr")
	w.listxattr, w.setxattr, w.removexattr = st("listxattr"), st("setxattr"), st("removexattr")
	w.copyFileRange, w.lseek = st("copy_file_range"), st("lseek")
	return w
}

func (w *metricsFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	return w.lookup.done(t, w.RawFileSystem.Lookup(c, h, name, out))
}
func (w *metricsFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	return w.getattr.done(t, w.RawFileSystem.GetAttr(c, in, out))
}
func (w *metricsFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	return w.setattr.done(t, w.RawFileSystem.SetAttr(c, in, out))
}
func (w *metricsFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	return w.mknod.done(t, w.RawFileSystem.Mknod(c, in, name, out))
}
func (w *metricsFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	return w.mkdir.done(t, w.RawFileSystem.Mkdir(c, in, name, out))
}
func (w *metricsFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t := time.Now()
	return w.unlink.done(t, w.RawFileSystem.Unlink(c, h, name))
}
func (w *metricsFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t := time.Now()
	return w.rmdir.done(t, w.RawFileSystem.Rmdir(c, h, name))
}
func (w *metricsFS) Rename(c <-chan struct{}, in *fuse.RenameIn, from, to string) fuse.Status {
	t := time.Now()
	return w.rename.done(t, w.RawFileSystem.Rename(c, in, from, to))
}
func (w *metricsFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	return w.link.done(t, w.RawFileSystem.Link(c, in, name, out))
}
func (w *metricsFS) Symlink(c <-chan struct{}, h *fuse.InHeader, to, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	return w.symlink.done(t, w.RawFileSystem.Symlink(c, h, to, name, out))
}
func (w *metricsFS) Readlink(c <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	t := time.Now()
	b, st := w.RawFileSystem.Readlink(c, h)
	return b, w.readlink.done(t, st)
}
func (w *metricsFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	t := time.Now()
	return w.create.done(t, w.RawFileSystem.Create(c, in, name, out))
}
func (w *metricsFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	return w.open.done(t, w.RawFileSystem.Open(c, in, out))
}
func (w *metricsFS) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t := time.Now()
	r, st := w.RawFileSystem.Read(c, in, buf)
	return r, w.read.done(t, st)
}
func (w *metricsFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.Write(c, in, data)
	return n, w.write.done(t, st)
}
func (w *metricsFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.Writev(c, in, data)
	return n, w.write.done(t, st)
}
func (w *metricsFS) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	t := time.Now()
	return w.flush.done(t, w.RawFileSystem.Flush(c, in))
}
func (w *metricsFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t := time.Now()
	return w.fsync.done(t, w.RawFileSystem.Fsync(c, in))
}
func (w *metricsFS) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	t := time.Now()
	w.RawFileSystem.Release(c, in)
	w.release.done(t, fuse.OK)
}
func (w *metricsFS) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	return w.opendir.done(t, w.RawFileSystem.OpenDir(c, in, out))
}
func (w *metricsFS) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := time.Now()
	return w.readdir.done(t, w.RawFileSystem.ReadDir(c, in, out))
}
func (w *metricsFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := time.Now()
	return w.readdirplus.done(t, w.RawFileSystem.ReadDirPlus(c, in, out))
}
func (w *metricsFS) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	t := time.Now()
	return w.statfs.done(t, w.RawFileSystem.StatFs(c, h, out))
}
func (w *metricsFS) Fallocate(c <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	t := time.Now()
	return w.fallocate.done(t, w.RawFileSystem.Fallocate(c, in))
}
func (w *metricsFS) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.GetXAttr(c, h, attr, dest)
	return n, w.getxattr.done(t, st)
}
func (w *metricsFS) ListXAttr(c <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.ListXAttr(c, h, dest)
	return n, w.listxattr.done(t, st)
}
func (w *metricsFS) SetXAttr(c <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	t := time.Now()
	return w.setxattr.done(t, w.RawFileSystem.SetXAttr(c, in, attr, data))
}
func (w *metricsFS) RemoveXAttr(c <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	t := time.Now()
	return w.removexattr.done(t, w.RawFileSystem.RemoveXAttr(c, h, attr))
}
func (w *metricsFS) CopyFileRange(c <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.CopyFileRange(c, in)
	return n, w.copyFileRange.done(t, st)
}
func (w *metricsFS) Lseek(c <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	t := time.Now()
	return w.lseek.done(t, w.RawFileSystem.Lseek(c, in, out))
}
