#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/plan.sh: how long planning takes for a checkpoint of Ling-1T's shape
# (80 layers, 256 experts, H 8192, I 2048: about 62,000 tensors and 2 TB),
# in both directions.  The checkpoints are written as headers only, in
# sparse files of the full size, so nothing but planning runs: `convert
# --dry-run` opens the source, validates every header, builds the plan and
# checks that its output converts back, then prints the plan and exits.
# Reports the median wall time of RUNS runs and the peak RSS of each
# direction; with CKPTCONV_BASE set, the same for that binary, and the ratio
# (what the checks added).  Prints figures only; never fails on time.
#
# Usage: bench/plan.sh [RUNS]   (default 5)
# Environment: CKPTCONV (default build/ckptconv), CKPTCONV_BASE (another
# build to compare with), BENCH_DIR (default /var/tmp; needs a filesystem
# with sparse files of 2 TB, such as ext4 or xfs).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CKPTCONV=${CKPTCONV:-$REPO/build/ckptconv}
BASE=${CKPTCONV_BASE:-}
RUNS=${1:-5}
TIME=/usr/bin/time

for tool in "$TIME" python3; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done
[ -x "$CKPTCONV" ] || { echo "bench: no ckptconv at $CKPTCONV (build it, or set CKPTCONV)" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ckptconv-bench-plan.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Sparse checkpoints of Ling-1T's shape, HF and native, headers only.
python3 "$REPO/bench/ling1t.py" "$WORK"

# plan BINARY TO SRC: median wall seconds of RUNS dry runs, and peak RSS (KB).
plan() {
	local bin=$1 to=$2 src=$3 i
	for i in $(seq "$RUNS"); do
		"$TIME" -f '%e %M' -o "$WORK/time" "$bin" convert --dry-run --to "$to" "$src" "$WORK/out" >/dev/null 2>&1
		cat "$WORK/time"
	done | sort -n | awk -v n="$RUNS" '{ t[NR] = $1; if ($2 > m) m = $2 }
		END { printf "%.2f %d\n", t[int((n + 1) / 2)], m }'
}

printf '%-22s %-10s %10s %14s\n' binary direction "median s" "peak RSS MB"
for to in native hf; do
	src=$WORK/hf
	[ "$to" = hf ] && src=$WORK/native
	read -r t m < <(plan "$CKPTCONV" "$to" "$src")
	printf '%-22s %-10s %10s %14d\n' ckptconv "to $to" "$t" $((m / 1024))
	if [ -n "$BASE" ]; then
		read -r bt bm < <(plan "$BASE" "$to" "$src")
		printf '%-22s %-10s %10s %14d\n' base "to $to" "$bt" $((bm / 1024))
		awk -v a="$t" -v b="$bt" 'BEGIN { if (b > 0) printf "%-22s %-10s %10.2f\n", "ratio", "", a / b }'
	fi
done
