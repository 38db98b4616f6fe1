package storagenode_test

import (
	"errors"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/storagenode"
)

// Validate fills every zero setting with its documented default, keeps
// what was set (a disabled scrub stays disabled, a retry ceiling equal to
// the floor stays), takes a capacity of one leaf and refuses one byte
// less, and refuses a negative scrub interval and missing addresses.
func TestConfigDefaultsAndBounds(t *testing.T) {
	med, _ := fnet.GenerateIdentity()
	base := storagenode.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		Mediator: fnet.Address{ID: med.ID(), HostPort: "127.0.0.1:1"}, Capacity: challenge.LeafSize,
		Payout: payoutAddress(t), Network: "simnet"}
	c := base
	if err := c.Validate(); err != nil {
		t.Fatalf("a capacity of one leaf: %v", err)
	}
	want := base
	want.RetryMin, want.RetryMax = time.Second, time.Minute
	want.RequestTimeout, want.IdleTimeout = 10*time.Second, 30*time.Second
	want.ScrubRate, want.ScrubInterval = storagenode.DefaultScrubRate, storagenode.DefaultScrubInterval
	want.MinUploadRate, want.UploadGrace = storagenode.DefaultMinUploadRate, storagenode.DefaultUploadGrace
	want.TicketTTL = storagenode.DefaultTicketTTL
	if c != want {
		t.Fatalf("defaults:\n got %+v\nwant %+v", c, want)
	}
	set := base
	set.RetryMin, set.RetryMax = 3*time.Second, 3*time.Second
	set.RequestTimeout, set.IdleTimeout = time.Millisecond, time.Millisecond
	set.ScrubRate, set.ScrubInterval = -1, time.Millisecond
	set.MinUploadRate, set.UploadGrace, set.TicketTTL = 1, time.Millisecond, time.Millisecond
	c = set
	if err := c.Validate(); err != nil || c != set {
		t.Fatalf("settings given:\n got %+v (%v)\nwant them kept", c, err)
	}
	c = base
	c.RetryMin, c.RetryMax = 2*time.Minute, time.Minute
	if err := c.Validate(); err != nil || c.RetryMax != 2*time.Minute {
		t.Fatalf("a retry ceiling below the floor: ceiling %v (%v), want the floor", c.RetryMax, err)
	}
	for name, f := range map[string]func(c *storagenode.Config){
		"capacity a byte under a leaf": func(c *storagenode.Config) { c.Capacity = challenge.LeafSize - 1 },
		"negative scrub interval":      func(c *storagenode.Config) { c.ScrubInterval = -time.Second },
		"no directory":                 func(c *storagenode.Config) { c.Dir = "" },
		"no listen address":            func(c *storagenode.Config) { c.Listen = "" },
		"mediator without host:port":   func(c *storagenode.Config) { c.Mediator.HostPort = "" },
	} {
		c := base
		f(&c)
		if err := c.Validate(); !errors.Is(err, storagenode.ErrConfig) {
			t.Errorf("%s: %v, want a configuration error", name, err)
		}
	}
}
