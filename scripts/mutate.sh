#!/bin/sh
# Mutation report (`make mutate`): runs gremlins over the packages that hold
# the invariants users trust and prints, per package, the efficacy (killed
# of killed + lived) and the mutants that lived. A report, not a gate, and
# not part of `make test`: it runs each package's tests once per mutant
# (tens of minutes on two cores). MUTATE_PKGS picks the packages.
set -eu
cd "$(dirname "$0")/.."
GREMLINS=tools/bin/gremlins
GREMLINS_VERSION=v0.5.0
if [ ! -x "$GREMLINS" ]; then
	GOBIN="$PWD/tools/bin" go install "github.com/go-gremlins/gremlins/cmd/gremlins@$GREMLINS_VERSION"
fi
PKGS=${MUTATE_PKGS:-"net challenge vault chunkstore meta storagenode mediator wallet replicate"}
mkdir -p .mutate
summary=""
for p in $PKGS; do
	log=".mutate/$(echo "$p" | tr / _).log"
	echo "== $p (log: $log)"
	# -short: each package's quick tests (the long e2e and stress runs
	# would make one mutant cost minutes on a shared machine); nice, one
	# worker, one CPU per test run: a report that finishes beside other work.
	GOFLAGS="${MUTATE_GOFLAGS:--short}" nice -n "${MUTATE_NICE:-10}" \
		"$GREMLINS" unleash --workers 1 --test-cpu 1 --timeout-coefficient "${MUTATE_TIMEOUT_COEFFICIENT:-5}" "./$p" >"$log" 2>&1 || true
	grep -E '^ *LIVED' "$log" || true
	eff=$(grep -Eo 'Test efficacy: [0-9.]+%' "$log" | tail -1 || true)
	counts=$(grep -E 'Killed: [0-9]+, Lived: [0-9]+' "$log" | tail -1 | sed 's/^ *//' || true)
	timedout=$(grep -Eo 'Timed out: [0-9]+' "$log" | tail -1 || true)
	counts="$counts${timedout:+, $timedout}"
	summary="$summary$p: ${eff:-no result (see $log)} ${counts}
"
done
echo
echo "Mutation score per package:"
printf '%s' "$summary"
