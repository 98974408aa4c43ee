#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/api-load.sh: the daemon's status API under load while it converts.
# Makes `fixture --preset mini --layers 2` (about 1.8 GB), starts
# `ckptconv serve` on 127.0.0.1 with a free port, and then:
#
#   1. unloaded: converts the fixture to native back to back for DURATION
#      seconds, nothing else running;
#   2. loaded: the same conversions back to back while wrk drives
#      GET /v1/jobs/<id> and GET /v1/jobs/<id>/tensors?limit=100 (alternating)
#      from 64 connections for DURATION seconds.
#
# Reports wrk's requests/s, latency p50/p99/max, errors (socket errors and
# non-2xx answers), the conversion throughput of both phases (GB/s of output
# tensor bytes per job, median, for jobs that ran entirely inside the
# phase) and their ratio, and the CPU seconds each party used in the loaded
# phase: wrk, the daemon's HTTP threads, its conversion workers, the rest.
# Then times pages of the per-tensor listing of a job with about 23,000
# tensors.  Prints figures only; never fails on time.
#
# Usage: bench/api-load.sh [DURATION]   (seconds, default 20)
# Environment: CKPTCONV (default build/ckptconv), BENCH_DIR (default
# /var/tmp), CONNECTIONS (default 64), WRK_THREADS (default 2), WORKERS,
# HTTP_THREADS, HTTP_NICE (the daemon's options; default its own).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CKPTCONV=${CKPTCONV:-$REPO/build/ckptconv}
DURATION=${1:-20}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

for tool in wrk curl "$PY"; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done
[ -x "$CKPTCONV" ] || { echo "bench: no ckptconv at $CKPTCONV (build it, or set CKPTCONV)" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ckptconv-api-load.XXXXXX")
DAEMON_PID=
LOOP_PID=
cleanup() {
	[ -n "$LOOP_PID" ] && kill "$LOOP_PID" 2>/dev/null || true
	if [ -n "$DAEMON_PID" ]; then
		kill -TERM "$DAEMON_PID" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$DAEMON_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

echo "bench: making the fixture (fixture --preset mini --layers 2) in $WORK"
"$CKPTCONV" fixture --preset mini --layers 2 "$WORK/data/src" >/dev/null
cat "$WORK"/data/src/*.safetensors >/dev/null   # warm the page cache

args=(serve --listen 127.0.0.1:0 --state-dir "$WORK/state" --allow-root "$WORK/data" --max-running 1
	--job-retention 1h)
[ -n "${WORKERS:-}" ] && args+=(--workers "$WORKERS")
[ -n "${HTTP_THREADS:-}" ] && args+=(--http-threads "$HTTP_THREADS")
[ -n "${HTTP_NICE:-}" ] && args+=(--http-nice "$HTTP_NICE")
"$CKPTCONV" "${args[@]}" 2>"$WORK/daemon.log" &
DAEMON_PID=$!
PORT=
for _ in $(seq 100); do
	PORT=$(grep -m1 -o '"port":[0-9]*' "$WORK/daemon.log" 2>/dev/null | cut -d: -f2 || true)
	[ -n "$PORT" ] && break
	sleep 0.1
done
[ -n "$PORT" ] || { echo "bench: the daemon did not start" >&2; cat "$WORK/daemon.log" >&2; exit 1; }
BASE="http://127.0.0.1:$PORT"

# submit DEST: POSTs a conversion of the fixture; prints the job id.
submit() {
	curl -sf -X POST -H 'Content-Type: application/json' --data-binary \
		"{\"source\": \"$WORK/data/src\", \"destination\": \"$WORK/data/$1\", \"to\": \"native\", \"options\": {\"overwrite\": true}}" \
		"$BASE/v1/jobs" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

# wait_done ID: polls until the job is finished.
wait_done() {
	local state
	[ -n "$1" ] || return 0
	for _ in $(seq 3000); do
		state=$(curl -sf "$BASE/v1/jobs/$1" | grep -o '"state":"[a-z]*"' | head -1 | cut -d'"' -f4) || true
		case "$state" in succeeded | failed | cancelled) return 0 ;; esac
		sleep 0.2
	done
}

# convert_loop: conversions back to back until killed, alternating two
# destinations; appends each job id to $WORK/jobs.<phase>.
convert_loop() {
	local phase=$1 n=0 id
	exec 2>/dev/null
	while :; do
		id=$(submit "out-$((n % 2))")
		echo "$id" >>"$WORK/jobs.$phase"
		wait_done "$id"
		n=$((n + 1))
	done
}

# jobs_in_window PHASE T0 T1: median GB/s of the phase's jobs that started
# and finished inside [T0, T1] (Unix seconds), and how many there were.
throughput() {
	local phase=$1 t0=$2 t1=$3 id
	: >"$WORK/records.$phase"
	while read -r id; do
		curl -sf "$BASE/v1/jobs/$id" >>"$WORK/records.$phase" && echo >>"$WORK/records.$phase"
	done <"$WORK/jobs.$phase"
	"$PY" - "$WORK/records.$phase" "$t0" "$t1" <<'PYEOF'
import datetime, json, statistics, sys
t0, t1 = float(sys.argv[2]), float(sys.argv[3])
def ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
rates = []
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    j = json.loads(line)
    if j["state"] != "succeeded" or not j["started_at"] or not j["finished_at"]:
        continue
    a, b = ts(j["started_at"]), ts(j["finished_at"])
    if a >= t0 and b <= t1 and b > a:
        rates.append(j["progress"]["bytes_total"] / (b - a) / 1e9)
print(f"{statistics.median(rates):.3f} {len(rates)}" if rates else "nan 0")
PYEOF
}

# cpu_snapshot FILE: CPU seconds of the daemon's threads by role.
cpu_snapshot() {
	"$PY" - "$DAEMON_PID" >"$1" <<'PYEOF'
import os, sys
pid = sys.argv[1]
tick = os.sysconf("SC_CLK_TCK")
roles = {"workers": 0.0, "runner": 0.0, "other": 0.0}
for tid in os.listdir(f"/proc/{pid}/task"):
    try:
        comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    secs = (int(fields[11]) + int(fields[12])) / tick
    role = "workers" if comm.startswith("ckptconv-w") else "runner" if comm == "ckptconv-job" else "other"
    roles[role] += secs
# Threads that ended still count in the process total.
fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
total = (int(fields[11]) + int(fields[12])) / tick
print(total, roles["workers"], roles["runner"])
PYEOF
}

# ---- phase 1: no load ----------------------------------------------------------
echo "bench: phase 1: conversions back to back, no HTTP load, ${DURATION} s"
: >"$WORK/jobs.unloaded"
T0=$(date +%s.%N)
convert_loop unloaded &
LOOP_PID=$!
sleep "$DURATION"
# Let the job in progress finish so the phase has whole jobs.
wait_done "$(tail -1 "$WORK/jobs.unloaded")"
T1=$(date +%s.%N)
kill "$LOOP_PID" 2>/dev/null || true
wait "$LOOP_PID" 2>/dev/null || true
LOOP_PID=
read -r UNLOADED UNLOADED_N <<<"$(throughput unloaded "$T0" "$T1")"

# ---- phase 2: the same under wrk -----------------------------------------------
FIRST=$(head -1 "$WORK/jobs.unloaded")
cat >"$WORK/load.lua" <<EOF
local paths = {"/v1/jobs/$FIRST", "/v1/jobs/$FIRST/tensors?limit=100"}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % 2) + 1])
end
local non2xx = 0
response = function(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %.3f %.3f %.3f %.3f %d %d %d %d %d %d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.status, e.timeout, non2xx))
end
EOF
echo "bench: phase 2: the same conversions while wrk drives the status API (${CONNECTIONS} connections, ${DURATION} s)"
: >"$WORK/jobs.loaded"
convert_loop loaded &
LOOP_PID=$!
sleep 1   # the first loaded job is under way
cpu_snapshot "$WORK/cpu.before"
T0=$(date +%s.%N)
/usr/bin/time -f "%U %S" -o "$WORK/wrk.cpu" \
	wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${DURATION}s" -s "$WORK/load.lua" "$BASE" >"$WORK/wrk.out" 2>&1
T1=$(date +%s.%N)
cpu_snapshot "$WORK/cpu.after"
kill "$LOOP_PID" 2>/dev/null || true
wait "$LOOP_PID" 2>/dev/null || true
LOOP_PID=
wait_done "$(tail -1 "$WORK/jobs.loaded")"
read -r LOADED LOADED_N <<<"$(throughput loaded "$T0" "$T1")"

# ---- a large per-tensor listing ----------------------------------------------------
# fixture --preset tiny --layers 1000 converted to native gives a native -> HF
# plan of about 23,000 output tensors (Ling-1T has 62,000): pages of the
# listing are timed with curl, each the median of 20 requests.
echo "bench: per-tensor listing of a job with many tensors"
"$CKPTCONV" fixture --preset tiny --layers 1000 "$WORK/data/wide-hf" >/dev/null
"$CKPTCONV" convert --no-fsync --to native "$WORK/data/wide-hf" "$WORK/data/wide-native" >/dev/null
WIDE=$(curl -sf -X POST -H 'Content-Type: application/json' --data-binary \
	"{\"source\": \"$WORK/data/wide-native\", \"destination\": \"$WORK/data/wide-out\", \"to\": \"hf\", \"options\": {\"dry_run\": true}}" \
	"$BASE/v1/jobs" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
: >"$WORK/listing.times"
for q in "limit=1000" "offset=20000&limit=1000" "state=pending&offset=15000&limit=100" "limit=10000"; do
	for _ in $(seq 20); do
		curl -sf -o "$WORK/listing.json" -w "%{time_total}\n" "$BASE/v1/jobs/$WIDE/tensors?$q"
	done | sort -n | sed -n '10p' | while read -r t; do echo "$q $t"; done >>"$WORK/listing.times"
done
WIDE_TOTAL=$(curl -sf "$BASE/v1/jobs/$WIDE/tensors?limit=1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["total"])')

# ---- report ---------------------------------------------------------------------
read -r REQS SECS P50 P99 PMAX E_CONN E_READ E_WRITE E_STATUS E_TIMEOUT NON2XX \
	<<<"$(grep '^RESULT ' "$WORK/wrk.out" | cut -d' ' -f2-)"
read -r CPU0 W0 R0 <"$WORK/cpu.before"
read -r CPU1 W1 R1 <"$WORK/cpu.after"
read -r WRK_U WRK_S <"$WORK/wrk.cpu"
"$PY" - <<PYEOF
reqs, secs = $REQS, $SECS
unloaded, loaded = float("$UNLOADED"), float("$LOADED")
workers = $W1 - $W0
runner = $R1 - $R0
daemon = $CPU1 - $CPU0
http = daemon - workers - runner
wrk = $WRK_U + $WRK_S
wall = $T1 - $T0
print()
print(f"status API under load ({$CONNECTIONS} connections, {secs:.1f} s, GET /v1/jobs/<id> and /tensors?limit=100)")
print(f"  requests/s        {reqs / secs:10.0f}   ({reqs} requests)")
print(f"  latency p50       {$P50:10.3f} ms")
print(f"  latency p99       {$P99:10.3f} ms")
print(f"  latency max       {$PMAX:10.3f} ms")
print(f"  errors            {$E_CONN + $E_READ + $E_WRITE + $E_TIMEOUT:10d} socket (connect $E_CONN, read $E_READ, write $E_WRITE, timeout $E_TIMEOUT), {$NON2XX} non-2xx")
print()
print("conversion of fixture mini --layers 2 to native, back to back (GB/s of output tensor bytes, median per job)")
print(f"  unloaded          {unloaded:10.3f}   ({$UNLOADED_N} jobs)")
print(f"  under API load    {loaded:10.3f}   ({$LOADED_N} jobs)")
if unloaded == unloaded and loaded == loaded and unloaded > 0:
    print(f"  loaded/unloaded   {loaded / unloaded:10.2f}   ({(1 - loaded / unloaded) * 100:.0f}% slower)")
print()
print(f"CPU seconds in the loaded phase ({wall:.1f} s wall, {wall * 2:.1f} CPU-seconds on 2 cores)")
print(f"  wrk               {wrk:10.1f}")
print(f"  daemon HTTP+main  {http:10.1f}")
print(f"  conversion        {workers + runner:10.1f}   (workers {workers:.1f}, job runner {runner:.1f})")
print()
print(f"per-tensor listing of a job with $WIDE_TOTAL tensors (median of 20, no other load)")
for line in open("$WORK/listing.times"):
    q, t = line.split()
    print(f"  {q:38s} {float(t) * 1000:8.2f} ms")
PYEOF
