# Fincrypt. `make demo` and `make test` work on a fresh machine with Go 1.26.8.
GO       ?= go
BIN      := bin/fincrypt
PKGS     := ./...
# Tests that mount FUSE or start daemons get a generous but bounded budget per
# package: cmd/fincrypt takes about 6 minutes on two quiet cores, and passed 15
# minutes on two cores shared with other work.
TEST_TIMEOUT ?= 25m

.PHONY: all build tools deps test test-race fuzz bench demo demo-stop demo-check lint clean stress mutate

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
# Debian packages the tests need (scripts/deps/*.list), installed as root.
deps:
	./scripts/deps.sh

test: build lint tools deps
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	$(MAKE) test-race
	$(MAKE) fuzz

# The race detector over the packages where goroutines share state. It makes
# the code 5-20 times slower, so it leaves out the tests that only add time
# there: external tools (git, tar, cp) on the mount, the long replication
# scenario (timing-bound under the detector; its paths run in the others), the
# idle-scan and placement-bound tests; TestPOSIX uses a smaller big
# directory.
RACE_PKGS ?= ./chunkstore ./meta ./internal/fault ./internal/pebblesched ./replicate ./fs ./mediator
RACE_SKIP ?= ^(TestExternalTools|TestReplication|TestIdleMountDoesNotScan|TestPendingPlacementsPerAccountAreBounded)$$
test-race:
	$(GO) test -race -short -count=1 -timeout $(TEST_TIMEOUT) -skip '$(RACE_SKIP)' $(RACE_PKGS)

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
# Then longer power-loss runs (POWERLOSS_RUNS seeds each) than the seeded few
# that `make test` does.
STRESS_TIME    ?= 10m
STRESS_OPS     ?= 1000
POWERLOSS_RUNS ?= 2000
stress: build
	STRESS_TIME=$(STRESS_TIME) STRESS_OPS=$(STRESS_OPS) $(GO) test -count=1 -timeout 0 -run '^TestStressLoop$$' -v ./internal/stress
	FINCRYPT_POWERLOSS_RUNS=$(POWERLOSS_RUNS) $(GO) test -count=1 -timeout 60m -run 'TestPowerLoss' ./chunkstore/ ./storagenode/ ./wallet/ ./mediator/

bench: build tools
	./scripts/bench.sh

demo: build tools
	./scripts/demo.sh

demo-stop:
	./scripts/demo.sh stop

# The demo as a user runs it, with 1 GiB of data at the demo's own period
# (make test runs the same test, TestDemo, with 256 MiB and 3 s periods).
demo-check: build tools
	FINCRYPT_DEMO_SIZE=1GiB FINCRYPT_DEMO_TEST_PERIOD=10s $(GO) test -count=1 -timeout 30m -v -run '^TestDemo$$' ./cmd/fincrypt

clean:
	rm -rf bin tools


# Mutation report per package (mutant schemata; MUTATE_MODE=gremlins for gremlins);
# not part of `make test`. MUTATE_PKGS="net challenge" picks packages.
mutate:
	./scripts/mutate.sh
