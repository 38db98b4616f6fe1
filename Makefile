# Fincrypt. `make demo` and `make test` work on a fresh machine with Go 1.26.8.
GO       ?= go
BIN      := bin/fincrypt
PKGS     := ./...
# Tests that mount FUSE or start daemons get a generous but bounded budget.
TEST_TIMEOUT ?= 15m

.PHONY: all build tools test fuzz bench demo demo-stop lint clean stress

all: build

build:
	$(GO) build -o $(BIN) ./cmd/fincrypt

# btcd and btcctl (the version go.mod pins), built from the module proxy into
# tools/bin: the payment tests and the devnet run a real btcd in regtest/simnet.
tools: tools/bin/btcd
tools/bin/btcd:
	./scripts/btcd-install.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# All tests: unit tests, FUSE mounts (skipped, with a message, without root or
# /dev/fuse), real daemons over loopback QUIC, and a brief run of each fuzz target.
test: build lint tools
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	$(MAKE) fuzz

# A count, not a duration: Go 1.26's fuzz coordinator can report a spurious
# "context deadline exceeded" when a duration ends mid-execution (go.dev/issue/75804).
FUZZTIME ?= 30000x
fuzz:
	@for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$t/*_test.go | sed 's/func //'); do \
	    echo "fuzz $$t $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$t || exit 1; \
	  done; \
	done

# The stress suite (internal/stress) for as long as asked, e.g.
# `make stress STRESS_TIME=2h`: fresh seeds over its scenarios (network with
# node and mediator kills, local, kill -9 of the mount), stopping at the
# first failure with its seed. STRESS_OPS is operations per worker;
# STRESS_SEED=N replays one seed. `make test` runs each scenario once, short.
STRESS_TIME ?= 10m
STRESS_OPS  ?= 1000
stress: build
	STRESS_TIME=$(STRESS_TIME) STRESS_OPS=$(STRESS_OPS) $(GO) test -count=1 -timeout 0 -run '^TestStressLoop$$' -v ./internal/stress

bench: build tools
	./scripts/bench.sh

demo: build tools
	./scripts/demo.sh

demo-stop:
	./scripts/demo.sh stop

clean:
	rm -rf bin tools
