#!/usr/bin/env bash
# make bench: every figure next to a baseline measured in the same run.
#
# Part 1 runs the same file-system workloads on a plain directory, a Fincrypt
# mount and (where Debian's gocryptfs can be installed) a gocryptfs mount, all on
# the same disk; cold reads come after an unmount, a remount and dropping the
# page cache. The untar and git-checkout rows end with the disk synced, the
# same for every target: `sync -f` of the target directory and of the
# benchmark's scratch directory (FSBENCH_SYNC), which holds the plain
# directory, gocryptfs's ciphertext and Fincrypt's store and index on one
# file system. (`sync -f` of a FUSE mount alone syncs nothing in the server:
# before 2026-12-07 15:00 UTC these two rows synced the disk for the plain
# directory only.) Neither FUSE server is asked to flush anything else: a
# Fincrypt file's data is sealed and committed in the background once it is
# closed (as for small-write), and what that queue still holds when the sync
# runs is not in the row. small-write, small-read, git-status, mktree and
# find sync nothing on any target; write ends with fsync, which every target
# passes to the disk. A backup row compares `fincrypt backup run` with `restic backup`
# to a local repository (first pass of $(go env GOROOT)/src, an unchanged
# second pass, the first pass of one 1 GiB file, and the bytes a 1 MiB edit in
# a 256 MiB file stores; the vault
# has no network there, so these are the bytes queued for upload). Part 2 runs the Go benchmarks (network, proofs, ...), which
# report their own baselines. Among them, replicate's BenchmarkDurable (1 GiB
# written through a mount until every piece is committed to a 5-node planet)
# and BenchmarkRestore (the same file restored and read back) give plaintext
# MB/s against one bare stream of as many bytes over Fincrypt's transport,
# run before and after and the faster kept (ratio; the 2x expansion of the
# default 2-of-4 scheme makes 0.5 the ceiling), and CPU-s per GB against the
# stream's (cpu-ratio, the nodes' processes included). Since the twelfth
# session the transport reads with UDP GRO, which quic-go alone does not:
# quicgo-MB/s and quicgo-ratio are against a stream over quic-go alone
# (fnet.Config.NoGRO), the baseline the ratio had before. Since the ninth session the stream's
# bytes and the writer's are made before the clock starts (the stream had
# generated its bytes as it sent, 27-34 % of its CPU, which made every
# ratio against it look better than it was), and the storage nodes, like
# the stream's receiver, run as processes of their own, as users run them
# (FINCRYPT_BENCH_PROCESSES=0: all in the benchmark's process, as before;
# ratios of the two layouts do not compare, the bare stream's pace moves too).
# client-cpu-s/GB and nodes-cpu-s/GB split their CPU by process, and
# BenchmarkBareFanout sends the durable upload's traffic (2 GB a GB, 8 MiB
# streams to four receivers, two at a time) with nothing behind it: what
# BenchmarkDurable spends above it is Fincrypt's own work (replicate's
# bench_test.go says how to profile the nodes, and the figures).
# BenchmarkSnapshotDelta takes one index snapshot after one new file in
# vaults of 10,000 and 100,000 files, as a delta and as a base (what every
# snapshot was before), alternating: delta/base of CPU and bytes, and
# 100k/10k of each (a delta's bytes follow the change; its CPU is still
# mostly the state hash, one read of the index).
# The table ends the output.
#
# Part 1 runs BENCH_ROUNDS rounds (default 3): each round sets every target up
# afresh and runs them one after the other, the first target of a round being
# the second of the round before, so no target always follows the same one.
# One round of part 1 is not a measurement: on two cores the small-file rows
# of one target move by 10-20 % between rounds, more than the margins the
# table is read for. The table gives each target's median value, and for each
# ratio the median of the rounds' ratios (each ratio taken within one round)
# and their range; BENCH_ROUNDS=1 gives one round and the single ratios, as
# before. Part 1 takes BENCH_ROUNDS times as long as one round, which was
# about 6 minutes for the three targets on two quiet cores: about 18 minutes
# by default. Fincrypt and gocryptfs alone with BENCH_SIZE=64MiB took 6.5
# minutes for three rounds (load average 8-11).
#
# BENCH_SIZE (default 1GiB), BENCH_SMALL (default 10000 files), BENCH_FIND
# (default 100000 entries) scale part 1; BENCH_TARGETS (default "plain fincrypt
# gocryptfs") picks its targets; BENCH_BASE_BIN=a copy of an older bin/fincrypt
# (absolute path: the script rebuilds bin/fincrypt) adds the target "base"
# and a column of fincrypt against it, measured in the same rounds (how a
# change to the mount is measured); BENCH_SKIP_FS=1 or BENCH_SKIP_GO=1 skip a part;
# BENCH_DIR picks the scratch directory; BENCH_STORE_PIECES scales the mediator
# store benchmark (default 1000000). The chunk store's benchmarks read
# FINCRYPT_BENCH_CHUNKS (chunks in the store that BenchmarkStoreOpen opens,
# default 10000; the issue's figure is 1000000) and FINCRYPT_BENCH_PUTS
# (chunks BenchmarkPutSync writes in each format, default 10000).
# BenchmarkDurable writes FINCRYPT_BENCH_BYTES (default 1GiB, from the
# environment, not BENCH_SIZE); FINCRYPT_BENCH_TIMELINE=file (or -, stderr)
# has it write a line every 250 ms: MB written and uploaded, segment
# uploads running, rounds ended, the client's and the nodes' CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SIZE=${BENCH_SIZE:-1GiB}
SMALL=${BENCH_SMALL:-10000}
ROUNDS=${BENCH_ROUNDS:-3}
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then
	echo "BENCH_ROUNDS must be a whole number of rounds, at least 1 (got '$ROUNDS')" >&2
	exit 2
fi
ROUND=1
BASE_BIN=${BENCH_BASE_BIN:-}
if [ -n "$BASE_BIN" ] && ! [ -x "$BASE_BIN" ]; then
	echo "BENCH_BASE_BIN=$BASE_BIN is not an executable (a fincrypt binary to compare with)" >&2
	exit 2
fi
if [ -z "$BASE_BIN" ] && [[ " ${BENCH_TARGETS:-} " == *" base "* ]]; then
	echo "the target base needs BENCH_BASE_BIN (a fincrypt binary to compare with)" >&2
	exit 2
fi
FIND=${BENCH_FIND:-100000}
# Scratch space on the same disk as a typical home; removed at the end unless BENCH_KEEP=1.
OUT=${BENCH_DIR:-$(mktemp -d /var/tmp/fincrypt-bench.XXXXXX)}
BIN=$ROOT/bin/fincrypt
FSBENCH=$ROOT/bin/fsbench
RESULTS=$OUT/results.txt
export FSBENCH_SYNC=$OUT # the disk every target writes to (fsbench syncAfter)

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
plain_setup() { rm -rf "$OUT/plain"; mkdir -p "$OUT/plain/mnt"; }
plain_mount() { :; }
plain_umount() { :; }

fc_setup() { # name binary
	rm -rf "${OUT:?}/$1"
	mkdir -p "$OUT/$1/mnt"
	FINCRYPT_PASSWORD=bench "$2" --home "$OUT/$1/home" init >/dev/null
}
fc_mount() { FINCRYPT_PASSWORD=bench "$2" --home "$OUT/$1/home" mount "$OUT/$1/mnt" >/dev/null; }
fc_umount() { "$2" umount "$OUT/$1/mnt"; }
fincrypt_setup() { fc_setup fincrypt "$BIN"; }
fincrypt_mount() { fc_mount fincrypt "$BIN"; }
fincrypt_umount() { fc_umount fincrypt "$BIN"; }
# BENCH_BASE_BIN: another fincrypt binary (the code before a change), run as
# target "base" in the same rounds; the table then gives fincrypt against it.
base_setup() { fc_setup base "$BASE_BIN"; }
base_mount() { fc_mount base "$BASE_BIN"; }
base_umount() { fc_umount base "$BASE_BIN"; }

gocryptfs_setup() {
	rm -rf "$OUT/gocryptfs"
	mkdir -p "$OUT/gocryptfs/mnt" "$OUT/gocryptfs/cipher"
	gocryptfs -init -q -extpass "echo bench" "$OUT/gocryptfs/cipher" >/dev/null
}
gocryptfs_mount() { gocryptfs -q -nosyslog -extpass "echo bench" "$OUT/gocryptfs/cipher" "$OUT/gocryptfs/mnt"; }
gocryptfs_umount() { umount "$OUT/gocryptfs/mnt" 2>/dev/null || fusermount3 -u "$OUT/gocryptfs/mnt"; }

record() { # target line-from-fsbench; $RESULTS lines: target workload value unit round
	echo "$1 $2 $ROUND" | tee -a "$RESULTS"
}

run_target() {
	local t=$1 d=$OUT/$1/mnt
	echo "== $t (round $ROUND of $ROUNDS)"
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
	rm -rf "$d/small" "$d/src"
	# A large repository: cloned (untimed), then git status and git checkout
	# with a cold cache.
	git clone -q --no-local "$OUT/gorepo" "$d/repo"
	"${t}_umount"; drop_caches; "${t}_mount"
	record "$t" "$("$FSBENCH" git-status "$d")"
	record "$t" "$("$FSBENCH" git-checkout "$d" HEAD~1)"
	rm -rf "$d/repo"
	record "$t" "$("$FSBENCH" mktree "$d" "$FIND")"
	"${t}_umount"; drop_caches; "${t}_mount"
	record "$t" "$("$FSBENCH" find "$d" "$FIND")"
	"${t}_umount"
}

# make_repo: a git repository of the Go source tree with two commits, the
# second changing every 7th .go file, deleting every 53rd and adding 300.
make_repo() {
	local r=$OUT/gorepo
	mkdir -p "$r"
	tar xf "$OUT/gosrc.tar" -C "$r"
	local g=(git -C "$r" -c user.name=bench -c user.email=bench@localhost -c commit.gpgsign=false)
	"${g[@]}" init -q
	"${g[@]}" add -A
	"${g[@]}" commit -q -m "go source tree"
	(cd "$r" && git ls-files '*.go' | awk 'NR % 7 == 0' | while read -r f; do echo "// bench change" >>"$f"; done)
	(cd "$r" && git ls-files '*.go' | awk 'NR % 53 == 0' | xargs git rm -qf)
	mkdir -p "$r/src/benchnew"
	for i in $(seq 300); do echo "package benchnew // $i" >"$r/src/benchnew/f$i.go"; done
	"${g[@]}" add -A
	"${g[@]}" commit -q -m "changes"
	echo "git workload: $("${g[@]}" ls-files | wc -l) files, $(( $("${g[@]}" diff --name-only HEAD~1 | wc -l) )) changed by the checkout"
}

if [ "${BENCH_SKIP_FS:-}" != 1 ]; then
	tar cf "$OUT/gosrc.tar" -C "$(go env GOROOT)" src
	echo "untar workload: $(go env GOROOT)/src, $(tar tf "$OUT/gosrc.tar" | wc -l) entries, $(du -h "$OUT/gosrc.tar" | cut -f1)"
	make_repo
	targets=${BENCH_TARGETS:-plain fincrypt gocryptfs}
	if [ -n "$BASE_BIN" ] && [[ " $targets " != *" base "* ]]; then targets="$targets base"; fi
	if [[ " $targets " == *" gocryptfs "* ]]; then
		# Debian's gocryptfs (and fuse3, whose fusermount it needs): scripts/deps/bench-fs.list.
		./scripts/deps.sh bench-fs || true
		if ! command -v gocryptfs >/dev/null || ! command -v fusermount >/dev/null; then
			echo "gocryptfs is not installed: no comparison with it in this run"
			targets=${targets//gocryptfs/}
		fi
	fi
	read -ra tl <<<"$targets"
	for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
		# Round r starts with target (r-1) mod n and goes round the list.
		for ((i = 0; i < ${#tl[@]}; i++)); do
			run_target "${tl[(i + ROUND - 1) % ${#tl[@]}]}"
		done
	done
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
	"$BIN" --home "$d/home" backup add "$src" "$d/big" >/dev/null 2>&1
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
	# The first backup of one big file (BENCH_BACKUP_BIG_MIB, default 1024), in a vault
	# and a restic repository of its own.
	local big=${BENCH_BACKUP_BIG_MIB:-1024} fg rg
	mkdir -p "$d/one"
	head -c "$((big << 20))" /dev/urandom >"$d/one/file.bin"
	"$BIN" --home "$d/home1" init >/dev/null
	"$BIN" --home "$d/home1" backup add "$d/one" >/dev/null 2>&1
	restic -q -r "$d/restic1" init >/dev/null
	drop_caches
	fg=$(secs "$BIN" --home "$d/home1" backup run)
	drop_caches
	rg=$(secs restic -q -r "$d/restic1" backup "$d/one")
	echo "backup-${big}MiB-file s $fg $rg" >>"$BACKUP_RESULTS"
	rm -rf "$d/one" "$d/home1" "$d/restic1"
	# A 1 MiB edit in the middle of a big file: bytes stored (to upload).
	head -c "$((mib << 20))" /dev/urandom >"$d/big/big.bin"
	"$BIN" --home "$d/home" backup run >/dev/null
	restic -q -r "$d/restic" backup "$src" "$d/big" >/dev/null
	head -c $((1 << 20)) /dev/urandom | dd of="$d/big/big.bin" bs=1 seek=$(((mib << 19) + 12345)) conv=notrunc status=none
	local fb rb
	fb=$("$BIN" --home "$d/home" backup run --json | tail -1 | sed -n 's/.*"new_bytes": *\([0-9]*\).*/\1/p')
	rb=$(restic -r "$d/restic" backup --json "$src" "$d/big" | sed -n 's/.*"data_added":\([0-9]*\).*/\1/p' | tail -1)
	echo "edit-1MiB-in-${mib}MiB bytes $fb $rb" >>"$BACKUP_RESULTS"
	unset FINCRYPT_PASSWORD RESTIC_PASSWORD
	echo "backup workload: $src ($(du -sh "$src" | cut -f1)); one file of $big MiB; edit row: 1 MiB in a $mib MiB file"
}
if [ "${BENCH_SKIP_BACKUP:-}" != 1 ]; then
	echo "== backup"
	bench_backup
	# A watched folder of BENCH_BACKUP_SCALE small files (default 100000): the watcher's
	# first pass, memory, inotify watches, one change to a snapshot, an unchanged pass.
	echo "== backup watch of ${BENCH_BACKUP_SCALE:-100000} small files"
	TMPDIR=$OUT FINCRYPT_BACKUP_SCALE=${BENCH_BACKUP_SCALE:-100000} go test -count=1 -v -run '^TestBackupWatchScale$' -timeout 60m ./cmd/fincrypt/ |
		grep '^backup-scale' | tee -a "$OUT/backup-scale.txt" || echo "the backup scale run failed (run it alone: FINCRYPT_BACKUP_SCALE=100000 go test -v -run TestBackupWatchScale ./cmd/fincrypt/)"
fi
# The mediator's two stores in one run: placements/s over QUIC and a repair
# scan over BENCH_STORE_PIECES contracted pieces (default 1000000) on Pebble
# and on PostgreSQL (a server the benchmark starts, fsync on as Pebble's
# synced writes are). Skipped with a message where PostgreSQL is missing.
store_backends_bench() {
	echo "== mediator stores: Pebble and PostgreSQL, ${BENCH_STORE_PIECES:-1000000} pieces"
	./scripts/deps.sh postgres || true
	FINCRYPT_PG_FSYNC=1 FINCRYPT_BENCH_PIECES=${BENCH_STORE_PIECES:-1000000} \
		go test -run '^$' -bench '^BenchmarkStoreBackends$' -benchtime 1x -timeout 60m ./mediator | tee -a "$GOBENCH"
}

GOBENCH=$OUT/go-bench.txt
: >"$GOBENCH"
if [ "${BENCH_SKIP_GO:-}" != 1 ]; then
	pkgs=$(grep -rl --include='*_test.go' '^func Benchmark' . | xargs -r -n1 dirname | sort -u)
	for p in $pkgs; do
		echo "== go benchmarks in $p"
		go test -run '^$' -bench . -skip '^BenchmarkStoreBackends$' -benchtime 1x -timeout 30m "$p" | tee -a "$GOBENCH"
	done
	store_backends_bench
fi

# Part 3: how the client's costs grow with the vault (replicate's
# TestScaleReport: vaults generated through the index API, one row per size
# and the growth from the first). BENCH_SCALE picks the sizes (default
# 10000,100000; add 1000000 for the issue's figure: about 10 minutes and
# 5 GB of scratch); BENCH_SKIP_SCALE=1 skips it.
SCALE=$OUT/scale.txt
: >"$SCALE"
scale_report() {
	echo "== scale report: ${BENCH_SCALE:-10000,100000} files"
	TMPDIR=$OUT FINCRYPT_SCALE=${BENCH_SCALE:-10000,100000} go test -count=1 -v -run '^TestScaleReport$' -timeout 60m ./replicate/ |
		grep '^scale' | tee -a "$SCALE" || echo "the scale report failed (run it alone: FINCRYPT_SCALE=... go test -v -run TestScaleReport ./replicate/)"
}
if [ "${BENCH_SKIP_SCALE:-}" != 1 ]; then scale_report; fi

echo
echo "Fincrypt benchmark table ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores; ratio > 1 means Fincrypt is faster)"
awk -v rounds="$ROUNDS" '
	# median of the n values in a[1..n] (sorted here, in place)
	function median(a, n,   i, j, t) {
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	# ratio of fincrypt to target b in workload w: the median of the rounds ratios, and their range
	function ratio(w, b,   r, k, p, f, n, lo, hi, m) {
		n = 0
		for (r = 1; r <= maxr; r++) {
			p = v[b, w, r]; f = v["fincrypt", w, r]
			if (p == "" || f == "" || p <= 0 || f <= 0) continue
			k[++n] = (u[w] == "s") ? p / f : f / p
		}
		if (n == 0) return "-"
		m = median(k, n); lo = k[1]; hi = k[n]
		if (n == 1) return sprintf("%.2f", m)
		return sprintf("%.2f (%.2f-%.2f)", m, lo, hi)
	}
	function value(t, w,   r, k, n) {
		n = 0
		for (r = 1; r <= maxr; r++) if (v[t, w, r] != "") k[++n] = v[t, w, r]
		return n == 0 ? "-" : sprintf("%.2f", median(k, n))
	}
	{
		r = (NF >= 5) ? $5 : 1
		v[$1, $2, r] = $3; u[$2] = $4; if (r > maxr) maxr = r
		if ($1 == "base") hasbase = 1
		if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 }
	}
	END {
		if (n == 0) exit
		if (maxr > 1) printf "part 1: median of %d rounds; a ratio is the median of the rounds ratios (lowest-highest)\n", maxr
		printf "%-12s %-8s %12s %12s %18s %12s %18s", "workload", "unit", "plain dir", "fincrypt", "vs plain", "gocryptfs", "vs gocryptfs"
		if (hasbase) printf " %12s %18s", "base", "vs base"
		printf "\n"
		for (i = 1; i <= n; i++) {
			w = order[i]
			printf "%-12s %-8s %12s %12s %18s %12s %18s", w, u[w], value("plain", w), value("fincrypt", w), ratio(w, "plain"), value("gocryptfs", w), ratio(w, "gocryptfs")
			if (hasbase) printf " %12s %18s", value("base", w), ratio(w, "base")
			printf "\n"
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
if [ -s "$SCALE" ]; then
	echo
	echo "growth with the vault (mount, finding pending work, status, idle passes per minute, check):"
	cat "$SCALE"
fi
if [ -s "$OUT/backup-scale.txt" ]; then
	echo
	cat "$OUT/backup-scale.txt"
fi
