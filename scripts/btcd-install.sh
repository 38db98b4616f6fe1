#!/usr/bin/env bash
# Installs btcd and btcctl (the versions go.mod pins) into tools/bin, where
# the wallet tests' harness (wallet/btcdtest) and the devnet look for them.
# Idempotent: does nothing when tools/bin/btcd already exists.
set -euo pipefail
cd "$(dirname "$0")/.."
BTCD_VERSION="${BTCD_VERSION:-v0.24.2}"
GO="${GO:-go}"
bin="$(pwd)/tools/bin"
if [[ -x "$bin/btcd" && -x "$bin/btcctl" && "${1:-}" != "--force" ]]; then
  exit 0
fi
mkdir -p "$bin"
echo "installing btcd $BTCD_VERSION into tools/bin"
GOBIN="$bin" GOFLAGS= "$GO" install \
  "github.com/btcsuite/btcd@$BTCD_VERSION" \
  "github.com/btcsuite/btcd/cmd/btcctl@$BTCD_VERSION"
