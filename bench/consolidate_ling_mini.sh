#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/consolidate_ling_mini.sh: consolidating a NeMo Automodel sharded
# checkpoint of Ling-mini-2.0's full size (all its layers, about 32 GB),
# against a plain conversion of the same HF checkpoint.  The sources are
# sparse fixtures (`fixture --preset ling-mini-2.0 --sparse`, and the same
# with `--sharded R`): every value zero, file holes, no disk; the outputs
# are real files.  Steps, each timed with /usr/bin/time -v:
#
#   convert --to hf      SHARDED  -> A   the consolidation; `verify HF A`
#   convert --to native  HF       -> B   a plain conversion of the HF fixture
#   convert --to native  SHARDED  -> C   consolidation and conversion in one
#                                        pass; `verify B C`
#
# B and C are on disk together only if the free space allows it (1.1 x
# the checkpoint size for C, and 20 GB to spare, once B is written); otherwise B is deleted before C is written and
# the script says that the native comparison was skipped.  Each output is
# deleted once compared.  Prints wall seconds, GB/s of checkpoint bytes and peak RSS
# (target: <= 256 MiB); never fails on time.
#
# Usage: bench/consolidate_ling_mini.sh [RANKS]  (default 8)
# Environment: CKPTCONV (default build/ckptconv), BENCH_DIR (default /var/tmp).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CKPTCONV=${CKPTCONV:-$REPO/build/ckptconv}
RANKS=${1:-8}
TIME=/usr/bin/time

[ -x "$CKPTCONV" ] || { echo "bench: no ckptconv at $CKPTCONV (build it, or set CKPTCONV)" >&2; exit 1; }
[ -x "$TIME" ] || { echo "bench: $TIME is missing (Debian package 'time')" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ckptconv-consolidate-mini.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "bench: fixture --preset ling-mini-2.0 --sparse, and --sharded $RANKS, in $WORK"
"$CKPTCONV" fixture --preset ling-mini-2.0 --sparse "$WORK/hf" >/dev/null
"$CKPTCONV" fixture --preset ling-mini-2.0 --sparse --sharded "$RANKS" "$WORK/src" >/dev/null
BYTES=$(du -sb --apparent-size "$WORK/src" | cut -f1)
avail=$(df -B1 --output=avail "$WORK" | tail -1)
printf 'bench: %.2f GB of shards, %.2f GB free\n' "$(echo "$BYTES / 1000000000" | bc -l)" \
	"$(echo "$avail / 1000000000" | bc -l)"
[ "$avail" -gt $((BYTES * 11 / 10)) ] ||
	{ echo "bench: not enough free space for one output" >&2; exit 1; }

declare -a NAMES SECS RSS
# timed NAME COMMAND...: runs it under /usr/bin/time -v, records the figures.
timed() {
	local name=$1 start end
	shift
	sync
	start=$(date +%s.%N)
	"$TIME" -v -o "$WORK/time.txt" "$@" >/dev/null
	end=$(date +%s.%N)
	NAMES+=("$name")
	SECS+=("$(echo "$end - $start" | bc)")
	RSS+=("$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$WORK/time.txt")")
}

timed "consolidate --to hf" "$CKPTCONV" convert --to hf "$WORK/src" "$WORK/A"
if "$CKPTCONV" verify "$WORK/hf" "$WORK/A" >/dev/null; then
	echo "bench: consolidation --to hf equals the HF fixture (verify)"
else
	echo "bench: consolidation --to hf DIFFERS from the HF fixture" >&2
	exit 1
fi
rm -rf "$WORK/A"
timed "plain HF --to native" "$CKPTCONV" convert --to native "$WORK/hf" "$WORK/B"
avail=$(df -B1 --output=avail "$WORK" | tail -1)
both=1
if [ "$avail" -lt $((BYTES * 11 / 10 + 20000000000)) ]; then  # 20 GB left for others
	both=0
	rm -rf "$WORK/B"
fi
timed "consolidate --to native" "$CKPTCONV" convert --to native "$WORK/src" "$WORK/C"
if [ $both = 1 ]; then
	if "$CKPTCONV" verify "$WORK/B" "$WORK/C" >/dev/null; then
		echo "bench: consolidation --to native equals the plain conversion (verify)"
	else
		echo "bench: consolidation --to native DIFFERS from the plain conversion" >&2
		exit 1
	fi
else
	echo "bench: not enough space for both native outputs: native comparison skipped"
fi
rm -rf "$WORK/B" "$WORK/C"

printf '\nLing-mini-2.0 sparse fixture over %s ranks, %.2f GB; one run each\n' "$RANKS" \
	"$(echo "$BYTES / 1000000000" | bc -l)"
printf '%-28s %9s %8s %12s\n' command seconds GB/s "peak RSS MiB"
for i in "${!NAMES[@]}"; do
	printf '%-28s %9.2f %8.2f %12.0f\n' "${NAMES[$i]}" "${SECS[$i]}" \
		"$(echo "$BYTES / ${SECS[$i]} / 1000000000" | bc -l)" "$(echo "${RSS[$i]} / 1024" | bc -l)"
done
