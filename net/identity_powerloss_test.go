package net

import (
	"errors"
	"os"
	"testing"

	"github.com/fincrypt/fincrypt/internal/powerloss"
)

// TestPowerLossIdentityFile cuts the power before each step of a node's
// first start writing its identity (directories made, their parents
// synced, the temporary file created, written, synced, linked, the
// directory synced, the temporary removed) and once after it returned:
// after the "reboot" the directory holds either no identity (and the next
// start makes one) or a whole one; once the identity was returned, always
// that same one, since the node may have given its id out. Removing the
// file's Sync, the directory's Sync after the link or the Sync of a new
// directory's parent fails it.
func TestPowerLossIdentityFile(t *testing.T) {
	const dir = "/srv/fincrypt/node"
	for cutAt := 0; ; cutAt++ {
		fs := powerloss.NewCutFS(cutAt)
		made, err := loadOrCreateIdentityFS(fs, dir)
		acked := err == nil
		if acked {
			fs.CutNow()
		} else if !errors.Is(err, powerloss.ErrPowerCut) {
			t.Fatalf("cut at %d: %v", cutAt, err)
		}
		got, err := loadIdentityFS(fs.Clone, dir)
		switch {
		case err != nil && acked:
			t.Fatalf("identity %s acknowledged, then after a power cut: %v", made.ID(), err)
		case err == nil && acked && got.ID() != made.ID():
			t.Fatalf("identity %s acknowledged, %s after a power cut", made.ID(), got.ID())
		case err != nil && !errors.Is(err, os.ErrNotExist):
			t.Fatalf("cut at %d: a damaged identity file: %v", cutAt, err)
		case err != nil:
			// No identity: the next start makes one, and keeps it.
			again, err := loadOrCreateIdentityFS(fs.Clone, dir)
			if err != nil {
				t.Fatalf("cut at %d: the next start: %v", cutAt, err)
			}
			if back, err := loadIdentityFS(fs.Clone, dir); err != nil || back.ID() != again.ID() {
				t.Fatalf("cut at %d: the next start's identity does not read back: %v", cutAt, err)
			}
		}
		if acked {
			break
		}
	}
}

// TestIdentityCloseErrorNotAcknowledged: when closing the new identity
// file fails (a delayed write error), the start fails and leaves no
// identity behind, so the next start makes a whole one instead of keeping
// a file whose bytes may never have reached the disk.
func TestIdentityCloseErrorNotAcknowledged(t *testing.T) {
	const dir = "/node"
	fs := powerloss.NewCutFS(-1)
	fs.FailClose = true
	mem := fs.Mem
	if id, err := loadOrCreateIdentityFS(fs, dir); !errors.Is(err, powerloss.ErrClose) {
		t.Fatalf("close failed, got identity %v, error %v (want the close error)", id != nil, err)
	}
	if _, err := loadIdentityFS(mem, dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after a failed close: %v, want no identity", err)
	}
	fs.FailClose = false
	a, err := loadOrCreateIdentityFS(fs, dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := loadIdentityFS(mem, dir); err != nil || b.ID() != a.ID() {
		t.Fatalf("the next start's identity does not read back: %v", err)
	}
}
