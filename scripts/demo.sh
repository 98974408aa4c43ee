#!/bin/bash
# SPDX-License-Identifier: MIT
#
# demo.sh: ckptconv's main job on a fresh Debian 12 machine.  Installs the
# build dependencies, builds, writes a synthetic Ling-mini-2.0-sized
# checkpoint (2 layers, 256 experts, about 1.8 GB) into a temporary
# directory, starts the daemon on 127.0.0.1 (a free port, a temporary state
# dir), submits a conversion to NeMo Automodel's native layout over the
# REST API, follows its progress tensor by tensor to the end, prints the
# finished job, verifies the output converts back to the original
# bit for bit, stops the daemon and removes the temporary files.

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${CKPTCONV_BUILD_DIR:-$REPO/build}
cd "$REPO"

bash scripts/install-deps.sh demo
bash scripts/build.sh "$BUILD_DIR"
CKPTCONV=$BUILD_DIR/ckptconv
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/ckptconv-demo.XXXXXX")
DAEMON_PID=
cleanup() {
	if [ -n "$DAEMON_PID" ]; then
		kill -TERM "$DAEMON_PID" 2>/dev/null || true
		wait "$DAEMON_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }
json_field() { "$PY" -c 'import json,sys; d=json.load(sys.stdin)
for k in sys.argv[1].split("."): d=d[k]
print(d)' "$1"; }

step "ckptconv fixture --preset mini --layers 2 $WORK/data/ling-mini"
mkdir -p "$WORK/data" "$WORK/state"
"$CKPTCONV" fixture --preset mini --layers 2 "$WORK/data/ling-mini"
"$CKPTCONV" inspect "$WORK/data/ling-mini"

step "ckptconv serve --listen 127.0.0.1:0 --allow-root $WORK/data"
"$CKPTCONV" serve --listen 127.0.0.1:0 --state-dir "$WORK/state" \
	--allow-root "$WORK/data" 2>"$WORK/daemon.log" &
DAEMON_PID=$!
PORT=
for _ in $(seq 100); do
	PORT=$(grep -m1 -o '"port":[0-9]*' "$WORK/daemon.log" 2>/dev/null | grep -o '[0-9]*$' || true)
	[ -n "$PORT" ] && break
	kill -0 "$DAEMON_PID" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$PORT" ]; then
	echo "demo: the daemon did not start:" >&2
	cat "$WORK/daemon.log" >&2
	exit 1
fi
BASE=http://127.0.0.1:$PORT
head -n 1 "$WORK/daemon.log"

step "POST $BASE/v1/jobs"
BODY=$(printf '{"source": "%s", "destination": "%s", "to": "native", "labels": {"demo": "ling-mini"}}' \
	"$WORK/data/ling-mini" "$WORK/data/ling-mini-native")
echo "$BODY"
JOB=$(curl -sS --fail-with-body -H 'Content-Type: application/json' -d "$BODY" "$BASE/v1/jobs")
ID=$(echo "$JOB" | json_field id)
echo "job $ID: $(echo "$JOB" | json_field state)"

step "GET $BASE/v1/jobs/$ID (progress, until the job ends)"
while :; do
	JOB=$(curl -sS --fail-with-body "$BASE/v1/jobs/$ID")
	echo "$JOB" | "$PY" -c 'import json,sys; j=json.load(sys.stdin); p=j["progress"]
print("%-9s tensors %5d/%-5d  %7.1f/%.1f MB  %5.1f%%  %6.1f MB/s  in flight: %s" % (
    j["state"], p["tensors_done"], p["tensors_total"], p["bytes_done"]/1e6, p["bytes_total"]/1e6,
    p["percent"], (p.get("bytes_per_second") or 0)/1e6, ", ".join(p.get("in_flight") or []) or "-"))'
	STATE=$(echo "$JOB" | json_field state)
	case "$STATE" in
	succeeded | failed | cancelled) break ;;
	esac
	sleep 0.5
done

step "the finished job"
echo "$JOB" | "$PY" -m json.tool
[ "$STATE" = succeeded ] || exit 1

step "first tensors of the job: GET $BASE/v1/jobs/$ID/tensors?limit=3"
curl -sS --fail-with-body "$BASE/v1/jobs/$ID/tensors?limit=3" | "$PY" -m json.tool

step "ckptconv verify: native -> HF gives back the original bit for bit"
"$CKPTCONV" convert --no-fsync --to hf "$WORK/data/ling-mini-native" "$WORK/hf-back"
"$CKPTCONV" verify "$WORK/data/ling-mini" "$WORK/hf-back"

step "done"
