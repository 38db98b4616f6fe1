package mediator

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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
		{"advertised host:port", func(c *Config) { c.Advertise = "storage.example:7000" }, false},
		{"advertised without a port", func(c *Config) { c.Advertise = "storage.example" }, true},
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

// TestConfigDefaultThresholdForAScheme: a scheme given without a repair
// threshold gets K plus half the spare pieces, rounded up: 6 for 4 of 8,
// 5 for 3 of 7 (2 of 5, the default scheme, has its own default).
func TestConfigDefaultThresholdForAScheme(t *testing.T) {
	for s, want := range map[erasure.Scheme]int{{K: 4, N: 8}: 6, {K: 3, N: 7}: 5, {K: 2, N: 9}: 6} {
		if got := (Config{Scheme: s}).WithDefaults().RepairThreshold; got != want {
			t.Errorf("scheme %s: threshold %d, want %d", s, got, want)
		}
	}
}

// TestOpenStoreRefusesADatabaseBesidePebble: a mediator told to use a
// database while its directory still holds a Pebble store refuses to
// start (it would run on an empty database next to its real state).
func TestOpenStoreRefusesADatabaseBesidePebble(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, dbDir), 0o700); err != nil {
		t.Fatal(err)
	}
	// A loopback port nothing listens on: never reached when refused.
	if _, err := openStore(Config{Dir: dir, DB: "postgres://127.0.0.1:1/none"}); !errors.Is(err, ErrStateElsewhere) {
		t.Fatalf("database beside a Pebble store: %v", err)
	}
}
