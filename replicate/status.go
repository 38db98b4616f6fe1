package replicate

import (
	"context"
	"time"

	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/meta"
)

// Status is what `fincrypt status --json` prints. Scripts rely on account,
// pending_bytes, pending_files, segments_durable, segments_degraded and
// last_sync; the other fields may grow.
type Status struct {
	Account          string     `json:"account"`
	Mediator         string     `json:"mediator,omitempty"`
	Scheme           string     `json:"scheme"`
	Online           bool       `json:"online"`
	PendingBytes     uint64     `json:"pending_bytes"`
	PendingFiles     int        `json:"pending_files"`
	PendingChunks    int        `json:"pending_chunks"`
	UnsavedOpenFiles int        `json:"unsaved_open_files"` // open files holding writes not yet in the index (counted in the pending figures)
	UploadDone       uint64     `json:"upload_done_bytes"`
	UploadTotal      uint64     `json:"upload_total_bytes"`
	SegmentsDurable  int        `json:"segments_durable"`
	SegmentsDegraded int        `json:"segments_degraded"`
	SegmentsDead     int        `json:"segments_dead"`
	StoredBytes      uint64     `json:"stored_bytes"`
	LiveBytes        uint64     `json:"live_bytes"`
	LiveCounted      *time.Time `json:"live_counted_at"` // live bytes are counted by maintenance, once a MaintainInterval
	MinHealthy       int        `json:"min_healthy_pieces"`
	CacheBytes       uint64     `json:"cache_bytes"`
	CacheLimit       uint64     `json:"cache_limit"`
	LastSync         *time.Time `json:"last_sync"`
	LastSnapshot     *time.Time `json:"last_snapshot"`
	NextRetry        *time.Time `json:"next_retry,omitempty"`
	Errors           []string   `json:"errors"`
	Escrow           string     `json:"escrow_warning,omitempty"` // from the mediator, when payments are on

	// Faults is the background work that is failing now (uploads, fetches,
	// cache trimming, snapshots, maintenance, the file system's syncs):
	// what, since when, why. Empty while everything works; each entry is
	// cleared by that work's next success.
	Faults []fault.Fault `json:"faults"`

	// Protection and payments (escrowstatus.go): whether new data reaches
	// the network, why not, and what the account pays.
	Protected bool           `json:"protected"`
	Refusal   *Refusal       `json:"refusal,omitempty"`
	Payments  *PaymentStatus `json:"payments,omitempty"`

	// Restorability (protect.go). Restorable is true only when nothing is
	// pending and the newest stored index snapshot covers every change, so
	// that a restore would bring back everything written so far.
	// UnprotectedSince is the oldest change that a restore would miss;
	// SnapshotCovers is when the newest stored snapshot's export was read.
	Restorable       bool       `json:"restorable"`
	UnprotectedSince *time.Time `json:"unprotected_since"`
	SnapshotCovers   *time.Time `json:"snapshot_covers"`

	// Inodes is the mount's inode bound (`fincrypt mount --max-inodes`),
	// once the mount reports it (ReportInodes).
	Inodes *InodeStatus `json:"inodes,omitempty"`
}

// InodeStatus is what the mount holds for the kernel (fs.InodeStats).
type InodeStatus struct {
	Live           int64 `json:"live"`            // tree inodes the kernel holds, each with a node in the mount
	Max            int   `json:"max"`             // the bound; 0: none
	Pruned         int64 `json:"pruned"`          // inodes the mount asked the kernel to forget
	PruneSupported bool  `json:"prune_supported"` // the kernel takes FUSE_NOTIFY_PRUNE (Linux 6.18 and later); without it nothing is bounded
}

// ReportInodes makes Status show the mount's inode bound (the command
// passes it once the mount is up).
func (r *Replicator) ReportInodes(fn func() InodeStatus) {
	r.mu.Lock()
	r.inodes = fn
	r.mu.Unlock()
}

// Status reports the engine's state; segment counts come from the index.
func (r *Replicator) Status(ctx context.Context) Status {
	r.mu.Lock()
	st := r.st
	lastSync, lastSnap := r.lastSync, r.lastSnapshot
	st.Escrow = r.escrow
	for _, e := range r.errs {
		st.Errors = append(st.Errors, e.at.UTC().Format(time.RFC3339)+" "+e.msg)
	}
	if !r.retryAt.IsZero() && time.Now().Before(r.retryAt) {
		t := r.retryAt
		st.NextRetry = &t
	}
	balance, balanceAt, refused := r.balance, r.balanceAt, r.refused
	r.mu.Unlock()
	// Online means the mediator answered the latest call (a refusal is an
	// answer).
	if ok, _, last := r.client.MediatorAnswers(); !last.IsZero() {
		st.Online = ok
	}
	st.Faults = r.faults.List()
	if st.Errors == nil {
		st.Errors = []string{}
	}
	// Pending work from the index itself, so that it is current even while
	// the engine waits on the network, and what the mount's open files
	// hold that the index does not have yet.
	files := map[uint64]struct{}{}
	pend, err := r.pending()
	if err == nil {
		st.PendingBytes, st.PendingChunks = 0, len(pend)
		for _, c := range pend {
			st.PendingBytes += uint64(c.size)
			if c.ino != 0 {
				files[c.ino] = struct{}{}
			}
		}
	}
	r.mu.Lock()
	unsaved, inodes := r.unsaved, r.inodes
	r.mu.Unlock()
	if inodes != nil {
		in := inodes()
		st.Inodes = &in
	}
	if unsaved != nil {
		inos, chunks, bytes := unsaved()
		st.UnsavedOpenFiles = len(inos)
		st.PendingChunks += chunks
		st.PendingBytes += bytes
		for _, ino := range inos {
			files[ino] = struct{}{}
		}
	}
	if err == nil {
		st.PendingFiles = len(files)
	} else {
		st.PendingFiles += len(files) // the engine's last count, and the open files
	}
	r.segmentCounts(&st)
	st.Payments = paymentStatus(balance, balanceAt, float64(r.cfg.Scheme.N)/float64(r.cfg.Scheme.K))
	st.Refusal = escrowRefusal(balance)
	if st.Refusal == nil && refused != nil {
		f := *refused
		st.Refusal = &f
	}
	if st.Refusal != nil {
		st.Refusal.WaitingBytes = st.PendingBytes
	}
	st.Protected = st.Refusal == nil
	if !lastSync.IsZero() {
		t := lastSync.UTC()
		st.LastSync = &t
	}
	if !lastSnap.IsZero() {
		t := lastSnap.UTC()
		st.LastSnapshot = &t
	}
	r.restorability(&st)
	return st
}

// segStats are the segment counts of Status.
type segStats struct {
	durable, degraded, dead, minHealthy int
	stored                              uint64
}

// segmentCounts fills the segment counts of st from the segment records,
// read again only after one changed (meta.Index.SegmentGeneration).
func (r *Replicator) segmentCounts(st *Status) {
	sg := r.idx.SegmentGeneration()
	r.mu.Lock()
	c, ok := r.segStats, r.segStatsGen == sg+1
	r.mu.Unlock()
	if !ok {
		c = segStats{minHealthy: -1}
		err := r.idx.Segments(func(s meta.Segment) error {
			if s.Kind != meta.KindData {
				return nil
			}
			switch {
			case s.DeadSince != 0:
				c.dead++
			case s.State == meta.SegmentDegraded:
				c.degraded++
			default:
				c.durable++
			}
			c.stored += uint64(s.Class)
			if c.minHealthy < 0 || int(s.Healthy) < c.minHealthy {
				c.minHealthy = int(s.Healthy)
			}
			return nil
		})
		if c.minHealthy < 0 {
			c.minHealthy = 0
		}
		if err == nil {
			r.mu.Lock()
			r.segStats, r.segStatsGen = c, sg+1
			r.mu.Unlock()
		}
	}
	st.SegmentsDurable, st.SegmentsDegraded, st.SegmentsDead = c.durable, c.degraded, c.dead
	st.StoredBytes, st.MinHealthy = c.stored, c.minHealthy
}
