package mediator

import (
	"context"
	"slices"
	"strings"
	"time"
)

// NodeStatus is one node in a status report. Scripts rely on the JSON
// names id, address, online, capacity, used, price, passed and failed.
type NodeStatus struct {
	ID         string    `json:"id"`
	Address    string    `json:"address"`
	Online     bool      `json:"online"`
	Capacity   uint64    `json:"capacity"`
	Used       uint64    `json:"used"`
	Price      uint64    `json:"price"`
	Passed     uint64    `json:"passed"`
	Failed     uint64    `json:"failed"`
	Contracted uint64    `json:"contracted"`
	Payout     string    `json:"payout_address"`
	LastSeen   time.Time `json:"last_seen"`
	// Placement (reputation.go): the verified address, reputation,
	// vetting and disqualification.
	IP           string  `json:"ip,omitempty"`
	Reputation   float64 `json:"reputation"`
	Vetted       bool    `json:"vetted"`
	Disqualified bool    `json:"disqualified,omitempty"`
}

// Status is the report of `fincrypt mediator status`. Scripts rely on the
// JSON names nodes, segments, pieces, healthy, lost and repaired.
type Status struct {
	Mediator string       `json:"mediator"` // NODEID@host:port
	Scheme   string       `json:"scheme"`
	Period   string       `json:"period"`
	Rounds   int64        `json:"rounds"`
	Nodes    []NodeStatus `json:"nodes"`
	Segments int64        `json:"segments"`
	Pieces   int64        `json:"pieces"`
	Healthy  int64        `json:"healthy"`
	Lost     int64        `json:"lost"`
	Repaired int64        `json:"repaired"`
	// Schedule and settlement (schedule.go): periods that passed without
	// a round, rounds run again after an interruption, and the start of
	// the last completed and the last settled period.
	PeriodGaps     int64     `json:"period_gaps"`
	RoundsRerun    int64     `json:"rounds_rerun"`
	LastRound      time.Time `json:"last_round,omitzero"`
	SettledThrough time.Time `json:"settled_through,omitzero"`
}

// Status reports every node and the network's counts (kept by the store,
// so a status costs one read per node, not a scan of the contracts).
func (c *core) Status(ctx context.Context, self string) (*Status, error) {
	st := &Status{Mediator: self, Scheme: c.cfg.Scheme.String(), Period: c.cfg.Period.String(), Nodes: []NodeStatus{}}
	nodes, err := c.store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	now := c.now()
	for _, n := range nodes {
		st.Nodes = append(st.Nodes, NodeStatus{
			ID: n.ID.String(), Address: n.Address, Online: c.online(n, now),
			Capacity: n.Capacity, Used: n.Used, Price: n.Price, Passed: n.Passed, Failed: n.Failed,
			Contracted: n.Contracted, Payout: n.PayoutAddress, LastSeen: n.LastSeen.UTC(),
			Reputation: n.Reputation(), Vetted: c.vetted(n), Disqualified: !n.Disqualified.IsZero(),
		})
		if n.IP.IsValid() {
			st.Nodes[len(st.Nodes)-1].IP = n.IP.String()
		}
	}
	slices.SortFunc(st.Nodes, func(a, b NodeStatus) int { return strings.Compare(a.ID, b.ID) })
	for name, v := range map[string]*int64{CounterSegments: &st.Segments, CounterPieces: &st.Pieces, CounterHealthy: &st.Healthy} {
		if *v, err = c.store.Counter(ctx, name); err != nil {
			return nil, err
		}
	}
	st.Lost = st.Pieces - st.Healthy
	if st.Repaired, err = c.store.Counter(ctx, CounterRepaired); err != nil {
		return nil, err
	}
	if st.Rounds, err = c.store.Counter(ctx, CounterRounds); err != nil {
		return nil, err
	}
	if err := c.scheduleStatus(ctx, st); err != nil {
		return nil, err
	}
	return st, nil
}
