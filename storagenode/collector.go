package storagenode

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Collector deletes pieces that have had no live contract for the grace
// period the mediator sets. It asks the mediator about every held piece,
// in batches, once per GC interval; a piece the mediator does not call live
// is marked orphaned, and deleted once it has stayed orphaned for the grace
// period. A piece that becomes live again is unmarked. Without a policy
// (grace 0) or without the mediator nothing is deleted.
type Collector struct {
	log     *slog.Logger
	store   PieceStore
	contact *Contact
	now     func() time.Time
}

func newCollector(log *slog.Logger, store PieceStore, contact *Contact) *Collector {
	return &Collector{log: log, store: store, contact: contact, now: time.Now}
}

// Run collects every GC interval until ctx is done.
func (g *Collector) Run(ctx context.Context) error {
	for {
		p, ok := g.contact.Policy()
		interval := p.GCInterval
		if !ok || p.GracePeriod <= 0 || interval <= 0 {
			interval = time.Second // poll for a policy
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if !ok || p.GracePeriod <= 0 || p.GCInterval <= 0 {
			continue
		}
		if n, err := g.Collect(ctx, p.GracePeriod); err != nil {
			g.log.Warn("garbage collection incomplete", "err", err)
		} else if n > 0 {
			g.log.Info("collected pieces without a live contract", "deleted", n)
		}
	}
}

// Collect runs one pass and returns how many pieces it deleted.
func (g *Collector) Collect(ctx context.Context, grace time.Duration) (int, error) {
	deleted := 0
	var after *challenge.PieceID
	for {
		batch, err := g.store.List(after, fnet.MaxLivePieces)
		if err != nil {
			return deleted, err
		}
		if len(batch) == 0 {
			return deleted, nil
		}
		req := &fnet.LiveRequest{Pieces: make([]challenge.PieceID, len(batch))}
		for i, p := range batch {
			req.Pieces[i] = p.ID
		}
		m, err := g.contact.Call(ctx, req)
		if err != nil {
			return deleted, fmt.Errorf("live pieces: %w", err)
		}
		rep, ok := m.(*fnet.LiveReply)
		if !ok || len(rep.Live) != len(batch) {
			return deleted, fmt.Errorf("live pieces: %w: bad reply", fnet.ErrMalformed)
		}
		now := g.now()
		for i, p := range batch {
			switch {
			case rep.Live[i] && !p.OrphanedAt.IsZero():
				err = g.store.SetOrphaned(p.ID, time.Time{})
			case rep.Live[i]:
			case p.OrphanedAt.IsZero():
				err = g.store.SetOrphaned(p.ID, now)
			case now.Sub(p.OrphanedAt) >= grace:
				g.log.Debug("deleting piece without a live contract", "piece", p.ID, "orphaned_at", p.OrphanedAt)
				// Only if still marked since then: a piece uploaded
				// again after the mediator answered is kept.
				var gone bool
				if gone, err = g.store.DeleteOrphan(p.ID, p.OrphanedAt); gone && err == nil {
					deleted++
				}
			}
			if err != nil {
				return deleted, err
			}
		}
		after = &batch[len(batch)-1].ID
	}
}
