package btcdtest

import (
	"testing"
	"time"
)

func TestHarnessSmoke(t *testing.T) {
	t0 := time.Now()
	n := Start(t)
	t.Logf("start %v", time.Since(t0))
	t0 = time.Now()
	n.MustGenerate(t, 110)
	t.Logf("gen110 %v", time.Since(t0))
	tx, err := n.Send(n.MinerAddress(), 100000)
	if err != nil {
		t.Fatal(err)
	}
	h := tx.TxHash()
	n.MustGenerate(t, 1)
	c, err := n.Confirmations(&h)
	if err != nil || c != 1 {
		t.Fatal(c, err)
	}
}
