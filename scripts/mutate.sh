#!/bin/sh
# Mutation report (`make mutate`): scores the packages that hold the
# invariants users trust and prints, per package and file, the efficacy
# (killed of killed + lived) and the mutants that lived. A report, not a
# gate, and not part of `make test`. MUTATE_PKGS picks the packages.
#
# By default it scores by mutant schemata (internal/mutschema, MUTATE_MODE
# schemata): the mutant kinds of gremlins v0.5.0's defaults, all built into
# one test binary through `go test -overlay` (the tree is never written), the
# binary run once per mutant with the tests that reach it: seconds a mutant,
# about an hour for every package on a quiet two-core machine. The tests run
# are each package's `-short` tests but those in defaultskip below, which
# cannot kill a mutant here or start a network or mount per run (the test
# sets of docs/TESTING.md's whole-package reports). It reads MUTATE_PKGS,
# MUTATE_FILES (for each package listed) and
#   MUTATE_RUN          a -test.run regexp (default ^Test: the package's own).
#   MUTATE_SKIP         a -test.skip regexp (default: defaultskip's).
#   MUTATE_BEFORE_RUN   score first with these tests (the old ones),
#   MUTATE_BEFORE_SKIP  or with the after set less these (the new ones),
#                       then with MUTATE_RUN/MUTATE_SKIP: before and after.
#   MUTATE_IDS          run only these mutants ("3,7,10-12"; the numbers of
#                       a run over the same files).
#   MUTATE_TIMEOUT      least time a mutant's run gets (default 1m; else 5
#                       times its tests' run without a mutant); past it, killed.
#   MUTATE_SHOW=1       print under each killed mutant the failing tests' lines.
#   MUTATE_NICE         the runs' nice level (default 10).
#
# MUTATE_MODE=gremlins runs gremlins v0.5.0 itself (installed into
# tools/bin): a build of the test binary per mutant, minutes each under load;
# the scores of docs/TESTING.md's sections before the ninth session. It reads
#   MUTATE_FILES  files of the package to mutate, relative to its directory,
#                 each optionally with a line range: "diskstore.go scrub.go:40-120".
#                 Only for a single package in MUTATE_PKGS. Leaves out the
#                 package's sub-packages too (mediator/testplanet).
#   MUTATE_RUN    a -run regexp: the tests run against every mutant (and for
#                 the coverage that decides which mutants run).
#   MUTATE_GOFLAGS go test flags (default -short -vet=off -ldflags=-w).
set -eu
cd "$(dirname "$0")/.."
GREMLINS=tools/bin/gremlins
GREMLINS_VERSION=v0.5.0
PKGS=${MUTATE_PKGS:-"net challenge vault chunkstore meta storagenode mediator wallet replicate"}
mkdir -p .mutate

# defaultskip prints the tests a package's schemata run leaves out: the
# PostgreSQL and migration tests (a server each; store_postgres.go is scored
# apart, docs/TESTING.md), a header flood and a block-cache test (minutes,
# and each has a cheaper twin); storagenode's tests that run the fincrypt
# binary (built from the tree, not the overlay: they cannot kill a mutant;
# FINCRYPT_TESTBIN_SKIP=1 for the rest); replicate's tests that start a
# testplanet or mount FUSE (minutes a mutant; the fake network's tests
# reach the same code).
defaultskip() {
	common='Postgres|^TestMigrate|HeaderFlood|^TestBlockCacheHoldsTheIndexInUse$'
	case $1 in
	storagenode) echo "$common|^(TestCapacityFull|TestChallengeOverQUIC|TestCLIRejectsBadFlags|TestConnectionFloodIsCapped|TestDiskFull|TestGarbageCollection|TestKill9DuringUploads|TestPutGetStatDelete|TestRegisterRetriesAndHeartbeats|TestRegistrationLearnsNetwork|TestRegistrationRefusedExits|TestReplayedPutTicketRefused|TestTicketsBoundToAccount|TestTicketsRefused|TestTricklingPutTimesOut)\$" ;;
	replicate) echo "$common|^(TestBackgroundFaultsContained|TestBackupBlobsUploadedFetchedReleased|TestCacheLimit|TestCleanRestartWalksNothing|TestCommitNeedsKPlusOneReceipts|TestEvenlySlowPiecesNotHedged|TestFullSegmentsReuseTheirBuffer|TestIdleMountDoesNotScan|TestIntentFailureReleasesTheSegment|TestIntentSyncsWhilePiecesUpload|TestInterruptedUploadReleased|TestMaintainFollowsChanges|TestManySegmentsInFlightNodeFails|TestMetricsFollowTheWork|TestOldLargestClassReadsBack|TestReadHedgesAroundAHungNode|TestRecoverIndexFromSnapshot|TestReleaseAndRepack|TestReleasedSegmentNotDurable|TestReorderedReadFetchesEachSegmentOnce|TestRepackKeepsLocationWhenCacheCannotKeepChunk|TestReplication|TestRequestSyncCommitsFirst|TestScaleReport|TestSequentialReadPrefetches|TestSnapshotPointerAtMediator|TestSnapshotStoredWhereItLies|TestStatusCostIgnoresDurableFiles|TestStatusCountsUnsavedOpenFiles|TestStatusWarnsWithoutEscrow|TestStreamingKeepsTheHotSet|TestSyncSnapshotsPendingChunks|TestUnlimitedCacheCountsRarely|TestUploadAfterChunksVanished|TestUploadTakesNewChunksWhileUploading)\$" ;;
	*) echo "$common" ;;
	esac
}

if [ "${MUTATE_MODE:-schemata}" = schemata ]; then
	go build -o .mutate/mutschema ./internal/mutschema
	status=0
	for p in $PKGS; do
		log=".mutate/$(echo "schemata $p ${MUTATE_FILES:-}" | tr ' /:' '__-').log"
		echo "== $p (log: $log)"
		set -- -run "${MUTATE_RUN:-^Test}" -timeout "${MUTATE_TIMEOUT:-1m}"
		set -- "$@" -skip "${MUTATE_SKIP:-$(defaultskip "$p")}"
		[ -z "${MUTATE_BEFORE_RUN:-}" ] || set -- "$@" -before-run "$MUTATE_BEFORE_RUN"
		[ -z "${MUTATE_BEFORE_SKIP:-}" ] || set -- "$@" -before-skip "$MUTATE_BEFORE_SKIP"
		[ -z "${MUTATE_IDS:-}" ] || set -- "$@" -ids "$MUTATE_IDS"
		[ -z "${MUTATE_SHOW:-}" ] || set -- "$@" -show
		testbin=
		[ "$p" != storagenode ] || testbin=1
		FINCRYPT_TESTBIN_SKIP=${FINCRYPT_TESTBIN_SKIP:-$testbin} \
			nice -n "${MUTATE_NICE:-10}" .mutate/mutschema "$@" "./$p" ${MUTATE_FILES:-} >"$log" 2>&1 || status=1
		sed -n '/^Mutation score per file:/,$p' "$log"
	done
	exit $status
fi

if [ ! -x "$GREMLINS" ]; then
	GOBIN="$PWD/tools/bin" go install "github.com/go-gremlins/gremlins/cmd/gremlins@$GREMLINS_VERSION"
fi

# One CPU per test run through GOFLAGS' -cpu=1. Not gremlins' --test-cpu:
# v0.5.0 passes it to go test as the single argument "-cpu 1", which the
# test binary rejects ("flag provided but not defined: -cpu 1", exit 1),
# so every mutant is counted KILLED without a test having run.
# -vet=off and -ldflags=-w: a mutant's run skips vet (a vet complaint is
# not a test failing) and the test binary's DWARF (a shorter link); the
# tests run the same.
flags="${MUTATE_GOFLAGS:--short -vet=off -ldflags=-w} -cpu=1"
if [ -n "${MUTATE_RUN:-}" ]; then
	flags="$flags -run=$MUTATE_RUN"
fi

# MUTATE_FILES: gremlins mutates only the lines its --diff reports as added,
# and it reads that diff from `git diff --merge-base REF`. A git in front
# of the real one answers that call with a diff that adds the chosen files
# (or line ranges), named relative to the package directory as gremlins
# names the files it walks; every other git call goes to the real git.
diffargs=""
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT

# MUTATE_MIN_TIMEOUT: gremlins gives each mutant's `go test` (its build
# included) the time of its coverage run times the coefficient. A package
# whose coverage run took 2 s from a warm build cache gives a mutant 10 s,
# which under load is not enough to build its test binary: every mutant
# then "times out". A go in front of the real one makes the coverage run
# (the one `go test` with -coverprofile) last at least
# MUTATE_MIN_TIMEOUT / coefficient seconds, so no mutant gets less than
# MUTATE_MIN_TIMEOUT seconds (default 180). Every other go call goes
# straight to the real go.
coef=${MUTATE_TIMEOUT_COEFFICIENT:-5}
realgo=$(command -v go)
cat >"$shim/go" <<SHIM
#!/bin/sh
case " \$* " in
*" -coverprofile "*)
	start=\$(date +%s)
	"$realgo" "\$@"
	rc=\$?
	floor=\$(( (${MUTATE_MIN_TIMEOUT:-180} + $coef - 1) / $coef ))
	left=\$(( start + floor - \$(date +%s) ))
	[ \$rc -ne 0 ] || [ \$left -le 0 ] || sleep \$left
	exit \$rc ;;
esac
exec "$realgo" "\$@"
SHIM
chmod +x "$shim/go"

if [ -n "${MUTATE_FILES:-}" ]; then
	set -- $PKGS
	if [ $# -ne 1 ]; then
		echo "mutate.sh: MUTATE_FILES needs exactly one package in MUTATE_PKGS" >&2
		exit 2
	fi
	for spec in $MUTATE_FILES; do
		f=${spec%%:*}
		if [ ! -f "$1/$f" ]; then
			echo "mutate.sh: no file $1/$f" >&2
			exit 2
		fi
	done
	realgit=$(command -v git)
	cat >"$shim/git" <<SHIM
#!/bin/sh
if [ "\$1" = diff ] && [ "\$2" = --merge-base ] && [ "\$3" = mutate-files ]; then
	# One section per file (gremlins keeps the last section of a file),
	# one hunk per range.
	for f in \$(for spec in \$MUTATE_FILES; do echo "\${spec%%:*}"; done | sort -u); do
		ranges=""
		for spec in \$MUTATE_FILES; do
			[ "\${spec%%:*}" = "\$f" ] || continue
			case \$spec in *:*) ranges="\$ranges \${spec#*:}" ;; *) ranges="\$ranges 1-999999" ;; esac
		done
		awk -v f="\$f" -v ranges="\$ranges" '
			{ line[NR] = \$0 }
			END {
				printf "diff --git a/%s b/%s\\n--- a/%s\\n+++ b/%s\\n", f, f, f, f
				n = split(ranges, rs, " ")
				for (j = 1; j <= n; j++) {
					split(rs[j], r, "-"); from = r[1] + 0; to = r[2] + 0
					if (to > NR) to = NR
					if (from < 1 || to < from) continue
					printf "@@ -%d,0 +%d,%d @@\\n", from - 1, from, to - from + 1
					for (i = from; i <= to; i++) print "+" line[i]
				}
			}' "$PWD/$1/\$f"
	done
	exit 0
fi
exec "$realgit" "\$@"
SHIM
	chmod +x "$shim/git"
	diffargs="--diff mutate-files"
fi

summary=""
for p in $PKGS; do
	log=".mutate/$(echo "$p" | tr / _).log"
	if [ -n "${MUTATE_FILES:-}" ]; then
		# A log of its own per choice of files: runs over different
		# files of one package can go side by side.
		log=".mutate/$(echo "$p $MUTATE_FILES" | tr ' /:' '__-').log"
	fi
	echo "== $p (log: $log)"
	# -short: each package's quick tests (the long e2e and stress runs
	# would make one mutant cost minutes on a shared machine); nice, one
	# worker, one CPU per test run: a report that finishes beside other work.
	PATH="$shim:$PATH" MUTATE_FILES="${MUTATE_FILES:-}" GOFLAGS="$flags" \
		nice -n "${MUTATE_NICE:-10}" \
		"$GREMLINS" unleash --workers 1 --timeout-coefficient "$coef" \
		$diffargs "./$p" >"$log" 2>&1 || true
	grep -E '^ *(LIVED|TIMED OUT)' "$log" || true
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
