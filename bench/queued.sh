#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/queued.sh: what a queued job costs the daemon.  A job keeps the
# plan its submission made until a runner takes it, so memory grows with
# the queue, which --max-queued bounds.  Writes a checkpoint of Ling-1T's
# shape as sparse headers (bench/ling1t.py, about 62,000 tensors), starts
# `ckptconv serve` on 127.0.0.1 with one runner held by a throttled job,
# then submits JOBS conversions of that checkpoint to native, each queued.
# Reports the daemon's RSS before and after each submission and the
# seconds each took (planning: reading and checking every header), the
# descriptors it holds, and the RSS once the queued jobs are cancelled.
# With CKPTCONV_BASE set, the same for that binary.  Prints figures only.
#
# Usage: bench/queued.sh [JOBS]   (default 5)
# Environment: CKPTCONV (default build/ckptconv), CKPTCONV_BASE (another
# build to compare with), BENCH_DIR (default /var/tmp; sparse files of
# 2 TB, such as ext4 or xfs).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CKPTCONV=${CKPTCONV:-$REPO/build/ckptconv}
BASE=${CKPTCONV_BASE:-}
JOBS=${1:-5}
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

for tool in curl "$PY"; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done
[ -x "$CKPTCONV" ] || { echo "bench: no ckptconv at $CKPTCONV (build it, or set CKPTCONV)" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ckptconv-bench-queued.XXXXXX")
PID=
stop() {
	if [ -n "$PID" ]; then
		kill -9 "$PID" 2>/dev/null || true
		wait "$PID" 2>/dev/null || true
	fi
	PID=
}
trap 'stop; rm -rf "$WORK"' EXIT

"$PY" "$REPO/bench/ling1t.py" "$WORK" hf
"$CKPTCONV" fixture --preset tiny "$WORK/tiny" >/dev/null

rss_mb() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$PID/status"; }
fds() { ls "/proc/$PID/fd" | wc -l; }

# post SRC DST [OPTIONS]: submits a job; prints its id and the seconds the
# answer took.
post() {
	curl -s -o "$WORK/body" -w '%{time_total}' -H 'Content-Type: application/json' \
		--data-binary "{\"source\": \"$1\", \"destination\": \"$2\", \"to\": \"native\", \"options\": ${3:-{\}}}" \
		"$URL/v1/jobs" >"$WORK/time"
	printf '%s %s\n' "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/body")" \
		"$(cat "$WORK/time")"
}

# run NAME BINARY: one daemon, JOBS queued jobs, the figures.
run() {
	local name=$1 bin=$2 i id secs ids=() port
	rm -rf "$WORK/state" "$WORK/out"
	mkdir -p "$WORK/out"
	"$bin" serve --listen 127.0.0.1:0 --state-dir "$WORK/state" --allow-root "$WORK" \
		--max-running 1 --max-queued $((JOBS + 2)) 2>"$WORK/log" &
	PID=$!
	for i in $(seq 150); do
		port=$(grep -m1 -o '"port":[0-9]*' "$WORK/log" 2>/dev/null | grep -o '[0-9]*$' || true)
		[ -n "$port" ] && break
		sleep 0.1
	done
	[ -n "$port" ] || { echo "bench: the daemon did not start" >&2; tail -3 "$WORK/log" >&2; exit 1; }
	URL="http://127.0.0.1:$port"
	read -r id secs < <(post "$WORK/tiny" "$WORK/out/held" '{"max_bytes_per_second": "1KB"}')
	ids+=("$id")
	sleep 1
	printf '%s: runner held; RSS %s MB, %s descriptors\n' "$name" "$(rss_mb)" "$(fds)"
	printf '%-8s %14s %12s %12s\n' job "submit s" "RSS MB" descriptors
	for i in $(seq "$JOBS"); do
		read -r id secs < <(post "$WORK/hf" "$WORK/out/$i")
		ids+=("$id")
		printf '%-8s %14s %12s %12s\n' "$i" "$secs" "$(rss_mb)" "$(fds)"
	done
	for id in "${ids[@]}"; do
		curl -s -o /dev/null -X DELETE "$URL/v1/jobs/$id"
	done
	sleep 1
	printf '%s: queued jobs cancelled; RSS %s MB, %s descriptors\n\n' "$name" "$(rss_mb)" "$(fds)"
	stop
}

run ckptconv "$CKPTCONV"
[ -n "$BASE" ] && run base "$BASE"
exit 0
