#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/consolidate.sh: consolidating a NeMo Automodel sharded checkpoint.
# Makes `fixture --preset mini --layers L` (about 1.8 GB at 2 layers) and
# the same checkpoint sharded over R ranks as Automodel saves it
# (`fixture --sharded R`: every tensor cut on dim 0 as FSDP2 does, the
# router bias on one rank), checks once that `convert --to hf` of the
# sharded copy has the fixture's tensors, then alternates, RUNS times each:
#
#   cp -r --reflink=never      a plain read+write copy of the same shard bytes
#   ckptconv convert --to hf --no-fsync    the consolidation
#   ckptconv convert --to hf               the same, fsynced
#
# and prints the median wall seconds, GB/s of source bytes and the peak RSS
# (/usr/bin/time -v) of each.  Prints figures only; never fails on time.
#
# Usage: bench/consolidate.sh [RANKS] [LAYERS] [RUNS]  (default 8 2 3)
# Environment: CKPTCONV (default build/ckptconv), BENCH_DIR (default /var/tmp).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CKPTCONV=${CKPTCONV:-$REPO/build/ckptconv}
RANKS=${1:-8}
LAYERS=${2:-2}
RUNS=${3:-3}
TIME=/usr/bin/time

[ -x "$CKPTCONV" ] || { echo "bench: no ckptconv at $CKPTCONV (build it, or set CKPTCONV)" >&2; exit 1; }
[ -x "$TIME" ] || { echo "bench: $TIME is missing (Debian package 'time')" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ckptconv-consolidate.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "bench: fixture --preset mini --layers $LAYERS, sharded over $RANKS ranks, in $WORK"
"$CKPTCONV" fixture --preset mini --layers "$LAYERS" "$WORK/hf" >/dev/null
"$CKPTCONV" fixture --preset mini --layers "$LAYERS" --sharded "$RANKS" "$WORK/src" >/dev/null
"$CKPTCONV" convert --to hf --no-fsync "$WORK/src" "$WORK/check" >/dev/null
"$CKPTCONV" verify "$WORK/hf" "$WORK/check" >/dev/null ||
	{ echo "bench: the consolidation does not have the fixture's tensors" >&2; exit 1; }
rm -rf "$WORK/check" "$WORK/hf"
BYTES=$(du -sb "$WORK/src" | cut -f1)

run_command() {
	case $1 in
	cp) cp -r --reflink=never "$WORK/src" "$WORK/dst" ;;
	nofsync) "$CKPTCONV" convert --to hf --no-fsync "$WORK/src" "$WORK/dst" ;;
	fsync) "$CKPTCONV" convert --to hf "$WORK/src" "$WORK/dst" ;;
	esac
}

declare -A LABEL=([cp]="cp -r --reflink=never" [nofsync]="convert --to hf --no-fsync"
	[fsync]="convert --to hf")
declare -A TIMES RSS
for name in cp nofsync fsync; do TIMES[$name]=""; RSS[$name]=0; done
cat "$WORK"/src/*.safetensors >/dev/null   # warm the page cache
for run in $(seq "$RUNS"); do
	for name in cp nofsync fsync; do
		rm -rf "$WORK/dst"
		sync
		start=$(date +%s.%N)
		"$TIME" -v -o "$WORK/time.txt" bash -c "$(declare -f run_command); WORK='$WORK' CKPTCONV='$CKPTCONV'; run_command $name" >/dev/null
		end=$(date +%s.%N)
		TIMES[$name]+="$(echo "$end - $start" | bc) "
		rss=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$WORK/time.txt")
		[ "$rss" -gt "${RSS[$name]}" ] && RSS[$name]=$rss
	done
done
rm -rf "$WORK/dst"

printf '\n%s ranks, %.2f GB of shards, %d runs each, alternated; median wall time\n' \
	"$RANKS" "$(echo "$BYTES / 1000000000" | bc -l)" "$RUNS"
printf '%-28s %9s %8s %12s %10s\n' command seconds GB/s "peak RSS MiB" "/cp"
base=$(tr ' ' '\n' <<<"${TIMES[cp]}" | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
for name in cp nofsync fsync; do
	med=$(tr ' ' '\n' <<<"${TIMES[$name]}" | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
	printf '%-28s %9.2f %8.2f %12.0f %10.2f\n' "${LABEL[$name]}" "$med" \
		"$(echo "$BYTES / $med / 1000000000" | bc -l)" "$(echo "${RSS[$name]} / 1024" | bc -l)" \
		"$(echo "$med / $base" | bc -l)"
done
