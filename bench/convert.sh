#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/convert.sh: conversion speed and memory against copying the same
# bytes.  For `fixture --preset mini --layers 2` (about 1.8 GB) and then
# --layers 4 (memory must not grow with size), with the page cache warm and
# the commands alternated, it reports the median of several runs of:
#
#   cp -r --reflink=never      a plain user-space read+write copy of the source
#   cp -r                      GNU cp (copy_file_range: an in-kernel copy on ext4)
#   convert --no-fsync --to native, and --to hf back
#   cp -r --reflink=never + sync of the copied files   (durability at equal cost)
#   convert --to native, and --to hf (fsync before publishing, the default)
#
# with wall seconds, GB/s of source bytes, peak RSS (/usr/bin/time -v), and
# each conversion's ratio to its baselines (<= 1.0: not slower).  With
# CKPTCONV_BASE set (another build, e.g. of an earlier commit) the four
# conversions also run with that binary, each right next to its
# counterpart (which one goes first alternates from round to round), and a
# last column gives CKPTCONV's median over the base's.  Before every run
# the page cache is written back and dropped (/proc/sys/vm/drop_caches,
# where permitted) and the sources read back into it, so every command
# starts from the same state of memory: on a VM the cost of a write depends
# on whether the page cache recycles memory the run before used or must
# get it back from the host, which made a command's time depend on which
# command ran before it.  Prints a table; never fails on time.
#
# Needs: a build (scripts/build.sh), /usr/bin/time, room under BENCH_DIR
# for source, native and copy at once (15 GB at --layers 4), and root to
# drop the page cache (otherwise runs are not dropped, as the table says).
# Takes about 10 minutes on a 2-CPU VM with the defaults.
#
# Usage: bench/convert.sh [RUNS]   (RUNS >= 3, default 3)
# Environment: CKPTCONV (default build/ckptconv), CKPTCONV_BASE (default
# none), BENCH_DIR (default /var/tmp), BENCH_LAYERS (default "2 4"),
# BENCH_DROP (0: do not drop the page cache before each run; default 1,
# when /proc/sys/vm/drop_caches is writable).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/lib.sh"
CKPTCONV=${CKPTCONV:-$REPO/build/ckptconv}
CKPTCONV_BASE=${CKPTCONV_BASE:-}
RUNS=${1:-3}
LAYERS=${BENCH_LAYERS:-2 4}
TIME=/usr/bin/time

if [ "$RUNS" -lt 3 ]; then
	RUNS=3
fi
if [ ! -x "$CKPTCONV" ]; then
	echo "bench: no ckptconv at $CKPTCONV (build it, or set CKPTCONV)" >&2
	exit 1
fi
if [ -n "$CKPTCONV_BASE" ] && [ ! -x "$CKPTCONV_BASE" ]; then
	echo "bench: no ckptconv at CKPTCONV_BASE=$CKPTCONV_BASE" >&2
	exit 1
fi
if [ ! -x "$TIME" ]; then
	echo "bench: $TIME is missing (Debian package 'time')" >&2
	exit 1
fi

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ckptconv-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The commands, by name; each writes $WORK/dst from $WORK/src (HF) or
# $WORK/native (the HF source converted once, for --to hf).
COMMANDS=(cp_never cp to_native_nofsync to_hf_nofsync cp_never_sync to_native to_hf)
declare -A LABEL=(
	[cp_never]="cp -r --reflink=never"
	[cp]="cp -r"
	[to_native_nofsync]="convert --no-fsync --to native"
	[to_hf_nofsync]="convert --no-fsync --to hf"
	[cp_never_sync]="cp -r --reflink=never + sync"
	[to_native]="convert --to native (fsync)"
	[to_hf]="convert --to hf (fsync)"
)
# The conversions, whose base counterparts are base_NAME.
CONVERSIONS=(to_native_nofsync to_hf_nofsync to_native to_hf)
if [ -n "$CKPTCONV_BASE" ]; then
	for name in "${CONVERSIONS[@]}"; do
		LABEL[base_$name]="base: ${LABEL[$name]}"
	done
fi

# The commands of round RUN: with a base, each conversion next to its base
# counterpart, the base first in odd rounds and second in even ones.
round_commands() {
	local run=$1 name
	for name in "${COMMANDS[@]}"; do
		if [ -z "$CKPTCONV_BASE" ] || [ -z "${LABEL[base_$name]:-}" ]; then
			echo "$name"
		elif [ $((run % 2)) = 1 ]; then
			echo "base_$name"
			echo "$name"
		else
			echo "$name"
			echo "base_$name"
		fi
	done
}

run_command() {
	case "$1" in
	cp_never) cp -r --reflink=never "$WORK/src" "$WORK/dst" ;;
	cp) cp -r "$WORK/src" "$WORK/dst" ;;
	to_native_nofsync) "$CKPTCONV" convert --no-fsync --to native "$WORK/src" "$WORK/dst" ;;
	to_hf_nofsync) "$CKPTCONV" convert --no-fsync --to hf "$WORK/native" "$WORK/dst" ;;
	cp_never_sync) cp -r --reflink=never "$WORK/src" "$WORK/dst" && sync "$WORK/dst"/* "$WORK/dst" ;;
	to_native) "$CKPTCONV" convert --to native "$WORK/src" "$WORK/dst" ;;
	to_hf) "$CKPTCONV" convert --to hf "$WORK/native" "$WORK/dst" ;;
	base_*) CKPTCONV=$CKPTCONV_BASE run_command "${1#base_}" ;;
	esac
}

# Keeps the sources in the page cache.
warm() {
	cat "$WORK"/src/* "$WORK"/native/* >/dev/null
}

# time_once NAME: "seconds rss_kib" of one run, from a clean destination
# with no dirty pages left by the previous run (and with BENCH_DROP, no
# page cache but the sources').
time_once() {
	local start end rss
	rm -rf "$WORK/dst"
	drop_page_cache
	warm
	start=$EPOCHREALTIME
	"$TIME" -v -o "$WORK/time.txt" bash -c "$(declare -f run_command); WORK='$WORK' CKPTCONV='$CKPTCONV' CKPTCONV_BASE='$CKPTCONV_BASE'; run_command $1" \
		>/dev/null 2>"$WORK/stderr.txt" || {
		echo "bench: '${LABEL[$1]}' failed:" >&2
		cat "$WORK/stderr.txt" "$WORK/time.txt" >&2
		exit 1
	}
	end=$EPOCHREALTIME
	rss=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$WORK/time.txt")
	echo "$(calc "$end - $start") $rss"
}

bench_layers() {
	local layers=$1 bytes run name secs rss all
	declare -A times rsses med peak
	rm -rf "$WORK/src" "$WORK/native" "$WORK/dst"
	"$CKPTCONV" fixture --preset mini --layers "$layers" "$WORK/src" >/dev/null
	"$CKPTCONV" convert --no-fsync --to native "$WORK/src" "$WORK/native" >/dev/null 2>&1
	bytes=$(du -sb "$WORK/src" | cut -f1)
	all=$(round_commands 1)
	for name in $all; do
		times[$name]=""
		rsses[$name]=""
	done
	# Alternate: one run of every command per round.
	for run in $(seq "$RUNS"); do
		for name in $(round_commands "$run"); do
			read -r secs rss < <(time_once "$name")
			times[$name]+="$secs "
			rsses[$name]+="$rss "
		done
	done
	for name in $all; do
		med[$name]=$(tr ' ' '\n' <<<"${times[$name]}" | grep . | median)
		peak[$name]=$(tr ' ' '\n' <<<"${rsses[$name]}" | grep . | sort -n | tail -1)
	done

	printf '\nfixture --preset mini --layers %s: %.2f GB, %d runs each, median wall time\n' \
		"$layers" "$(calc "$bytes / 1e9")" "$RUNS"
	printf '%-40s %9s %8s %14s %12s %12s%s\n' "command" "wall s" "GB/s" "peak RSS MiB" \
		"/cp never" "/cp -r" "${CKPTCONV_BASE:+       /base}"
	for name in $all; do
		local ratio_never="" ratio_cp="" ratio_base=""
		if [ -n "$CKPTCONV_BASE" ] && [ -n "${LABEL[base_$name]:-}" ]; then
			ratio_base=$(printf ' %11.2f' "$(calc "${med[$name]} / ${med[base_$name]}")")
		fi
		case "${name#base_}" in
		to_native_nofsync | to_hf_nofsync)
			ratio_never=$(printf '%.2f' "$(calc "${med[$name]} / ${med[cp_never]}")")
			ratio_cp=$(printf '%.2f' "$(calc "${med[$name]} / ${med[cp]}")")
			;;
		to_native | to_hf)
			ratio_never=$(printf '%.2f' "$(calc "${med[$name]} / ${med[cp_never_sync]}")")
			ratio_cp="-"
			;;
		*)
			ratio_never="-"
			ratio_cp="-"
			;;
		esac
		printf '%-40s %9.3f %8.2f %14.1f %12s %12s%s\n' "${LABEL[$name]}" "${med[$name]}" \
			"$(calc "$bytes / ${med[$name]} / 1e9")" \
			"$(calc "${peak[$name]} / 1024")" "$ratio_never" "$ratio_cp" "$ratio_base"
	done
	echo "(fsyncing conversions are compared with cp --reflink=never + sync)"
	rm -rf "$WORK/src" "$WORK/native" "$WORK/dst"
}

echo "ckptconv $("$CKPTCONV" --version | cut -d' ' -f2) on $(nproc) CPUs, $(stat -f -c %T "$WORK") at $WORK, page cache $([ "$BENCH_DROP" = 1 ] && echo "dropped before each run" || echo "not dropped")"
if [ -n "$CKPTCONV_BASE" ]; then
	echo "base: $CKPTCONV_BASE ($("$CKPTCONV_BASE" --version | cut -d' ' -f2))"
fi
for layers in $LAYERS; do
	bench_layers "$layers"
done
