#!/bin/sh
# Mutation report for some files of one package: scripts/mutate-files.sh
# PKG FILE... (e.g. `scripts/mutate-files.sh wallet ledger.go store.go`).
# Where a whole package takes hours (wallet: 831 mutants), this scores the
# files that matter first. Same settings as scripts/mutate.sh (MUTATE_GOFLAGS,
# MUTATE_NICE, MUTATE_TIMEOUT_COEFFICIENT); MUTATE_DRY=1 only lists the
# mutants.
#
# How: gremlins v0.5.0 only mutates lines that `git diff --merge-base REF`
# shows as added, and names files relative to the package directory. So
# the script copies the tracked tree to a scratch directory, makes a git
# repository of the package directory alone whose commit has the chosen
# files empty, puts them back, and runs gremlins with --diff HEAD there.
# The worktree is not touched and may be edited during the run.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 PKG FILE..." >&2; exit 2; }
cd "$(dirname "$0")/.."
root=$PWD
pkg=$1
shift
GREMLINS=$root/tools/bin/gremlins
if [ ! -x "$GREMLINS" ]; then
	GOBIN="$root/tools/bin" go install github.com/go-gremlins/gremlins/cmd/gremlins@v0.5.0
fi
scratch=$(mktemp -d "${TMPDIR:-/tmp}/fincrypt-mutate.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
git ls-files | tar -cf - -T - | tar -xf - -C "$scratch"
cd "$scratch/$pkg"
for f in "$@"; do
	[ -f "$f" ] || { echo "$pkg/$f: no such file" >&2; exit 2; }
	cp "$f" "$scratch/.keep.$f"
	: >"$f"
done
git init -q
git add -A
git -c user.email=mutate@localhost -c user.name=mutate commit -qm base
for f in "$@"; do cp "$scratch/.keep.$f" "$f"; done
cd "$scratch"
mkdir -p "$root/.mutate"
log="$root/.mutate/$(echo "$pkg" | tr / _)-files.log"
echo "== $pkg: $* (log: $log)"
GIT_DIR="$scratch/$pkg/.git" GIT_WORK_TREE="$scratch/$pkg" GOFLAGS="${MUTATE_GOFLAGS:--short}" \
	nice -n "${MUTATE_NICE:-10}" "$GREMLINS" unleash --workers 1 --test-cpu 1 \
	--timeout-coefficient "${MUTATE_TIMEOUT_COEFFICIENT:-5}" ${MUTATE_DRY:+--dry-run} --diff HEAD "./$pkg" >"$log" 2>&1 || true
grep -E '^ *(LIVED|TIMED OUT)' "$log" || true
grep -Eo 'Test efficacy: [0-9.]+%' "$log" | tail -1 || true
grep -E 'Killed: [0-9]+, Lived: [0-9]+' "$log" | tail -1 || true
