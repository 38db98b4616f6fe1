package wallet

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// BenchmarkSettle settles periods of 1000 (node, account) lines (100 nodes,
// 10 accounts) and compares with a baseline measured in the same run: one
// raw Pebble batch per period writing the same number of keys and values,
// committed with pebble.Sync. It reports settled lines per second and the
// ratio settle/baseline time (the cost of the ledger's checks, journal and
// idempotency keys over a bare synced write).
func BenchmarkSettle(b *testing.B) {
	const nodes, accounts, periods = 100, 10, 5
	dir := b.TempDir()
	if err := CreateSeed(dir, testPass, "regtest", cheapKDF); err != nil {
		b.Fatal(err)
	}
	w, err := Open(Config{Dir: dir, Passphrase: testPass, Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	base, err := pebble.Open(filepath.Join(b.TempDir(), "baseline"), &pebble.Options{Logger: pebbleLogger{testLogger()}})
	if err != nil {
		b.Fatal(err)
	}
	defer base.Close()
	for a := 0; a < accounts; a++ {
		fund(b, w, fmt.Sprintf("acct%d", a), 1<<50, fmt.Sprint(a))
	}
	in := PeriodInput{Length: time.Hour, FeeBPS: 250}
	for n := 0; n < nodes; n++ {
		in.Nodes = append(in.Nodes, NodeTerms{ID: fmt.Sprintf("node%d", n), PriceSatPerGiBMonth: 1500})
		for a := 0; a < accounts; a++ {
			in.Holdings = append(in.Holdings, Holding{Node: fmt.Sprintf("node%d", n), Account: fmt.Sprintf("acct%d", a), Bytes: int64(n+1) * GiB, Passed: (n+a)%7 != 0})
		}
	}
	value := make([]byte, 200) // about one journal entry
	var settleT, baseT time.Duration
	period := uint64(0)
	for b.Loop() {
		for p := 0; p < periods; p++ {
			period++
			in.Period = period
			t0 := time.Now()
			if _, err := w.Settle(in); err != nil {
				b.Fatal(err)
			}
			settleT += time.Since(t0)
			t0 = time.Now()
			batch := base.NewBatch()
			for i := 0; i < nodes*accounts*4; i++ { // balance x2, journal, key
				batch.Set([]byte(fmt.Sprintf("%d/%d", period, i)), value, nil)
			}
			if err := batch.Commit(pebble.Sync); err != nil {
				b.Fatal(err)
			}
			batch.Close()
			baseT += time.Since(t0)
		}
	}
	lines := float64(period) * nodes * accounts
	b.ReportMetric(lines/settleT.Seconds(), "lines/s")
	b.ReportMetric(lines/baseT.Seconds(), "baseline-lines/s")
	b.ReportMetric(float64(settleT)/float64(baseT), "settle/baseline")
	if err := w.CheckLedger(); err != nil {
		b.Fatal(err)
	}
}
