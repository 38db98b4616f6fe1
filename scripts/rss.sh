#!/usr/bin/env bash
# scripts/rss.sh: the mount's memory (RSS, sampled every half second) while
# writing one large file and while untarring many small files, in a local
# vault (no network), with the fincrypt binary a user runs.
#
# RSS_SIZE_MB (default 20480: 20 GiB) is the large file's size, written with
# dd (an AES-CTR stream, incompressible) in 1 MiB blocks and fsynced; RSS_FILES
# (default 100000) the small files (1-4 KiB, 1000 a directory, written by fsbench fill) packed into a
# tar beforehand and untarred into the mount, then synced. The large file
# needs RSS_SIZE_MB of free disk in RSS_DIR (the vault keeps every chunk
# locally without a network), and is deleted before the untar. RSS_DIR is the
# scratch directory (removed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${RSS_SIZE_MB:-20480}
FILES=${RSS_FILES:-100000}
OUT=${RSS_DIR:-$(mktemp -d /var/tmp/fincrypt-rss.XXXXXX)}
mkdir -p "$OUT/bin"
export FINCRYPT_PASSWORD=rss
go build -o "$OUT/bin/fincrypt" ./cmd/fincrypt
go build -o "$OUT/bin/fsbench" ./bench/fsbench
BIN=$OUT/bin/fincrypt
H=$OUT/home M=$OUT/mnt
cleanup() {
	grep -qs " $M " /proc/self/mountinfo && umount -l "$M" 2>/dev/null || true
	[ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null || true
	rm -rf "$H" "$M" "$OUT/src" "$OUT/files.tar"
}
trap cleanup EXIT
mkdir -p "$M"
"$BIN" --home "$H" init >/dev/null
"$BIN" --home "$H" mount "$M" >/dev/null
until ls "$M" >/dev/null 2>&1; do sleep 0.01; done
PID=$(cat "$H/mount.pid")
rss() { awk '/^VmRSS/{printf "%.0f", $2/1024}' "/proc/$PID/status"; }

# sample FILE: RSS in MB every half second into FILE until killed.
sample() { while :; do rss >>"$1"; echo >>"$1"; sleep 0.5; done; }
peak() { sort -n "$1" | tail -1; }

echo "rss: idle mount $(rss) MB"
: >"$OUT/write.rss"
sample "$OUT/write.rss" &
SAMPLER=$!
t0=$(date +%s.%N)
head -c $((SIZE_MB << 20)) /dev/zero | openssl enc -aes-128-ctr -pass pass:rss -nosalt -pbkdf2 2>/dev/null |
	dd of="$M/big" bs=1M iflag=fullblock conv=fsync status=none
t1=$(date +%s.%N)
kill "$SAMPLER"; SAMPLER=
echo "rss: writing ${SIZE_MB} MiB: peak $(peak "$OUT/write.rss") MB, after $(rss) MB, $(awk -v a="$t0" -v b="$t1" -v s="$SIZE_MB" 'BEGIN{printf "%.0f MB/s", s*1.048576/(b-a)}')"
rm "$M/big"
sync

mkdir -p "$OUT/src"
"$OUT/bin/fsbench" fill "$OUT/src" "$FILES" >/dev/null
tar -C "$OUT/src" -cf "$OUT/files.tar" .
rm -rf "$OUT/src"
: >"$OUT/untar.rss"
sample "$OUT/untar.rss" &
SAMPLER=$!
t0=$(date +%s.%N)
tar -C "$M" -xf "$OUT/files.tar"
sync -f "$M"
t1=$(date +%s.%N)
kill "$SAMPLER"; SAMPLER=
echo "rss: untarring ${FILES} files: peak $(peak "$OUT/untar.rss") MB, after $(rss) MB, $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f s", b-a}')"
"$BIN" umount "$M"
