#!/usr/bin/env bash
# make demo: start a devnet (mediator, 5 storage nodes, btcd in simnet) in the
# background, create a demo vault against it, fund the vault's account, wait
# until the deposit is credited and mount it at ./Fincrypt.
# make demo-stop: unmount and stop the devnet.
# FINCRYPT_DEMO_PERIOD (a duration like 3s) shortens the devnet's period
# (the tests use it); FINCRYPT_DEMO_CAPACITY sets each node's capacity.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=$ROOT/bin/fincrypt
DEMO=$ROOT/.demo
HOME_DIR=$DEMO/home
NET=$DEMO/net
PIDFILE=$DEMO/devnet.pid
DEVNET_LOG=$DEMO/devnet.out
MNT=$ROOT/Fincrypt
PASSWORD=${FINCRYPT_DEMO_PASSWORD:-demo-password-change-me}
export FINCRYPT_BTCD=${FINCRYPT_BTCD:-$ROOT/tools/bin/btcd}

devnet_running() {
	[ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

stop() {
	if grep -qs " $MNT " /proc/self/mountinfo; then
		"$BIN" umount "$MNT" && echo "Unmounted $MNT."
	else
		echo "Nothing mounted at $MNT."
	fi
	if devnet_running; then
		pid=$(cat "$PIDFILE")
		kill -INT "$pid"
		for _ in $(seq 1 60); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "devnet (pid $pid) did not stop in 30s; killing it" >&2
			kill -KILL "$pid"
		fi
		echo "Stopped the devnet (its state stays in $NET; make demo resumes it)."
	else
		echo "No devnet running."
	fi
	rm -f "$PIDFILE"
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
mkdir -p "$DEMO"

# 1. The network.
if devnet_running; then
	echo "devnet already running (pid $(cat "$PIDFILE"))."
else
	rm -f "$NET/mediator.addr"
	args=(devnet --dir "$NET")
	[ -n "${FINCRYPT_DEMO_PERIOD:-}" ] && args+=(--period "$FINCRYPT_DEMO_PERIOD")
	[ -n "${FINCRYPT_DEMO_CAPACITY:-}" ] && args+=(--capacity "$FINCRYPT_DEMO_CAPACITY")
	nohup "$BIN" "${args[@]}" >>"$DEVNET_LOG" 2>&1 </dev/null &
	echo $! >"$PIDFILE"
	echo "Starting the devnet (pid $!; output in $DEVNET_LOG, logs in $NET/logs) ..."
fi
for _ in $(seq 1 240); do
	[ -s "$NET/mediator.addr" ] && break
	if ! devnet_running; then
		echo "demo: the devnet stopped; its last words:" >&2
		tail -n 20 "$DEVNET_LOG" >&2
		exit 1
	fi
	sleep 0.5
done
if [ ! -s "$NET/mediator.addr" ]; then
	echo "demo: the devnet did not write $NET/mediator.addr within 2 minutes; see $DEVNET_LOG" >&2
	exit 1
fi
MEDIATOR=$(cat "$NET/mediator.addr")
cat "$NET/summary.txt"

# 2. The vault, connected to the devnet's mediator.
export FINCRYPT_HOME=$HOME_DIR
export FINCRYPT_PASSWORD=$PASSWORD
if [ ! -e "$HOME_DIR/vault.json" ]; then
	"$BIN" init --mediator "$MEDIATOR"
fi

# 3. Escrow for the vault's account: 1 (devnet) BTC, once (the default of
# `fincrypt devnet fund`: it keeps 10 GiB of data for about 13 days).
if [ ! -e "$DEMO/funded" ]; then
	DEPOSIT=$("$BIN" wallet deposit-address --mediator "$MEDIATOR")
	TXID=$("$BIN" devnet fund --dir "$NET" --address "$DEPOSIT")
	echo "Funded the demo account's escrow: 1 BTC to $DEPOSIT (tx $TXID)."
	echo "$TXID" >"$DEMO/funded"
fi
# Mount only once the deposit is credited, so that nothing written is
# refused for want of escrow.
credited=
for _ in $(seq 1 120); do
	if BAL=$("$BIN" wallet balance --json --mediator "$MEDIATOR" 2>/dev/null) &&
		grep -q '"CanPlace": true' <<<"$BAL"; then
		credited=1
		break
	fi
	devnet_running || { echo "demo: the devnet stopped; see $DEVNET_LOG" >&2; exit 1; }
	sleep 1
done
if [ -z "$credited" ]; then
	echo "demo: the account's escrow does not allow placements after 2 minutes:" >&2
	"$BIN" wallet balance --mediator "$MEDIATOR" >&2 || true
	echo "(deposit more with: $BIN devnet fund --dir $NET --address \$($BIN wallet deposit-address))" >&2
	exit 1
fi
echo "The deposit is credited: $(printf '%s' "$BAL" | grep -o '"Escrow": [0-9]*' | grep -o '[0-9]*') sat in escrow."

# 4. Mount.
if grep -qs " $MNT " /proc/self/mountinfo; then
	echo "Already mounted at $MNT."
else
	"$BIN" mount "$MNT"
fi
STATUS_HINT="FINCRYPT_HOME=$HOME_DIR FINCRYPT_PASSWORD=$PASSWORD $BIN wallet balance --mediator $MEDIATOR"
if "$BIN" status --help >/dev/null 2>&1; then
	STATUS_HINT="FINCRYPT_HOME=$HOME_DIR FINCRYPT_PASSWORD=$PASSWORD $BIN status"
fi
cat <<MSG

Fincrypt demo
  vault home:  $HOME_DIR
  password:    $PASSWORD   (demo only: use your own for real data)
  mounted at:  $MNT
  network:     mediator $MEDIATOR, storage nodes and btcd (simnet) in $NET
$(sed 's/^/               /' "$NET/summary.txt")

Try:
  cp -r /etc/ssl $MNT/ && ls -l $MNT/ssl
  grep -r "BEGIN CERTIFICATE" $HOME_DIR $NET || echo "nothing readable on disk"
Watch (what the account pays per period, and how long its escrow lasts):
  watch -n2 $STATUS_HINT
  watch -n2 $BIN mediator status --dir $NET/mediator
  $BIN mediator ledger --dir $NET/mediator      (escrow, what each node earned)
  $BIN mediator payouts --dir $NET/mediator     (batched payouts, confirmations)
  tail -f $NET/logs/mediator.log
Stop:
  make demo-stop     (make demo again resumes the same network and vault)
MSG
