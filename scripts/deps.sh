#!/usr/bin/env bash
# Installs the Debian packages that tests and benchmarks need, idempotently.
# Each file scripts/deps/NAME.list names the packages of one need, one per
# line (# comments allowed). Usage: scripts/deps.sh NAME... (no name: every
# list but the benchmarks' bench-*, which scripts/bench.sh installs itself).
# As root it runs apt-get install -y for what is missing; otherwise it only
# reports what is missing, and the tests that need it skip and say so.
set -euo pipefail
cd "$(dirname "$0")/deps"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
	for f in *.list; do
		case "$f" in bench-*) continue ;; esac
		[ -e "$f" ] && names+=("${f%.list}")
	done
fi
pkgs=()
for n in "${names[@]}"; do
	while read -r p _; do
		case "$p" in ''|'#'*) continue ;; esac
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || pkgs+=("$p")
	done <"$n.list"
done
[ ${#pkgs[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: not root, not installing: ${pkgs[*]}" >&2
	exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null ||
	{ apt-get update >/dev/null && apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null; }
echo "deps: installed ${pkgs[*]}"
