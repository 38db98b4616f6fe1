#!/usr/bin/env bash
# make demo: create a demo vault and mount it at ./Fincrypt.  make demo-stop: unmount.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=$ROOT/bin/fincrypt
DEMO=$ROOT/.demo
HOME_DIR=$DEMO/home
MNT=$ROOT/Fincrypt
PASSWORD=${FINCRYPT_DEMO_PASSWORD:-demo-password-change-me}

stop() {
	if grep -qs " $MNT " /proc/self/mountinfo; then
		"$BIN" umount "$MNT" && echo "Unmounted $MNT."
	else
		echo "Nothing mounted at $MNT."
	fi
}

if [ "${1:-}" = stop ]; then
	stop
	exit 0
fi

if [ ! -e /dev/fuse ]; then
	echo "demo: /dev/fuse is missing; FUSE is needed to mount (modprobe fuse, or run in a VM)" >&2
	exit 1
fi
if [ "$(id -u)" != 0 ] && ! command -v fusermount3 >/dev/null; then
	echo "demo: as a normal user, mounting needs fusermount3: sudo apt-get install fuse3" >&2
	exit 1
fi

export FINCRYPT_HOME=$HOME_DIR
export FINCRYPT_PASSWORD=$PASSWORD
if [ ! -e "$HOME_DIR/vault.json" ]; then
	mkdir -p "$DEMO"
	"$BIN" init
fi
if grep -qs " $MNT " /proc/self/mountinfo; then
	echo "Already mounted at $MNT."
else
	"$BIN" mount "$MNT"
fi
cat <<MSG

Fincrypt demo
  vault home:  $HOME_DIR
  password:    $PASSWORD   (demo only: use your own for real data)
  mounted at:  $MNT

Try:
  cp -r /etc/ssl $MNT/ && ls -l $MNT/ssl
  grep -r "BEGIN CERTIFICATE" $HOME_DIR || echo "nothing readable on disk"
  FINCRYPT_HOME=$HOME_DIR $BIN check     (after unmounting)
Stop:
  make demo-stop
MSG
