#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/slow-clients.sh: figures for the daemon under hostile or greedy
# clients, all on 127.0.0.x.
#
#   1. 600 connections from 30 addresses (20 each) send one header line a
#      second for DURATION seconds (tests/trickle.py), against the default
#      limits (--max-connections 512, --max-connections-per-ip 64,
#      --request-timeout 10) with a health listener: the probes' failures
#      and latency (p50, max) on the health listener, and the failures of
#      /healthz on the main listener.
#   2. DRY_RUNS dry runs posted one after another, with --max-finished-jobs
#      0 (no limit) and with the default 1000: the daemon's RSS and peak
#      RSS, and the records and bytes in its state dir, along the way.
#
# Prints figures only; never fails on time.
#
# Usage: bench/slow-clients.sh [DURATION]   (seconds, default 20)
# Environment: CKPTCONV (default build/ckptconv), BENCH_DIR (default
# /var/tmp), DRY_RUNS (default 2000).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CKPTCONV=${CKPTCONV:-$REPO/build/ckptconv}
DURATION=${1:-20}
DRY_RUNS=${DRY_RUNS:-2000}
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
[ -x "$CKPTCONV" ] || { echo "bench: no ckptconv at $CKPTCONV (build it, or set CKPTCONV)" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ckptconv-slow-clients.XXXXXX")
DAEMON_PID=
cleanup() {
	stop_daemon
	rm -rf "$WORK"
}
trap cleanup EXIT

stop_daemon() {
	if [ -n "$DAEMON_PID" ]; then
		kill -TERM "$DAEMON_PID" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$DAEMON_PID" 2>/dev/null || true
		wait "$DAEMON_PID" 2>/dev/null || true
		DAEMON_PID=
	fi
}

# start_daemon ARGS...: a fresh state dir; PORT and HEALTH_PORT are set.
start_daemon() {
	rm -rf "$WORK/state"
	"$CKPTCONV" serve --listen 127.0.0.1:0 --state-dir "$WORK/state" --allow-root "$WORK/data" \
		"$@" 2>"$WORK/daemon.log" &
	DAEMON_PID=$!
	PORT=
	for _ in $(seq 150); do
		PORT=$(grep -m1 -o '"port":[0-9]*' "$WORK/daemon.log" | cut -d: -f2 || true)
		[ -n "$PORT" ] && break
		sleep 0.1
	done
	[ -n "$PORT" ] || { echo "bench: the daemon did not start" >&2; exit 1; }
	HEALTH_PORT=$(grep -m1 -o '"health_port":[0-9]*' "$WORK/daemon.log" | cut -d: -f2 || true)
}

mkdir -p "$WORK/data"
"$CKPTCONV" fixture --preset tiny "$WORK/data/src" >/dev/null

echo "== 1. 600 trickling connections from 30 addresses for ${DURATION} s (default limits)"
start_daemon --health-listen 127.0.0.1:0
read -r sent failed opened refused longest held main_sent main_failed p50 worst < <(
	"$PY" "$REPO/tests/trickle.py" "$PORT" 30 20 "$DURATION" "$HEALTH_PORT" 2>/dev/null)
echo "connections opened $opened (refused at once: $refused), longest life ${longest} s, most open ${held}"
echo "health listener: $failed of $sent probes failed; latency p50 ${p50} ms, max ${worst} ms"
echo "main listener:   $main_failed of $main_sent /healthz probes failed (2 s timeout)"
stop_daemon

echo "== 2. $DRY_RUNS dry runs, one after another"
body=$(printf '{"source": "%s", "destination": "%s", "to": "native", "options": {"dry_run": true}}' \
	"$WORK/data/src" "$WORK/data/out")
for limit in 0 1000; do
	start_daemon --max-finished-jobs "$limit"
	echo "--max-finished-jobs $limit:"
	printf '  %6s %10s %10s %8s %10s\n' "jobs" "RSS kB" "peak kB" "records" "state kB"
	for i in $(seq "$DRY_RUNS"); do
		curl -s -o /dev/null -H 'Content-Type: application/json' --data-binary "$body" \
			"http://127.0.0.1:$PORT/v1/jobs"
		if [ $((i % (DRY_RUNS / 4))) -eq 0 ]; then
			printf '  %6d %10s %10s %8d %10s\n' "$i" \
				"$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$DAEMON_PID/status")" \
				"$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$DAEMON_PID/status")" \
				"$(find "$WORK/state/jobs" -name '*.json' | wc -l)" \
				"$(du -sk "$WORK/state" | cut -f1)"
		fi
	done
	stop_daemon
done
