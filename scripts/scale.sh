#!/usr/bin/env bash
# scripts/scale.sh: how the client's costs grow with the vault, measured the way
# ../shared/MEASURED.md did (the fincrypt binary as a user runs it), for this
# tree's binary and a base commit's binary in the same run.
#
# Local rows: a vault without a network, filled through the mount by 8 parallel
# writers with files of 1-4 KiB, 1000 a directory (fsbench fill); then, after an
# unmount and dropping the page cache: `fincrypt mount` until the folder answers,
# `find MNT` cold, the mount's memory after it (rss_now: VmRSS read once, which
# the kernel's reclaim moves from one read to the next; rss_peak: VmHWM, the
# most the process held since it started, which includes the 64 MiB the
# password's key derivation takes as the mount opens the vault: a peak near
# 100 MB is that, not the vault), a 4 KiB write+fsync in a deep
# directory (median of 50), the mount's CPU over SCALE_IDLE seconds of idling
# (as seconds a minute) and, unmounted, `fincrypt check`.
#
# Devnet rows: the same fill in a vault attached to a 5-node `fincrypt devnet
# --no-bitcoin` (each binary its own devnet), waited on until nothing is pending
# and the index snapshot is stored (restorable); then the idle CPU a minute, the extra CPU over SCALE_IDLE seconds that one new
# 3 KB file costs (that window minus the idle one), and `fincrypt status --json`
# latency while a new file is pending (median of 5).
#
# SCALE_SIZES (default "10000 100000"; "" for none) are the file counts; SCALE_DEVNET_SIZES
# (default the same) those with devnet rows; SCALE_BASE (default 015a61d, the
# commit of MEASURED.md) the "before" commit, or SCALE_BINS="name=path ..." the
# binaries to compare; SCALE_IDLE (default 60) the idle window in seconds;
# SCALE_DIR the scratch directory (removed at the end unless SCALE_KEEP=1).
#
# Generated rows (SCALE_GEN_SIZES, file counts, default none): a vault filled
# by bench/genvault -evicted directly through the index API (no mount), every
# chunk located in a durable segment and none in the local store, so that a
# vault of millions of files (4 index records each: ten million at 2.5M files)
# takes minutes and no chunk files; then, as for the local rows, `fincrypt
# mount` cold, its rss_now and rss_peak, its idle CPU, and `fincrypt check` (which reads no
# chunk of such a vault). Only this tree's binary (the vault is written by
# this tree's index code); SCALE_GEN_BINS="name=path ..." for others.
# Every row ends with the 1-minute load average, as the machine may be shared;
# the CPU seconds next to a time (the mount process's own for mount and find,
# the command's for check) do not depend on the load.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SIZES=${SCALE_SIZES-10000 100000}
DEVNET_SIZES=${SCALE_DEVNET_SIZES-$SIZES}
IDLE=${SCALE_IDLE:-60}
BASE=${SCALE_BASE:-015a61d}
OUT=${SCALE_DIR:-$(mktemp -d /var/tmp/fincrypt-scale.XXXXXX)}
mkdir -p "$OUT/bin"
RESULTS=$OUT/results.txt
: >"$RESULTS"
export FINCRYPT_PASSWORD=scale
TICK=$(getconf CLK_TCK)

go build -o "$OUT/bin/fsbench" ./bench/fsbench
FSBENCH=$OUT/bin/fsbench
GEN_SIZES=${SCALE_GEN_SIZES:-}
if [ -n "$GEN_SIZES" ]; then
	go build -o "$OUT/bin/genvault" ./bench/genvault
	if [ -z "${SCALE_GEN_BINS:-}" ]; then
		go build -o "$OUT/bin/fincrypt-tree" ./cmd/fincrypt
		SCALE_GEN_BINS="new=$OUT/bin/fincrypt-tree"
	fi
fi
if [ -z "${SCALE_BINS:-}" ]; then
	go build -o "$OUT/bin/fincrypt-new" ./cmd/fincrypt
	rm -rf "$OUT/base-src"
	mkdir -p "$OUT/base-src"
	git archive "$BASE" | tar x -C "$OUT/base-src"
	(cd "$OUT/base-src" && go build -o "$OUT/bin/fincrypt-base" ./cmd/fincrypt)
	SCALE_BINS="base=$OUT/bin/fincrypt-base new=$OUT/bin/fincrypt-new"
fi

DEVNET_PID=
cleanup() {
	for m in "$OUT"/run-*/mnt; do
		[ -d "$m" ] && grep -qs " $m " /proc/self/mountinfo && umount -l "$m" 2>/dev/null || true
	done
	if [ -n "$DEVNET_PID" ]; then kill -INT "$DEVNET_PID" 2>/dev/null || true; fi
	[ "${SCALE_KEEP:-}" = 1 ] || rm -rf "$OUT"/run-* "$OUT/base-src"
}
trap cleanup EXIT

drop_caches() {
	sync
	if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi
}
now() { date +%s.%N; }
since() { echo "$(now) $1" | awk '{printf "%.3f", $1-$2}'; }
load() { cut -d' ' -f1 /proc/loadavg; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# rss_mb PID: VmRSS now, in MB; hwm_mb PID: VmHWM, the peak RSS since the
# process started (it does not move with the kernel's reclaim).
rss_mb() { awk '/^VmRSS/{printf "%.0f", $2/1024}' "/proc/$1/status"; }
hwm_mb() { awk '/^VmHWM/{printf "%.0f", $2/1024}' "/proc/$1/status"; }
record() { echo "$*" | tee -a "$RESULTS"; }

# idle_cpu PID SECONDS: the CPU seconds a minute PID used over SECONDS.
idle_cpu() {
	local a b
	a=$(cpu_ticks "$1")
	sleep "$2"
	b=$(cpu_ticks "$1")
	awk -v a="$a" -v b="$b" -v t="$TICK" -v s="$2" 'BEGIN{printf "%.2f", (b-a)/t*60/s}'
}

# status_field HOME FIELD: a number from `status --json`.
status_field() {
	"$BIN" --home "$1" status --json 2>/dev/null | grep -o "\"$2\": *[0-9]*" | grep -o '[0-9]*$' || echo -1
}

# wait_durable HOME: until nothing is pending or degraded (at most 30 min).
wait_durable() {
	local deadline=$(($(date +%s) + 1800))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		if [ "$(status_field "$1" pending_files)" = 0 ] && [ "$(status_field "$1" pending_chunks)" -le 0 ] &&
			[ "$(status_field "$1" segments_degraded)" = 0 ]; then
			return 0
		fi
		sleep 5
	done
	echo "scale: $1 still has pending work after 30 minutes" >&2
	return 1
}

mount_vault() { # HOME MNT: mount, and wait until the folder answers
	"$BIN" --home "$1" mount "$2" >/dev/null
	until ls "$2" >/dev/null 2>&1; do sleep 0.01; done
}

local_rows() { # NAME N
	local name=$1 n=$2 r=$OUT/run-$1-$2-local
	rm -rf "$r"
	mkdir -p "$r/mnt"
	"$BIN" --home "$r/home" init >/dev/null
	mount_vault "$r/home" "$r/mnt"
	"$FSBENCH" fill "$r/mnt" "$n" >"$r/fill.txt"
	"$BIN" umount "$r/mnt"
	drop_caches
	local t0 mount find pid rss hwm fsync idle check mcpu fcpu ccpu c0
	t0=$(now)
	mount_vault "$r/home" "$r/mnt"
	mount=$(since "$t0")
	pid=$(cat "$r/home/mount.pid")
	mcpu=$(awk -v t="$TICK" '{printf "%.2f", ($14+$15)/t}' "/proc/$pid/stat")
	t0=$(now)
	c0=$(cpu_ticks "$pid")
	local got
	got=$(find "$r/mnt" | wc -l)
	find=$(since "$t0")
	fcpu=$(awk -v a="$c0" -v b="$(cpu_ticks "$pid")" -v t="$TICK" 'BEGIN{printf "%.2f", (b-a)/t}')
	rss=$(rss_mb "$pid")
	hwm=$(hwm_mb "$pid")
	fsync=$("$FSBENCH" write-fsync "$r/mnt" | awk '{print $2}')
	sleep 5
	idle=$(idle_cpu "$pid" "$IDLE")
	"$BIN" umount "$r/mnt"
	t0=$(now)
	ccpu=$(/usr/bin/time -f '%U %S' "$BIN" --home "$r/home" check 2>&1 >/dev/null | tail -1 | awk '{printf "%.2f", $1+$2}')
	check=$(since "$t0")
	record "local $name files=$n fill=$(awk '{print $2}' "$r/fill.txt")files/s mount_cold=${mount}s(cpu ${mcpu}s) find_cold=${find}s(${got}, mount cpu ${fcpu}s) rss_now_after_find=${rss}MB rss_peak_after_find=${hwm}MB write_fsync=${fsync}ms idle_cpu=${idle}s/min check=${check}s(cpu ${ccpu}s) load=$(load)"
	rm -rf "$r"
}

gen_rows() { # NAME N
	local name=$1 n=$2 r=$OUT/run-$1-$2-gen
	rm -rf "$r"
	mkdir -p "$r/mnt"
	"$BIN" --home "$r/home" init >/dev/null
	mount_vault "$r/home" "$r/mnt" # the root and a clean-close record
	"$BIN" umount "$r/mnt"
	local gen t0 mount mcpu pid rss hwm idle check ccpu
	gen=$("$OUT/bin/genvault" -evicted "$r/home" "$n" 2>/dev/null | awk '{print $2}')
	drop_caches
	t0=$(now)
	mount_vault "$r/home" "$r/mnt"
	mount=$(since "$t0")
	pid=$(cat "$r/home/mount.pid")
	mcpu=$(awk -v t="$TICK" '{printf "%.2f", ($14+$15)/t}' "/proc/$pid/stat")
	rss=$(rss_mb "$pid")
	hwm=$(hwm_mb "$pid")
	sleep 5
	idle=$(idle_cpu "$pid" "$IDLE")
	"$BIN" umount "$r/mnt"
	drop_caches
	t0=$(now)
	ccpu=$(/usr/bin/time -f '%U %S' "$BIN" --home "$r/home" check 2>&1 >/dev/null | tail -1 | awk '{printf "%.2f", $1+$2}')
	check=$(since "$t0")
	record "gen $name files=$n entries=$((n * 4 + (n + 999) / 1000 * 3)) gen=${gen}files/s mount_cold=${mount}s(cpu ${mcpu}s) rss_now=${rss}MB rss_peak=${hwm}MB idle_cpu=${idle}s/min check=${check}s(cpu ${ccpu}s) load=$(load)"
	rm -rf "$r"
}

devnet_rows() { # NAME N
	local name=$1 n=$2 r=$OUT/run-$1-$2-devnet
	rm -rf "$r"
	mkdir -p "$r/mnt"
	"$BIN" devnet --dir "$r/net" --no-bitcoin --nodes 5 >"$r/devnet.out" 2>&1 &
	DEVNET_PID=$!
	for _ in $(seq 1 240); do [ -s "$r/net/mediator.addr" ] && break; sleep 0.5; done
	[ -s "$r/net/mediator.addr" ] || { echo "scale: the devnet did not start; see $r/devnet.out" >&2; tail "$r/devnet.out" >&2; return 1; }
	"$BIN" --home "$r/home" init --mediator "$(cat "$r/net/mediator.addr")" >/dev/null
	mount_vault "$r/home" "$r/mnt"
	local pid t0 fill durable idle a b extra lat
	pid=$(cat "$r/home/mount.pid")
	t0=$(now)
	"$FSBENCH" fill "$r/mnt" "$n" >"$r/fill.txt"
	fill=$(awk '{print $2}' "$r/fill.txt")
	wait_durable "$r/home"
	durable=$(since "$t0")
	# The index snapshot that follows the writes (once they paused for the
	# snapshot delay) is not idling: wait for it (at most 10 minutes).
	for _ in $(seq 1 120); do
		"$BIN" --home "$r/home" status --json 2>/dev/null | grep -Eq '"restorable": *true' && break
		sleep 5
	done
	sleep 15
	idle=$(idle_cpu "$pid" "$IDLE")
	# One new 3 KB file: the mount's CPU over the same window, less the idle CPU.
	a=$(cpu_ticks "$pid")
	head -c 3000 /dev/urandom >"$r/mnt/one-new-file"
	sleep "$IDLE"
	b=$(cpu_ticks "$pid")
	extra=$(awk -v a="$a" -v b="$b" -v t="$TICK" -v s="$IDLE" -v i="$idle" 'BEGIN{printf "%.2f", (b-a)/t - i*s/60}')
	# status --json while a new file is pending: the median of 5 (a sample
	# counts only if the file was still pending when status answered).
	local lats=() i out
	for i in 1 2 3 4 5 6 7 8 9 10; do
		head -c 3000 /dev/urandom >"$r/mnt/pending-$i"
		t0=$(now)
		out=$("$BIN" --home "$r/home" status --json)
		lat=$(since "$t0")
		if grep -Eq '"pending_files": *[1-9]' <<<"$out"; then lats+=("$lat"); fi
		[ "${#lats[@]}" -ge 5 ] && break
	done
	lat=$(printf '%s\n' "${lats[@]:-}" | sort -n | awk 'NF{a[n++]=$1} END{if(n) print a[int(n/2)]"s("n")"; else print "none-pending"}')
	record "devnet $name files=$n fill=${fill}files/s fill_until_durable=${durable}s idle_cpu=${idle}s/min one_file_extra_cpu=${extra}s status_pending=${lat} rss_now=$(rss_mb "$pid")MB rss_peak=$(hwm_mb "$pid")MB load=$(load)"
	"$BIN" umount "$r/mnt"
	kill -INT "$DEVNET_PID"
	wait "$DEVNET_PID" || true
	DEVNET_PID=
	rm -rf "$r"
}

echo "scale: sizes $SIZES (devnet: ${DEVNET_SIZES:-none}), idle window ${IDLE}s, binaries: $SCALE_BINS, scratch $OUT"
for n in $SIZES; do
	for b in $SCALE_BINS; do
		BIN=${b#*=}
		local_rows "${b%%=*}" "$n"
	done
done
for n in $DEVNET_SIZES; do
	for b in $SCALE_BINS; do
		BIN=${b#*=}
		devnet_rows "${b%%=*}" "$n"
	done
done
[ -z "$GEN_SIZES" ] || echo "scale: generated sizes $GEN_SIZES, binaries: $SCALE_GEN_BINS"
for n in $GEN_SIZES; do
	for b in $SCALE_GEN_BINS; do
		BIN=${b#*=}
		gen_rows "${b%%=*}" "$n"
	done
done
echo "== scale results ($RESULTS)"
cat "$RESULTS"
