#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/resume.sh: what `convert --resume` saves.  The mini fixture
# (`fixture --preset mini`, about 1.8 GB) converted native -> HF into
# 100 MB shards (19 files), alternating, RUNS times:
#
#   full     a clean run into an empty destination
#   resume   a run killed with SIGKILL once 80% of the shards (15 of 19)
#            are published, then `convert --resume` into it: timed is the
#            resume alone, which stats the 15 kept shards and reads their
#            headers (their identity is the one recorded when each was
#            published, so their data is not read again), and writes the
#            other 4
#
# Both with fsync before publishing (the default), the page cache warm.
# Prints the median seconds of each, and resume / full (the target is
# under 0.30).  Never fails on time.
#
# Usage: bench/resume.sh [RUNS]   (RUNS >= 3, default 3)
# Environment: CKPTCONV (default build/ckptconv), BENCH_DIR (default /var/tmp).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/lib.sh"
CKPTCONV=${CKPTCONV:-$REPO/build/ckptconv}
RUNS=${1:-3}
[ "$RUNS" -lt 3 ] && RUNS=3
if [ ! -x "$CKPTCONV" ]; then
	echo "bench: no ckptconv at $CKPTCONV (build it, or set CKPTCONV)" >&2
	exit 1
fi

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ckptconv-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CONVERT=("$CKPTCONV" convert --to hf --max-shard-size 100MB)
KILL_AT=15 # of 19 shards

"$CKPTCONV" fixture --preset mini "$WORK/hf" >/dev/null
"$CKPTCONV" convert --no-fsync --to native "$WORK/hf" "$WORK/src" >/dev/null 2>&1
rm -rf "$WORK/hf"

now() { date +%s.%N; }

full_run() {
	local t0
	rm -rf "$WORK/dst"
	sync # each timed run starts with no other writes queued
	t0=$(now)
	"${CONVERT[@]}" "$WORK/src" "$WORK/dst" >/dev/null 2>&1
	echo "$(now) - $t0" | bc
}

# Kills a run once KILL_AT shards are published, then times --resume.
resume_run() {
	local pid t0 n kept
	rm -rf "$WORK/dst"
	"${CONVERT[@]}" "$WORK/src" "$WORK/dst" >/dev/null 2>&1 &
	pid=$!
	while :; do
		n=$(ls "$WORK/dst" 2>/dev/null | grep -c '^model-.*-of-.*\.safetensors$' || true)
		[ "$n" -ge "$KILL_AT" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.02
	done
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	sync
	t0=$(now)
	"${CONVERT[@]}" --resume --json "$WORK/src" "$WORK/dst" >"$WORK/resume.json" 2>"$WORK/resume.err"
	echo "$(now) - $t0" | bc
	# Read after the clock stops: starting python takes a good part of a
	# resume's time.
	kept=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kept_files"])' \
		"$WORK/resume.json")
	echo "$kept ($(grep -c 'kept: checksum re-read' "$WORK/resume.err" || true) re-read)" \
		>>"$WORK/kept"
}

full_run >/dev/null # warm the page cache
: >"$WORK/full"
: >"$WORK/resume"
: >"$WORK/kept"
for i in $(seq "$RUNS"); do
	full_run >>"$WORK/full"
	resume_run >>"$WORK/resume"
done
FULL=$(median <"$WORK/full")
RESUME=$(median <"$WORK/resume")
printf 'bench/resume.sh: %s runs, native -> hf of the mini fixture, 100 MB shards (19)\n' "$RUNS"
printf '%-46s %8s s   (runs: %s)\n' "full run" "$FULL" "$(tr '\n' ' ' <"$WORK/full")"
printf '%-46s %8s s   (runs: %s)\n' "--resume after SIGKILL at $KILL_AT/19 shards" "$RESUME" \
	"$(tr '\n' ' ' <"$WORK/resume")"
printf '%-46s %s\n' "shards kept by each resume" "$(tr '\n' ' ' <"$WORK/kept")"
printf '%-46s %.2f\n' "resume / full (target < 0.30)" "$(echo "$RESUME / $FULL" | bc -l)"
