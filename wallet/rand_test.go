package wallet

import (
	"encoding/hex"
	"log/slog"
	"math/rand"
	"os"
)

func newRand(seed int64) *rand.Rand { return rand.New(rand.NewSource(seed)) }

// testLogger discards logs unless FINCRYPT_DEBUG is set.
func testLogger() *slog.Logger {
	if os.Getenv("FINCRYPT_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func hexString(b []byte) string { return hex.EncodeToString(b) }
