#!/usr/bin/env bash
# make bench: every figure next to a baseline measured in the same run.
#
# Part 1 runs the same file-system workloads on a plain directory, a Fincrypt
# mount and (where Debian's gocryptfs can be installed) a gocryptfs mount, all on
# the same disk; cold reads come after an unmount, a remount and dropping the
# page cache. A backup row compares `fincrypt backup run` with `restic backup`
# to a local repository (first pass of $(go env GOROOT)/src, an unchanged
# second pass, and the bytes a 1 MiB edit in a 256 MiB file stores; the vault
# has no network there, so these are the bytes queued for upload). Part 2 runs the Go benchmarks (network, proofs, ...), which
# report their own baselines. The table ends the output.
#
# BENCH_SIZE (default 1GiB), BENCH_SMALL (default 10000 files) scale part 1;
# BENCH_SKIP_FS=1 or BENCH_SKIP_GO=1 skip a part; BENCH_DIR picks the scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SIZE=${BENCH_SIZE:-1GiB}
SMALL=${BENCH_SMALL:-10000}
# Scratch space on the same disk as a typical home; removed at the end unless BENCH_KEEP=1.
OUT=${BENCH_DIR:-$(mktemp -d /var/tmp/fincrypt-bench.XXXXXX)}
BIN=$ROOT/bin/fincrypt
FSBENCH=$ROOT/bin/fsbench
RESULTS=$OUT/results.txt

go build -o "$BIN" ./cmd/fincrypt
go build -o "$FSBENCH" ./bench/fsbench
unmount_all() {
	for m in "$OUT"/*/mnt; do
		[ -d "$m" ] && grep -qs " $m " /proc/self/mountinfo && umount -l "$m" 2>/dev/null || true
	done
}
cleanup() {
	unmount_all
	[ "${BENCH_KEEP:-}" = 1 ] || rm -rf "$OUT"
}
trap cleanup EXIT
unmount_all
rm -rf "$OUT"
mkdir -p "$OUT"
: >"$RESULTS"

drop_caches() {
	sync
	if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi
}

# --- targets: each has setup, mount and umount; all work in $OUT/<name>/mnt ---
plain_setup() { mkdir -p "$OUT/plain/mnt"; }
plain_mount() { :; }
plain_umount() { :; }

fincrypt_setup() {
	mkdir -p "$OUT/fincrypt/mnt"
	FINCRYPT_PASSWORD=bench "$BIN" --home "$OUT/fincrypt/home" init >/dev/null
}
fincrypt_mount() { FINCRYPT_PASSWORD=bench "$BIN" --home "$OUT/fincrypt/home" mount "$OUT/fincrypt/mnt" >/dev/null; }
fincrypt_umount() { "$BIN" umount "$OUT/fincrypt/mnt"; }

gocryptfs_setup() {
	mkdir -p "$OUT/gocryptfs/mnt" "$OUT/gocryptfs/cipher"
	gocryptfs -init -q -extpass "echo bench" "$OUT/gocryptfs/cipher" >/dev/null
}
gocryptfs_mount() { gocryptfs -q -nosyslog -extpass "echo bench" "$OUT/gocryptfs/cipher" "$OUT/gocryptfs/mnt"; }
gocryptfs_umount() { umount "$OUT/gocryptfs/mnt" 2>/dev/null || fusermount3 -u "$OUT/gocryptfs/mnt"; }

record() { # target line-from-fsbench
	echo "$1 $2" | tee -a "$RESULTS"
}

run_target() {
	local t=$1 d=$OUT/$1/mnt
	echo "== $t"
	"${t}_setup"
	"${t}_mount"
	record "$t" "$("$FSBENCH" write "$d" "$SIZE")"
	"${t}_umount"; drop_caches; "${t}_mount"
	record "$t" "$("$FSBENCH" read "$d")"
	rm -f "$d/seq.bin"
	record "$t" "$("$FSBENCH" small-write "$d" "$SMALL")"
	"${t}_umount"; drop_caches; "${t}_mount"
	record "$t" "$("$FSBENCH" small-read "$d" "$SMALL")"
	record "$t" "$("$FSBENCH" untar "$d" "$OUT/gosrc.tar")"
	"${t}_umount"
}

if [ "${BENCH_SKIP_FS:-}" != 1 ]; then
	tar cf "$OUT/gosrc.tar" -C "$(go env GOROOT)" src
	echo "untar workload: $(go env GOROOT)/src, $(tar tf "$OUT/gosrc.tar" | wc -l) entries, $(du -h "$OUT/gosrc.tar" | cut -f1)"
	targets="plain fincrypt"
	if { ! command -v gocryptfs || ! command -v fusermount; } >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing Debian's gocryptfs (and fuse3, whose fusermount it needs) for the comparison"
		(apt-get install -y -qq gocryptfs fuse3 >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq gocryptfs fuse3 >/dev/null 2>&1; }) || true
	fi
	if command -v gocryptfs >/dev/null && command -v fusermount >/dev/null; then
		targets="$targets gocryptfs"
	else
		echo "gocryptfs is not installed: no comparison with it in this run"
	fi
	for t in $targets; do run_target "$t"; done
fi

# Backups (issue 10): fincrypt backup against restic backup to a local
# repository, same data, same disk. BENCH_SKIP_BACKUP=1 skips it;
# BENCH_BACKUP_MIB (default 256) sizes the file of the edit row.
BACKUP_RESULTS=$OUT/backup-results.txt
: >"$BACKUP_RESULTS"
bench_backup() {
	local d=$OUT/backup src=$(go env GOROOT)/src mib=${BENCH_BACKUP_MIB:-256}
	"$ROOT/scripts/deps.sh" bench-restic || true
	if ! command -v restic >/dev/null; then
		echo "restic is not installed: no backup comparison in this run"
		return
	fi
	mkdir -p "$d/big"
	export FINCRYPT_PASSWORD=bench RESTIC_PASSWORD=bench
	"$BIN" --home "$d/home" init >/dev/null
	"$BIN" --home "$d/home" backup add "$src" "$d/big" >/dev/null
	restic -q -r "$d/restic" init >/dev/null
	secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); awk "BEGIN { printf \"%.2f\", $t1 - $t0 }"; }
	local f1 r1 f2 r2
	drop_caches
	f1=$(secs "$BIN" --home "$d/home" backup run)
	drop_caches
	r1=$(secs restic -q -r "$d/restic" backup "$src" "$d/big")
	f2=$(secs "$BIN" --home "$d/home" backup run)
	r2=$(secs restic -q -r "$d/restic" backup "$src" "$d/big")
	echo "backup-first s $f1 $r1" >>"$BACKUP_RESULTS"
	echo "backup-again s $f2 $r2" >>"$BACKUP_RESULTS"
	# A 1 MiB edit in the middle of a big file: bytes stored (to upload).
	head -c "$((mib << 20))" /dev/urandom >"$d/big/big.bin"
	"$BIN" --home "$d/home" backup run >/dev/null
	restic -q -r "$d/restic" backup "$src" "$d/big" >/dev/null
	head -c $((1 << 20)) /dev/urandom | dd of="$d/big/big.bin" bs=1 seek=$(((mib << 19) + 12345)) conv=notrunc status=none
	local fb rb
	fb=$("$BIN" --home "$d/home" backup run --json | sed -n 's/.*"new_bytes": \([0-9]*\).*/\1/p')
	rb=$(restic -r "$d/restic" backup --json "$src" "$d/big" | sed -n 's/.*"data_added":\([0-9]*\).*/\1/p' | tail -1)
	echo "edit-1MiB-in-${mib}MiB bytes $fb $rb" >>"$BACKUP_RESULTS"
	unset FINCRYPT_PASSWORD RESTIC_PASSWORD
	echo "backup workload: $src ($(du -sh "$src" | cut -f1)); edit row: 1 MiB in a $mib MiB file"
}
if [ "${BENCH_SKIP_BACKUP:-}" != 1 ]; then
	echo "== backup"
	bench_backup
fi

GOBENCH=$OUT/go-bench.txt
: >"$GOBENCH"
if [ "${BENCH_SKIP_GO:-}" != 1 ]; then
	pkgs=$(grep -rl --include='*_test.go' '^func Benchmark' . | xargs -r -n1 dirname | sort -u)
	for p in $pkgs; do
		echo "== go benchmarks in $p"
		go test -run '^$' -bench . -benchtime 1x -timeout 30m "$p" | tee -a "$GOBENCH"
	done
fi

echo
echo "Fincrypt benchmark table ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores; ratio > 1 means Fincrypt is faster)"
awk '
	{ v[$1, $2] = $3; u[$2] = $4; if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 } }
	END {
		if (n == 0) exit
		printf "%-12s %-8s %12s %12s %10s %12s %12s\n", "workload", "unit", "plain dir", "fincrypt", "vs plain", "gocryptfs", "vs gocryptfs"
		for (i = 1; i <= n; i++) {
			w = order[i]; p = v["plain", w]; f = v["fincrypt", w]; g = v["gocryptfs", w]
			rp = "-"; rg = "-"
			if (p != "" && f != "" && f > 0 && p > 0) rp = sprintf("%.2f", u[w] == "s" ? p / f : f / p)
			if (g != "" && f != "" && f > 0 && g > 0) rg = sprintf("%.2f", u[w] == "s" ? g / f : f / g)
			printf "%-12s %-8s %12s %12s %10s %12s %12s\n", w, u[w], p, f, rp, (g == "" ? "-" : g), rg
		}
	}' "$RESULTS"
if [ -s "$BACKUP_RESULTS" ]; then
	echo
	printf "%-22s %-6s %12s %12s %s\n" "backup" "unit" "fincrypt" "restic" "ratio (> 1: fincrypt better)"
	awk '{ r = ($3 > 0) ? sprintf("%.2f", $4 / $3) : "-"; printf "%-22s %-6s %12s %12s %s\n", $1, $2, $3, $4, r }' "$BACKUP_RESULTS"
fi
# Go benchmarks: one row each, every metric it reported; each reports its
# baseline from the same run and the ratio to it.
echo
printf "%-30s %s\n" "go benchmark" "figures (baseline and ratio from the same run)"
awk '/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
	line = ""
	for (i = 3; i < NF; i += 2) if ($(i+1) != "ns/op") line = line (line == "" ? "" : ", ") $i " " $(i+1)
	printf "%-30s %s\n", name, line
}' "$GOBENCH"
