#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/scale.sh: conversion at the size of a real checkpoint, one that does
# not fit in the page cache.  The sources are Ling-mini-2.0 as published
# (`fixture --preset ling-mini-2.0 --mtp --sparse`: 15,596 tensors, 34 GB)
# and the native checkpoint a conversion of it plans (bench/sparse_native.py),
# both with their data as file holes, so reading them costs no disk and
# every figure is the cost of writing 34 GB of real output.  With the
# commands alternated, it reports the median of RUNS runs of:
#
#   cp -r --sparse=never --reflink=never   of the HF source, then of the native one
#   dd bs=4M of each file of the same source (a copy that reads every byte:
#     cp finds the holes with SEEK_DATA and writes their zeros unread, and
#     so does a conversion, so both do the same work; a read of a hole
#     costs the kernel a zeroed page of page cache, which dd pays)
#   convert --no-fsync --to native, and --to hf, each also with --io mmap
#     (mapped reads; the default reads bands with pread)
#   the same copies + sync of the copied files (durability at equal cost)
#   convert --to native, and --to hf (fsync before publishing, the default)
#
# each from the same state of memory: before every run the page cache is
# written back and dropped (/proc/sys/vm/drop_caches, where permitted), as
# on this 2-CPU VM the cost of a write depends on what the run before left
# (writing into memory the page cache recycles is cheaper than into memory
# freed to the hypervisor: the same cp of 34 GB took 14 s after one command
# and 33 s after another), with wall, user and system seconds, GB/s, peak RSS (/usr/bin/time), the
# peaks of the page cache's Dirty and Writeback (/proc/meminfo, sampled
# every 0.2 s during the run: machine-wide figures, so on a shared machine
# they include the others' writes), and each conversion's ratio to the
# copy of its own source (<= 1.0: not slower), to cp and to dd.  Then, when the disk has room for a
# second copy, cold reads of a real (not sparse) source: the output of a
# --to native run is kept, dropped from the page cache before each run
# (posix_fadvise DONTNEED on every file, after fsync; nothing machine-wide),
# and `cat SRC/* > /dev/null`, `cp -r --sparse=never --reflink=never` and
# `convert --no-fsync --to hf` are timed on it.  Last, planning Ling-1T
# with the MTP layer (60,026 tensors, sparse) with `convert --dry-run`, both
# directions: median wall seconds and peak RSS.  Prints figures only (and
# each run's wall time on standard error as it ends); never
# fails on time.
#
# Every run writes the full size (34 GB) for real; the output is removed
# before the next one, and everything under the work directory when the
# script ends.  It refuses to start without room for one output (two for
# the cold-read part, which is skipped otherwise).  With the defaults that
# is some 40 runs, 1.2 TB written, 30 to 70 minutes on a 2-CPU VM (more
# with BENCH_LOAD, whose loads write as much again); run it as root, or the
# page cache is not dropped between runs (the table says so).
#
# Usage: bench/scale.sh [RUNS]   (RUNS >= 3, default 3)
# Environment: CKPTCONV (default build/ckptconv), BENCH_DIR (default
# /var/tmp; a filesystem with sparse files), BENCH_PRESET (default
# ling-mini-2.0), BENCH_LAYERS (hidden layers; default: the preset's),
# BENCH_MTP (1, default: with the MTP layer; 0: without), BENCH_LOAD (N > 0:
# N competing loads over another sparse checkpoint of the same size during
# every timed run, the same for every command; default 0), BENCH_LOAD_KIND
# (cp, default: each load is a loop of `cp -r --sparse=never --reflink=never`
# of that checkpoint, writing it for real, as another job on the node would;
# cat: a loop of `cat` of its files, CPU and memory traffic without writes),
# BENCH_DROP (0: do not drop the page cache before each run; default 1, when
# /proc/sys/vm/drop_caches is writable), BENCH_THREADS (--threads for every conversion; default: ckptconv's, the
# CPUs available), BENCH_COLD (0: skip the cold reads), BENCH_PLAN (0: skip
# planning Ling-1T), BENCH_COMMANDS (the commands of the first table, a
# space-separated subset of: cp_hf dd_hf to_native_nofsync to_native_mmap
# cp_native dd_native to_hf_nofsync to_hf_mmap cp_hf_sync to_native
# cp_native_sync to_hf; default: all; a conversion's ratio is printed when
# its baseline is among them).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/lib.sh"
CKPTCONV=${CKPTCONV:-$REPO/build/ckptconv}
RUNS=${1:-3}
PRESET=${BENCH_PRESET:-ling-mini-2.0}
LAYERS=${BENCH_LAYERS:-}
MTP=${BENCH_MTP:-1}
LOAD=${BENCH_LOAD:-0}
LOAD_KIND=${BENCH_LOAD_KIND:-cp}
THREADS=${BENCH_THREADS:-}
COLD=${BENCH_COLD:-1}
PLAN=${BENCH_PLAN:-1}
TIME=/usr/bin/time

if [ "$RUNS" -lt 3 ]; then
	RUNS=3
fi
[ -x "$CKPTCONV" ] || { echo "bench: no ckptconv at $CKPTCONV (build it, or set CKPTCONV)" >&2; exit 1; }
[ -x "$TIME" ] || { echo "bench: $TIME is missing (Debian package 'time')" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench: python3 is missing" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ckptconv-bench-scale.XXXXXX")

# The competing load, when asked for: loops over another sparse checkpoint
# of the source's size, each in a process group of its own, running through
# every timed run alike: cp -r of it (reads, and writes as much as a run
# does), or cat of its files (no writes).
start_load() {
	local i
	for ((i = 0; i < LOAD; i++)); do
		if [ "$LOAD_KIND" = cat ]; then
			setsid bash -c 'while :; do cat "$1"/*.safetensors >/dev/null; done' load \
				"$WORK/load" &
		else
			setsid bash -c 'while :; do rm -rf "$2"; cp -r --sparse=never --reflink=never "$1" "$2"; done' \
				load "$WORK/load" "$WORK/load-copy-$i" &
		fi
		LOAD_PIDS+=($!)
	done
}
stop_load() {
	local pid
	for pid in "${LOAD_PIDS[@]}"; do
		kill -- "-$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	LOAD_PIDS=()
	rm -rf "$WORK"/load-copy-*
}
LOAD_PIDS=()
cleanup() {
	stop_load
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_bytes() {
	df --output=avail -B1 "$WORK" | tail -1 | tr -d ' '
}

# Sparse sources: the HF fixture, and the native checkpoint converting it
# would write, planned by a dry run.
fixture_args=(--preset "$PRESET" --sparse)
if [ "$MTP" = 1 ]; then fixture_args+=(--mtp); fi
if [ -n "$LAYERS" ]; then fixture_args+=(--layers "$LAYERS"); fi
"$CKPTCONV" fixture "${fixture_args[@]}" "$WORK/hf" >/dev/null
"$CKPTCONV" convert --dry-run --json --to native "$WORK/hf" "$WORK/unused" >"$WORK/plan.json" 2>/dev/null
python3 "$REPO/bench/sparse_native.py" "$WORK/plan.json" "$WORK/hf" "$WORK/native"
rm -f "$WORK/plan.json"
BYTES=$(du -sb --apparent-size "$WORK/hf" | cut -f1)
NTENSORS=$("$CKPTCONV" inspect --json "$WORK/hf" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tensors"])')

# Room for one output at a time (and a copy per cp load), plus 2 GiB.
NEED=$((BYTES + (2 << 30)))
if [ "$LOAD" -gt 0 ] && [ "$LOAD_KIND" = cp ]; then NEED=$((NEED + LOAD * BYTES)); fi
FREE=$(free_bytes)
if [ "$FREE" -lt "$NEED" ]; then
	echo "bench: $WORK has $((FREE >> 30)) GiB free; each run writes $((BYTES >> 30)) GiB (needs $((NEED >> 30)) GiB): not starting" >&2
	exit 1
fi

if [ "$LOAD" -gt 0 ]; then
	"$CKPTCONV" fixture "${fixture_args[@]}" --seed 1 "$WORK/load" >/dev/null
fi

ALL_COMMANDS=(cp_hf dd_hf to_native_nofsync to_native_mmap cp_native dd_native to_hf_nofsync
	to_hf_mmap cp_hf_sync to_native cp_native_sync to_hf)
COMMANDS=("${ALL_COMMANDS[@]}")
if [ -n "${BENCH_COMMANDS:-}" ]; then
	read -r -a COMMANDS <<<"$BENCH_COMMANDS"
	for name in "${COMMANDS[@]}"; do
		[[ " ${ALL_COMMANDS[*]} " == *" $name "* ]] ||
			{ echo "bench: BENCH_COMMANDS: no command '$name'" >&2; exit 1; }
	done
fi
declare -A LABEL=(
	[cp_hf]="cp -r (HF source)"
	[cp_native]="cp -r (native source)"
	[dd_hf]="dd bs=4M (HF source)"
	[dd_native]="dd bs=4M (native source)"
	[to_native_nofsync]="convert --no-fsync --to native"
	[to_hf_nofsync]="convert --no-fsync --to hf"
	[to_native_mmap]="  the same, --io mmap"
	[to_hf_mmap]="  the same, --io mmap"
	[cp_hf_sync]="cp -r + sync (HF source)"
	[cp_native_sync]="cp -r + sync (native source)"
	[to_native]="convert --to native (fsync)"
	[to_hf]="convert --to hf (fsync)"
	[cold_cat]="cat SRC/* > /dev/null"
	[cold_cp]="cp -r"
	[cold_to_hf]="convert --no-fsync --to hf"
)
# The baseline each conversion is compared with.
declare -A BASELINE=(
	[to_native_nofsync]=cp_hf [to_hf_nofsync]=cp_native
	[to_native_mmap]=cp_hf [to_hf_mmap]=cp_native
	[to_native]=cp_hf_sync [to_hf]=cp_native_sync
	[cold_cp]=cold_cat [cold_to_hf]=cold_cp
)
# And the copy that reads every byte.
declare -A BASELINE_DD=([to_native_nofsync]=dd_hf [to_hf_nofsync]=dd_native
	[to_native_mmap]=dd_hf [to_hf_mmap]=dd_native)
CP="cp -r --sparse=never --reflink=never"
THREADS_ARG=
if [ -n "$THREADS" ]; then THREADS_ARG="--threads $THREADS"; fi

run_command() {
	case "$1" in
	cp_hf) $CP "$WORK/hf" "$WORK/dst" ;;
	cp_native) $CP "$WORK/native" "$WORK/dst" ;;
	dd_hf | dd_native)
		mkdir "$WORK/dst"
		for f in "$WORK/${1#dd_}"/*; do
			dd if="$f" of="$WORK/dst/${f##*/}" bs=4M status=none
		done
		;;
	cp_hf_sync) $CP "$WORK/hf" "$WORK/dst" && sync "$WORK/dst"/* "$WORK/dst" ;;
	cp_native_sync) $CP "$WORK/native" "$WORK/dst" && sync "$WORK/dst"/* "$WORK/dst" ;;
	to_native_nofsync) "$CKPTCONV" convert $THREADS_ARG --no-fsync --to native "$WORK/hf" "$WORK/dst" ;;
	to_hf_nofsync) "$CKPTCONV" convert $THREADS_ARG --no-fsync --to hf "$WORK/native" "$WORK/dst" ;;
	to_native_mmap) "$CKPTCONV" convert $THREADS_ARG --io mmap --no-fsync --to native "$WORK/hf" "$WORK/dst" ;;
	to_hf_mmap) "$CKPTCONV" convert $THREADS_ARG --io mmap --no-fsync --to hf "$WORK/native" "$WORK/dst" ;;
	to_native) "$CKPTCONV" convert $THREADS_ARG --to native "$WORK/hf" "$WORK/dst" ;;
	to_hf) "$CKPTCONV" convert $THREADS_ARG --to hf "$WORK/native" "$WORK/dst" ;;
	cold_cat) cat "$WORK"/real/* >/dev/null ;;
	cold_cp) $CP "$WORK/real" "$WORK/dst" ;;
	cold_to_hf) "$CKPTCONV" convert --no-fsync --to hf "$WORK/real" "$WORK/dst" ;;
	esac
}

# Peaks of Dirty and Writeback (kB) while PID runs, into FILE.
sample_meminfo() {
	local pid=$1 file=$2
	awk '/^(Dirty|Writeback):/ { print $1, $2 }' /proc/meminfo >"$file"
	while kill -0 "$pid" 2>/dev/null; do
		awk '/^(Dirty|Writeback):/ { print $1, $2 }' /proc/meminfo >>"$file"
		sleep 0.2
	done
}

# Drops every file of DIR from the page cache (after fsync: dirty pages
# are not dropped), for this directory only.
drop_cache() {
	python3 - "$1" <<'EOF'
import os, sys
for name in os.listdir(sys.argv[1]):
    fd = os.open(os.path.join(sys.argv[1], name), os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
EOF
}

# time_once NAME: "wall user sys rss_kib dirty_kib writeback_kib" of one
# run, from a clean destination with no dirty pages left by the previous run.
time_once() {
	local name=$1 start end pid sampler
	rm -rf "$WORK/dst"
	drop_page_cache
	case "$name" in cold_*) drop_cache "$WORK/real" ;; esac
	start=$EPOCHREALTIME
	"$TIME" -f '%U %S %M' -o "$WORK/time.txt" bash -c \
		"$(declare -f run_command); WORK='$WORK' CKPTCONV='$CKPTCONV' CP='$CP' THREADS_ARG='$THREADS_ARG'; run_command $name" \
		>/dev/null 2>"$WORK/stderr.txt" &
	pid=$!
	sample_meminfo "$pid" "$WORK/meminfo.txt" &
	sampler=$!
	if ! wait "$pid"; then
		echo "bench: '${LABEL[$name]}' failed:" >&2
		cat "$WORK/stderr.txt" "$WORK/time.txt" >&2
		exit 1
	fi
	end=$EPOCHREALTIME
	wait "$sampler" || true
	read -r user sys rss <"$WORK/time.txt"
	echo "$(calc "$end - $start") $user $sys $rss $(awk '
		$1 == "Dirty:" && $2 > d { d = $2 } $1 == "Writeback:" && $2 > w { w = $2 }
		END { print d + 0, w + 0 }' "$WORK/meminfo.txt")"
	rm -rf "$WORK/dst"
}

# bench_set TITLE BYTES NAME...: RUNS alternated rounds of the commands, then
# the table.
bench_set() {
	local title=$1 bytes=$2 name ratio ratio_dd base round
	shift 2
	local names=("$@")
	declare -A wall user sys rss dirty wb
	for name in "${names[@]}"; do
		wall[$name]="" user[$name]="" sys[$name]="" rss[$name]=0 dirty[$name]=0 wb[$name]=0
	done
	for round in $(seq "$RUNS"); do
		for name in "${names[@]}"; do
			time_once "$name" >"$WORK/result.txt"
			read -r w u s r d b <"$WORK/result.txt"
			echo "bench: round $round of $RUNS: ${LABEL[$name]}: $w s" >&2
			wall[$name]+="$w " user[$name]+="$u " sys[$name]+="$s "
			if [ "$r" -gt "${rss[$name]}" ]; then rss[$name]=$r; fi
			if [ "$d" -gt "${dirty[$name]}" ]; then dirty[$name]=$d; fi
			if [ "$b" -gt "${wb[$name]}" ]; then wb[$name]=$b; fi
		done
	done
	printf '\n%s: %.2f GB, %d runs each, medians (peaks over the runs)\n' "$title" \
		"$(calc "$bytes / 1e9")" "$RUNS"
	printf '%-32s %8s %8s %8s %7s %9s %9s %9s %6s %6s\n' "command" "wall s" "user s" "sys s" \
		"GB/s" "RSS MiB" "Dirty MiB" "Wback MiB" "/cp" "/dd"
	declare -A med
	for name in "${names[@]}"; do
		med[$name]=$(tr ' ' '\n' <<<"${wall[$name]}" | grep . | median)
	done
	for name in "${names[@]}"; do
		base=${BASELINE[$name]:-}
		ratio="-"
		if [ -n "$base" ] && [ -n "${med[$base]:-}" ]; then
			ratio=$(printf '%.2f' "$(calc "${med[$name]} / ${med[$base]}")")
		fi
		base=${BASELINE_DD[$name]:-}
		ratio_dd="-"
		if [ -n "$base" ] && [ -n "${med[$base]:-}" ]; then
			ratio_dd=$(printf '%.2f' "$(calc "${med[$name]} / ${med[$base]}")")
		fi
		printf '%-32s %8.2f %8.2f %8.2f %7.2f %9.1f %9.1f %9.1f %6s %6s\n' "${LABEL[$name]}" \
			"${med[$name]}" \
			"$(tr ' ' '\n' <<<"${user[$name]}" | grep . | median)" \
			"$(tr ' ' '\n' <<<"${sys[$name]}" | grep . | median)" \
			"$(calc "$bytes / ${med[$name]} / 1e9")" \
			"$(calc "${rss[$name]} / 1024")" "$(calc "${dirty[$name]} / 1024")" \
			"$(calc "${wb[$name]} / 1024")" "$ratio" "$ratio_dd"
	done
}

echo "ckptconv $("$CKPTCONV" --version | cut -d' ' -f2) on $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 }') GiB of memory, $(stat -f -c %T "$WORK") at $WORK"
echo "source: fixture ${fixture_args[*]}: $NTENSORS tensors, $((BYTES >> 20)) MiB, data as holes; competing load: $LOAD $LOAD_KIND loop(s); threads: ${THREADS:-default}; page cache dropped before each run: $([ "$BENCH_DROP" = 1 ] && echo yes || echo no)"

if [ "$LOAD" -gt 0 ]; then
	start_load
fi
bench_set "both directions" "$BYTES" "${COMMANDS[@]}"
echo "(/cp, /dd: to that copy of the same source; fsyncing conversions to cp + sync)"

if [ "$COLD" != 1 ]; then
	echo
	echo "cold reads: skipped (BENCH_COLD=$COLD)"
elif [ "$(free_bytes)" -lt $((2 * BYTES + (2 << 30))) ]; then
	echo
	echo "cold reads: skipped, $(($(free_bytes) >> 30)) GiB free and they need $(((2 * BYTES + (2 << 30)) >> 30)) GiB (a real source and an output)"
else
	# A real native source: the output of one conversion, data on disk.
	"$CKPTCONV" convert --to native "$WORK/hf" "$WORK/real" >/dev/null 2>&1
	bench_set "cold reads of a real native source (dropped from the page cache before each run)" \
		"$BYTES" cold_cat cold_cp cold_to_hf
	echo "(/cp column: cp to cat, the conversion to cp)"
	rm -rf "$WORK/real"
fi
stop_load

if [ "$PLAN" = 1 ]; then
	# Ling-1T with the MTP layer, HF and native, planned by dry runs.
	rm -rf "$WORK/hf" "$WORK/native" "$WORK/load"
	"$CKPTCONV" fixture --preset ling-1t --mtp --sparse "$WORK/1t" >/dev/null
	"$CKPTCONV" convert --dry-run --json --to native "$WORK/1t" "$WORK/unused" >"$WORK/plan.json" 2>/dev/null
	python3 "$REPO/bench/sparse_native.py" "$WORK/plan.json" "$WORK/1t" "$WORK/1t-native"
	rm -f "$WORK/plan.json"
	echo
	echo "planning Ling-1T with the MTP layer (60,026 tensors, $(($(du -sb --apparent-size "$WORK/1t" | cut -f1) / 1000000000)) GB sparse): convert --dry-run, $RUNS runs"
	printf '%-32s %8s %8s %9s\n' "direction" "wall s" "user s" "RSS MiB"
	for to in native hf; do
		src=$WORK/1t
		[ "$to" = hf ] && src=$WORK/1t-native
		for _ in $(seq "$RUNS"); do
			start=$EPOCHREALTIME
			"$TIME" -f '%U %M' -o "$WORK/time.txt" "$CKPTCONV" convert --dry-run --to "$to" \
				"$src" "$WORK/unused" >/dev/null 2>&1
			end=$EPOCHREALTIME
			echo "$(calc "$end - $start") $(cat "$WORK/time.txt")"
		done | sort -g | awk -v n="$RUNS" -v label="to $to" '
			{ t[NR] = $1; u[NR] = $2; if ($3 > m) m = $3 }
			END { i = int((n + 1) / 2); printf "%-32s %8.2f %8.2f %9.1f\n", label, t[i], u[i], m / 1024 }'
	done
fi
