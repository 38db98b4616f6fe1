package testplanet_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os/exec"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/internal/pgtest"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/wallet"
)

// planetOutcome is what a seeded scenario produced, by node index (ids
// differ from run to run), so that two runs on different stores compare.
type planetOutcome struct {
	Placement   [][]int // per segment, the node of each piece, at commit
	AfterRepair [][]int // the same after the repair of two damaged pieces
	States      [][]mediator.PieceState
	Counts      [5]int64          // segments, pieces, healthy, lost, repaired
	Period      map[int][3]uint64 // a full period's records: node -> bytes, pieces, price
	Earners     []int             // nodes with unmetered earnings in the ledger
	Damaged     []int             // the damaged nodes, each seen failing a challenge
}

// pgScenario runs one seeded scenario on a planet of 7 nodes (none vetted,
// so that placement is by price alone and repeatable): three segments
// placed, a period settled into the ledger, one piece deleted and one
// flipped, both repaired, then a mediator restart that must lose nothing.
func pgScenario(t *testing.T, db string) planetOutcome {
	cfg := testplanet.Config{StorageNodes: 7, Prices: bigPrices(7), Reconfigure: func(c *mediator.Config) {
		c.DB = db
		c.Payments = mediator.Payments{Passphrase: testPassphrase, KDF: cheapKDF}
		c.Placement.VettingChallenges = 1 << 40
	}}
	var out planetOutcome
	testplanet.Run(t, cfg, func(t *testing.T, p *testplanet.Planet) {
		ctx := p.Context()
		var segs []fnet.SegmentID
		var data [][]byte
		for i := 0; i < 3; i++ {
			d := randomData(uint64(40+i), segSize)
			seg, err := p.Client.Store(ctx, p.Scheme(), d)
			if err != nil {
				t.Fatal(err)
			}
			segs, data = append(segs, seg), append(data, d)
		}
		nodesOf := func() ([][]int, [][]mediator.PieceState) {
			var ns [][]int
			var ss [][]mediator.PieceState
			for _, s := range segs {
				var n []int
				var st []mediator.PieceState
				for _, pc := range p.Segment(s).Pieces {
					n, st = append(n, p.NodeIndex(pc.Node)), append(st, pc.State)
				}
				ns, ss = append(ns, n), append(ss, st)
			}
			return ns, ss
		}
		out.Placement, _ = nodesOf()

		// A full period after the commits, from the period records.
		committed := time.Now()
		r0 := p.Status().Rounds
		p.WaitFor("two rounds after the commits", 20*time.Second, func(st *mediator.Status) bool { return st.Rounds >= r0+2 })
		recs, err := p.Mediator.Peer.Store.PeriodRecords(ctx, committed, time.Now())
		if err != nil || len(recs) == 0 {
			t.Fatalf("period records: %d %v", len(recs), err)
		}
		first := recs[0].Period
		out.Period = map[int][3]uint64{}
		for _, r := range recs {
			if r.Period.Equal(first) {
				out.Period[p.NodeIndex(r.Node)] = [3]uint64{r.Bytes, uint64(r.Pieces), r.Price}
			}
		}

		// Damage: a piece deleted, another flipped; both repaired.
		a, b := p.Segment(segs[0]), p.Segment(segs[1])
		delNode, flipNode := p.NodeIndex(a.Pieces[0].Node), p.NodeIndex(b.Pieces[1].Node)
		p.DeletePiece(delNode, a.Pieces[0].ID)
		p.FlipByte(flipNode, b.Pieces[1].ID, 100)
		st := p.WaitFor("both pieces repaired", 30*time.Second, func(st *mediator.Status) bool {
			return st.Repaired >= 2 && st.Healthy == 15
		})
		out.Counts = [5]int64{st.Segments, st.Pieces, st.Healthy, st.Lost, st.Repaired}
		for _, n := range st.Nodes {
			id, _ := fnet.ParseNodeID(n.ID)
			if i := p.NodeIndex(id); (i == delNode || i == flipNode) && n.Failed > 0 {
				out.Damaged = append(out.Damaged, i)
			}
		}
		sort.Ints(out.Damaged)
		out.AfterRepair, out.States = nodesOf()

		// Settlement: every node that holds a piece earns in the ledger
		// (unmetered: no Bitcoin node), the ledger balances.
		holders := map[int]bool{}
		for _, ns := range out.AfterRepair {
			for _, n := range ns {
				holders[n] = true
			}
		}
		w := p.Mediator.Peer.Wallet()
		waitUntil(t, "unmetered earnings of every node holding pieces", 30*time.Second, func() bool {
			bal, err := w.Balances("unmetered:")
			if err != nil {
				return false
			}
			for n := range holders {
				if bal[wallet.UnmeteredAccount(p.Nodes[n].ID().String())] <= 0 {
					return false
				}
			}
			return true
		})
		bal, _ := w.Balances("unmetered:")
		for i, n := range p.Nodes {
			if bal[wallet.UnmeteredAccount(n.ID().String())] > 0 {
				out.Earners = append(out.Earners, i)
			}
		}
		if err := w.CheckLedger(); err != nil {
			t.Fatal(err)
		}

		// A restart against the same store loses nothing.
		before := p.Status()
		beforeSegs, _ := nodesOf()
		p.RestartMediator()
		after := p.Status()
		if after.Segments != before.Segments || after.Pieces != before.Pieces || after.Healthy != before.Healthy ||
			after.Repaired != before.Repaired || after.Rounds < before.Rounds || len(after.Nodes) != len(before.Nodes) {
			t.Fatalf("after restart: %+v\nbefore: %+v", after, before)
		}
		for i, n := range after.Nodes {
			if n.ID != before.Nodes[i].ID || n.Passed < before.Nodes[i].Passed || n.Failed < before.Nodes[i].Failed {
				t.Fatalf("node results lost across the restart: %+v -> %+v", before.Nodes[i], n)
			}
		}
		if afterSegs, _ := nodesOf(); !reflect.DeepEqual(afterSegs, beforeSegs) {
			t.Fatalf("contracts changed across the restart: %v -> %v", beforeSegs, afterSegs)
		}
		for i, s := range segs {
			got, err := p.Client.Fetch(ctx, s, len(data[i]))
			if err != nil || !bytes.Equal(got, data[i]) {
				t.Fatalf("fetch of segment %d after restart: %v", i, err)
			}
		}
	})
	return out
}

// TestPlanetPostgresMatchesPebble runs the same seeded scenario with the
// mediator's state in Pebble and in PostgreSQL: placement, challenges,
// repair and settlement come out the same, and a restart on either store
// loses nothing.
func TestPlanetPostgresMatchesPebble(t *testing.T) {
	if testing.Short() {
		t.Skip("two planets; -short")
	}
	url := pgtest.NewDB(t)
	var peb, pg planetOutcome
	t.Run("Pebble", func(t *testing.T) { peb = pgScenario(t, "") })
	t.Run("Postgres", func(t *testing.T) { pg = pgScenario(t, url) })
	if t.Failed() {
		return
	}
	if !reflect.DeepEqual(peb, pg) {
		t.Fatalf("outcomes differ:\npebble:   %+v\npostgres: %+v", peb, pg)
	}
	// The outcome itself: placement by price on nodes 0-4, both damaged
	// nodes caught, both pieces moved to the cheapest free node.
	for i, ns := range pg.Placement {
		if s := slices.Sorted(slices.Values(ns)); !reflect.DeepEqual(s, []int{0, 1, 2, 3, 4}) {
			t.Fatalf("segment %d placed on %v, want the five cheapest", i, ns)
		}
	}
	if len(pg.Damaged) == 0 || pg.Counts != [5]int64{3, 15, 15, 0, 2} || len(pg.Period) != 5 {
		t.Fatalf("outcome: %+v", pg)
	}
	if slices.Contains(pg.Earners, 6) {
		t.Fatalf("node 6 never held a piece but earned: %v", pg.Earners)
	}
}

// TestPlanetMigrateToPostgres: a mediator's state made by a planet on
// Pebble is copied by `fincrypt mediator migrate` into PostgreSQL, and the
// mediator started on the database carries on with the same accounts,
// contracts, node records and ledger.
func TestPlanetMigrateToPostgres(t *testing.T) {
	url := pgtest.NewDB(t)
	cfg := testplanet.Config{StorageNodes: 5, Prices: bigPrices(5), Reconfigure: func(c *mediator.Config) {
		c.Payments = mediator.Payments{Passphrase: testPassphrase, KDF: cheapKDF}
	}}
	testplanet.Run(t, cfg, func(t *testing.T, p *testplanet.Planet) {
		ctx := p.Context()
		var segs []fnet.SegmentID
		var data [][]byte
		for i := 0; i < 2; i++ {
			d := randomData(uint64(50+i), segSize)
			seg, err := p.Client.Store(ctx, p.Scheme(), d)
			if err != nil {
				t.Fatal(err)
			}
			segs, data = append(segs, seg), append(data, d)
		}
		w := p.Mediator.Peer.Wallet()
		waitUntil(t, "unmetered earnings of every node", 30*time.Second, func() bool {
			b, err := w.Balances("unmetered:")
			return err == nil && len(b) == 5
		})
		st := p.Mediator.Peer.Store
		nodesBefore, err := st.ListNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var segsBefore []*mediator.Segment
		for _, s := range segs {
			segsBefore = append(segsBefore, p.Segment(s))
		}
		balBefore, _ := w.Balances("")
		p.StopMediator()
		statusCounters := map[string]int64{}

		// The copy, through the command operators run.
		out, err := exec.Command(fincryptBin, "mediator", "migrate", "--from", p.Mediator.Dir, "--to", url, "--json").CombinedOutput()
		if err != nil {
			t.Fatalf("migrate: %v: %s", err, out)
		}
		var rep mediator.MigrateReport
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("migrate report %q: %v", out, err)
		}
		rows := map[string]int64{}
		for _, r := range rep {
			rows[r.Table] = r.Rows
		}
		if rows["segments"] != 2 || rows["pieces"] != 10 || rows["nodes"] != 5 || rows["accounts"] != 1 || rows["period_records"] == 0 {
			t.Fatalf("migrate report: %+v", rep)
		}
		// A second run finds DIR/db moved aside; a mediator started on the
		// directory without --db refuses instead of starting empty.
		if out, err := exec.Command(fincryptBin, "mediator", "migrate", "--from", p.Mediator.Dir, "--to", url).CombinedOutput(); err == nil {
			t.Fatalf("second migrate succeeded: %s", out)
		}
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		if m, err := mediator.New(log, nil, p.Mediator.Config); !errors.Is(err, mediator.ErrStateElsewhere) {
			if m != nil {
				m.Close()
			}
			t.Fatalf("mediator without --db after the migration: %v", err)
		}

		p.Mediator.Config.DB = url
		p.RestartMediator()
		st = p.Mediator.Peer.Store
		if _, ok := st.(*mediator.PostgresStore); !ok {
			t.Fatalf("mediator runs on %T", st)
		}
		nodesAfter, err := st.ListNodes(ctx)
		if err != nil || len(nodesAfter) != len(nodesBefore) {
			t.Fatalf("nodes after migration: %d %v", len(nodesAfter), err)
		}
		for i, n := range nodesAfter {
			b := nodesBefore[i]
			if n.ID != b.ID || n.Contracted != b.Contracted || n.Passed < b.Passed || n.Price != b.Price || n.Address != b.Address {
				t.Fatalf("node %d: %+v, before %+v", i, n, b)
			}
		}
		if _, err := st.GetAccount(ctx, p.Client.Account()); err != nil {
			t.Fatalf("account after migration: %v", err)
		}
		for i, s := range segs {
			got := p.Segment(s)
			for j, pc := range got.Pieces {
				b := segsBefore[i].Pieces[j]
				if pc.ID != b.ID || pc.Node != b.Node || pc.Price != b.Price || pc.Passed < b.Passed {
					t.Fatalf("segment %d piece %d: %+v, before %+v", i, j, pc, b)
				}
			}
		}
		for _, name := range []string{mediator.CounterSegments, mediator.CounterPieces, mediator.CounterHealthy} {
			v, err := st.Counter(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			statusCounters[name] = v
		}
		if statusCounters[mediator.CounterSegments] != 2 || statusCounters[mediator.CounterPieces] != 10 {
			t.Fatalf("counters after migration: %v", statusCounters)
		}
		w = p.Mediator.Peer.Wallet()
		balAfter, _ := w.Balances("")
		for acct, v := range balBefore {
			if strings.HasPrefix(acct, "unmetered:") && balAfter[acct] < v {
				t.Fatalf("balance of %s went from %d to %d", acct, v, balAfter[acct])
			}
		}
		// The network carries on: rounds on the database, data read back,
		// a new placement committed there.
		r0 := p.Status().Rounds
		p.WaitFor("rounds on the database", 20*time.Second, func(st *mediator.Status) bool {
			return st.Rounds >= r0+2 && st.Healthy == 10
		})
		for i, s := range segs {
			got, err := p.Client.Fetch(ctx, s, len(data[i]))
			if err != nil || !bytes.Equal(got, data[i]) {
				t.Fatalf("fetch of segment %d after migration: %v", i, err)
			}
		}
		if _, err := p.Client.Store(ctx, p.Scheme(), randomData(60, segSize)); err != nil {
			t.Fatalf("store after migration: %v", err)
		}
		if n, _ := st.Counter(ctx, mediator.CounterSegments); n != 3 {
			t.Fatalf("segments after a new store: %d", n)
		}
		if err := w.CheckLedger(); err != nil {
			t.Fatal(err)
		}
	})
}
