package replicate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	"github.com/fincrypt/fincrypt/vault"
)

// With payments on, an account without escrow gets no placements, and the
// mount's status says why, well before anything is released.
func TestStatusWarnsWithoutEscrow(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs /dev/fuse and root")
	}
	p := testplanet.New(t, testplanet.Config{StorageNodes: 5, Network: "regtest", Reconfigure: func(c *mediator.Config) {
		c.Network = "regtest"
		// Metered without a Bitcoin node: payouts would be PSBT files.
		c.Payments = mediator.Payments{Passphrase: []byte("escrow test"), KDF: vault.KDFParams{Time: 1, MemoryK: 64, Threads: 1}, PSBT: true}
	}})
	home := filepath.Join(t.TempDir(), "home")
	newVault(t, home)
	c := mount(t, p, home, fastConfig())
	writeTree(t, c.mnt, 1)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.rep.Kick()
		st, err := QueryStatus(home)
		if err != nil {
			t.Fatal(err)
		}
		if st.SegmentsDurable != 0 {
			t.Fatalf("without escrow nothing may be placed: %+v", st)
		}
		// The warning can come from the mount's first snapshot, before
		// the tree's chunks are committed (they are sealed after close
		// returns): the status that counts is one with them pending.
		if strings.HasPrefix(st.Escrow, "WARNING:") && strings.Contains(st.Escrow, "escrow") && st.PendingBytes > 0 {
			// The mediator answers (it refuses), and status says why in
			// words, with what waits.
			if !st.Online || st.Protected || st.Refusal == nil || st.Refusal.WaitingBytes != st.PendingBytes ||
				!strings.HasPrefix(st.Refusal.Summary(), "not protected: no escrow yet; ") {
				t.Fatalf("status of a refused account: online %v protected %v refusal %+v", st.Online, st.Protected, st.Refusal)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no escrow warning in status: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
