package main

import (
	"log/slog"
	"os"
	"time"

	"github.com/fincrypt/fincrypt/internal/idlegc"
)

// envIdleGCEvery sets how often a daemon looks whether it is idle
// (idlegc.Config.Every: a duration; the default is 10 s). For tests.
const envIdleGCEvery = "FINCRYPT_IDLE_GC_EVERY"

// idleCollector starts what turns the Go collector off while a daemon (a
// mount, a storage node, a mediator) idles (internal/idlegc: the runtime's
// forced collection every two minutes was most of an idle mount's work),
// logging each change at debug level. It returns what stops it.
func idleCollector(log *slog.Logger) (stop func()) {
	cfg := idlegc.Config{Changed: func(paused bool, limit int64) {
		if paused {
			log.Debug("idle: the Go collector is off until work comes", "memory_limit", limit)
		} else {
			log.Debug("work: the Go collector is back on")
		}
	}}
	if s := os.Getenv(envIdleGCEvery); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			log.Warn("ignoring a bad "+envIdleGCEvery, "value", s)
		} else {
			cfg.Every = d
		}
	}
	return idlegc.Start(cfg).Stop
}
