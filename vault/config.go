package vault

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/fincrypt/fincrypt/internal/fsutil"
	"github.com/fincrypt/fincrypt/internal/units"
)

// Config is the client's human-editable settings file, home/config: one
// `key = value` per line, `#` starts a comment. Command-line flags override it.
type Config struct {
	// Store is the directory of the local encrypted chunk store; relative
	// paths are taken from the vault's home. Empty means home/store.
	Store string
	// CacheSize bounds the local store once chunks are durable on the
	// network; 0 means no limit.
	CacheSize uint64
	// Mediator is the NODEID@host:port of the mediator; empty until the
	// vault joins a network.
	Mediator string
	// Scheme is the erasure-coding scheme "K/N"; empty means the default.
	Scheme string
}

// DefaultConfig is what `fincrypt init` writes.
func DefaultConfig() *Config {
	return &Config{CacheSize: 10 << 30}
}

var configKeys = []struct {
	key, help string
	get       func(*Config) string
	set       func(*Config, string) error
}{
	{"store", "directory of the local encrypted chunk store (relative to the home directory)",
		func(c *Config) string { return c.Store },
		func(c *Config, v string) error { c.Store = v; return nil }},
	{"cache-size", "how much the local store may hold once data is safe on the network (e.g. 10GiB; 0 = no limit); a big file streamed once keeps only its first 16 MiB there",
		func(c *Config) string { return units.FormatSize(c.CacheSize) },
		func(c *Config, v string) (err error) { c.CacheSize, err = units.ParseSize(v); return }},
	{"mediator", "the mediator's NODEID@host:port; empty keeps the vault on this machine only",
		func(c *Config) string { return c.Mediator },
		func(c *Config, v string) error {
			if v != "" {
				id, hostport, ok := strings.Cut(v, "@")
				if _, _, err := net.SplitHostPort(hostport); !ok || id == "" || err != nil {
					return fmt.Errorf("%q: want NODEID@host:port", v)
				}
			}
			c.Mediator = v
			return nil
		}},
	{"scheme", "erasure coding K/N: any K of N pieces rebuild a segment (empty = default)",
		func(c *Config) string { return c.Scheme },
		func(c *Config, v string) error {
			if v != "" {
				k, n, ok := strings.Cut(v, "/")
				ki, err1 := strconv.Atoi(k)
				ni, err2 := strconv.Atoi(n)
				if !ok || err1 != nil || err2 != nil || ki < 1 || ni < 2*ki {
					return fmt.Errorf("%q: want K/N with N at least 2K, e.g. 2/4", v)
				}
			}
			c.Scheme = v
			return nil
		}},
}

// String renders the config file, with a comment for every setting.
func (c *Config) String() string {
	var b bytes.Buffer
	b.WriteString("# Fincrypt client settings. Edit freely; command-line flags override them.\n")
	for _, k := range configKeys {
		fmt.Fprintf(&b, "\n# %s\n%s = %s\n", k.help, k.key, k.get(c))
	}
	return b.String()
}

// ParseConfig reads the config format. Unknown keys are an error, so typos
// do not silently fall back to defaults.
func ParseConfig(data []byte) (*Config, error) {
	c := DefaultConfig()
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want `key = value`, found %q", n, line)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		found := false
		for _, k := range configKeys {
			if k.key == key {
				if err := k.set(c, val); err != nil {
					return nil, fmt.Errorf("line %d: %s: %v", n, key, err)
				}
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("line %d: unknown setting %q", n, key)
		}
	}
	return c, sc.Err()
}

// LoadConfig reads the config file at path; a missing file gives the defaults.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return DefaultConfig(), nil
	}
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return c, nil
}

// SaveConfig writes c to home/config atomically.
func SaveConfig(home string, c *Config) error {
	return fsutil.WriteFileAtomic(filepath.Join(home, ConfigFileName), []byte(c.String()), 0o600)
}
