package mediator

import (
	"context"
	"time"
)

// The schedule (docs/WALLET.md, "Periods"): a challenge round starts every
// Period; its start names the period. Each round is settled once, after it
// completed, by the settlement service, which runs beside the schedule so
// that a slow or absent bitcoin node never delays a round.
//
// Counters kept in the store:
const (
	// counterLastRound is the start of the latest round begun.
	counterLastRound = "last_round_unix_nano"
	// CounterRoundDone is the start of the latest round that completed:
	// settlement reads the period records up to it, never those of a
	// round still running or interrupted.
	CounterRoundDone = "round_done_unix_nano"
	// CounterPeriodGaps counts the periods in which no round started (the
	// mediator was down or a round overran): nobody was challenged, so
	// nothing is charged or paid for them. Each gap is also logged.
	CounterPeriodGaps = "period_gaps"
	// CounterRoundsRerun counts rounds interrupted (a crash, a stop) and
	// run again for their own period at the next start.
	CounterRoundsRerun = "rounds_rerun"
)

// setCounter stores v in a counter (AddCounter of the difference).
func setCounter(ctx context.Context, s Store, name string, v int64) error {
	cur, err := s.Counter(ctx, name)
	if err != nil {
		return err
	}
	_, err = s.AddCounter(ctx, name, v-cur)
	return err
}

// schedule runs a challenge round and a repair scan every period. The
// start of the last round is stored, so a restarted mediator keeps the
// schedule instead of starting a fresh period; a round that a crash
// interrupted is run again for its own period first, and periods that
// passed without a round are counted as gaps.
func (p *Peer) schedule(ctx context.Context) error {
	c := p.core
	// Give the nodes one online window to heartbeat this process first, so
	// that a round right after a restart does not take them for offline.
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(min(p.Config.OnlineWindow, p.Config.Period)):
	}
	if err := p.rerunInterrupted(ctx); err != nil {
		return err
	}
	for {
		last, err := p.Store.Counter(ctx, counterLastRound)
		if err != nil {
			return err
		}
		next := time.Now().Add(p.Config.Period)
		if last != 0 {
			next = time.Unix(0, last).Add(p.Config.Period)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(next)):
		}
		start := time.Now()
		if last != 0 {
			if missed := int64(start.Sub(time.Unix(0, last))/p.Config.Period) - 1; missed > 0 {
				p.Log.Warn("periods without a challenge round: nothing is charged or paid for them",
					"periods", missed, "after", time.Unix(0, last).UTC().Format(time.RFC3339Nano), "until", start.UTC().Format(time.RFC3339Nano))
				if _, err := p.Store.AddCounter(ctx, CounterPeriodGaps, missed); err != nil {
					return err
				}
			}
		}
		if err := setCounter(ctx, p.Store, counterLastRound, start.UnixNano()); err != nil {
			return err
		}
		if _, err := c.roundAt(ctx, start); err != nil && ctx.Err() == nil {
			p.Log.Error("challenge round", "err", err)
		}
		if _, err := c.RepairScan(ctx); err != nil && ctx.Err() == nil {
			p.Log.Error("repair scan", "err", err)
		}
		p.wakeSettlement()
	}
}

// rerunInterrupted runs the round of the last period again if it began
// and did not complete (and is not settled): its records may be partial or
// missing, and the period must be audited and settled like any other.
func (p *Peer) rerunInterrupted(ctx context.Context) error {
	last, err := p.Store.Counter(ctx, counterLastRound)
	if err != nil || last == 0 {
		return err
	}
	done, err := p.Store.Counter(ctx, CounterRoundDone)
	if err != nil {
		return err
	}
	settled, err := p.Store.Counter(ctx, CounterSettled)
	if err != nil {
		return err
	}
	if done >= last || settled >= last {
		return nil
	}
	period := time.Unix(0, last)
	p.Log.Warn("the challenge round of a period was interrupted; running it again for that period", "period", period.UTC().Format(time.RFC3339Nano))
	if _, err := p.Store.AddCounter(ctx, CounterRoundsRerun, 1); err != nil {
		return err
	}
	if _, err := p.core.roundAt(ctx, period); err != nil && ctx.Err() == nil {
		p.Log.Error("challenge round (rerun)", "err", err)
	}
	p.wakeSettlement()
	return nil
}

func (p *Peer) wakeSettlement() {
	select {
	case p.settleNow <- struct{}{}:
	default:
	}
}

// settlement settles completed periods, releases delinquent accounts and
// pays out: at start, after every round and every SyncInterval (so that
// periods queued while the bitcoin node was away are settled in order
// once it is back). It never holds up the schedule.
func (p *Peer) settlement(ctx context.Context) error {
	every := DefaultSyncInterval
	if p.pay != nil && p.pay.cfg.SyncInterval > 0 {
		every = p.pay.cfg.SyncInterval
	}
	every = min(every, p.Config.Period)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		p.settleLogged(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-p.settleNow:
		case <-tick.C:
		}
	}
}

// settleLogged settles and pays out, logging failures: a Bitcoin node that
// is down must not stop challenges and repair; the next try catches up.
func (p *Peer) settleLogged(ctx context.Context) {
	res, err := p.core.settle(ctx)
	if err != nil && ctx.Err() == nil {
		p.Log.Error("settlement", "err", err)
	}
	for _, r := range res.Reports {
		var earned, shortfall int64
		for _, l := range r.Lines {
			earned += l.Earned
			shortfall += l.Shortfall
		}
		p.Log.Debug("period settled", "period", r.Period, "lines", len(r.Lines), "earned", earned, "shortfall", shortfall, "unmetered", r.Unmetered)
	}
}

// scheduleStatus fills the schedule's part of a status report.
func (c *core) scheduleStatus(ctx context.Context, st *Status) error {
	at := func(name string, t *time.Time) error {
		v, err := c.store.Counter(ctx, name)
		if err == nil && v != 0 {
			*t = time.Unix(0, v).UTC()
		}
		return err
	}
	var err error
	if st.PeriodGaps, err = c.store.Counter(ctx, CounterPeriodGaps); err != nil {
		return err
	}
	if st.RoundsRerun, err = c.store.Counter(ctx, CounterRoundsRerun); err != nil {
		return err
	}
	if err := at(CounterRoundDone, &st.LastRound); err != nil {
		return err
	}
	return at(CounterSettled, &st.SettledThrough)
}
