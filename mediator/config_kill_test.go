package mediator

import (
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/fincrypt/fincrypt/erasure"
)

// TestConfigValidateAtTheEdges: every bound of Validate accepts its edge
// value and refuses the next one past it (TestConfigValidate checks values
// well outside).
func TestConfigValidateAtTheEdges(t *testing.T) {
	base := testConfig()
	base.Listen = "127.0.0.1:0"
	for _, tc := range []struct {
		name   string
		edit   func(*Config)
		refuse bool
	}{
		{"N at the most pieces", func(c *Config) { c.Scheme = erasure.Scheme{K: 2, N: 64} }, false},
		{"N above it", func(c *Config) { c.Scheme = erasure.Scheme{K: 2, N: 65} }, true},
		{"threshold at N", func(c *Config) { c.RepairThreshold = c.Scheme.N }, false},
		{"one repair worker", func(c *Config) { c.RepairWorkers = 1 }, false},
		{"no repair worker", func(c *Config) { c.RepairWorkers = 0 }, true},
		{"most repair workers", func(c *Config) { c.RepairWorkers = MaxRepairWorkers }, false},
		{"too many repair workers", func(c *Config) { c.RepairWorkers = MaxRepairWorkers + 1 }, true},
		{"one transfer per node", func(c *Config) { c.RepairNodeTransfers = 1 }, false},
		{"no transfer per node", func(c *Config) { c.RepairNodeTransfers = 0 }, true},
		{"most transfers per node", func(c *Config) { c.RepairNodeTransfers = MaxRepairWorkers }, false},
		{"too many transfers per node", func(c *Config) { c.RepairNodeTransfers = MaxRepairWorkers + 1 }, true},
		{"zero gc interval", func(c *Config) { c.GCInterval = 0 }, true},
		{"online window at the heartbeat", func(c *Config) { c.OnlineWindow = c.HeartbeatInterval }, false},
		{"challenge timeout at the period", func(c *Config) { c.ChallengeTimeout = c.Period }, false},
		{"grace at the ticket lifetime", func(c *Config) { c.GracePeriod = c.TicketTTL }, false},
		{"one piece challenged", func(c *Config) { c.ChallengeSample = 1 }, false},
		{"none challenged", func(c *Config) { c.ChallengeSample = 0 }, true},
		{"one opening", func(c *Config) { c.ChallengeOpenings = 1 }, false},
		{"no opening", func(c *Config) { c.ChallengeOpenings = 0 }, true},
	} {
		c := base
		tc.edit(&c)
		err := c.Validate()
		if tc.refuse && !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want refused", tc.name, err)
		}
		if !tc.refuse && err != nil {
			t.Errorf("%s: %v, want accepted", tc.name, err)
		}
	}
}

// TestConfigDefaultLogger: WithDefaults gives a configuration without a
// logger the default one and keeps a logger it was given.
func TestConfigDefaultLogger(t *testing.T) {
	if c := (Config{}).WithDefaults(); c.Logger == nil {
		t.Error("no logger after WithDefaults")
	}
	mine := slog.New(slog.NewTextHandler(io.Discard, nil))
	if c := (Config{Logger: mine}).WithDefaults(); c.Logger != mine {
		t.Error("WithDefaults replaced the logger it was given")
	}
}
