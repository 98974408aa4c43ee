#!/bin/bash
# SPDX-License-Identifier: MIT
#
# fuzz.sh [SECONDS] [TARGET...]: builds the libFuzzer targets of tests/fuzz/
# with clang (configure --enable-fuzzing, in build-fuzz/ or
# $CKPTCONV_FUZZ_BUILD_DIR) and runs each for SECONDS (default 600), all
# targets or the ones named (fuzz_NAME.c -> NAME).  Each target starts from
# its seed corpus and regression inputs in tests/fuzz/corpus/NAME/ (read
# only) and the inputs earlier runs found in BUILD_DIR/fuzz-corpus/NAME/
# (where new ones go), with the libFuzzer options its source states, one
# input at most 10 s and 2 GB of memory.  A crash, a sanitizer report, a
# leak, a hang or a broken property fails the target; the input that did it
# is saved in BUILD_DIR/fuzz-artifacts/NAME/ and printed.  Ends with one
# line "fuzz: N passed, N failed"; exits non-zero when a target failed.

set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
SECONDS_PER_TARGET=${1:-600}
shift $(($# > 0 ? 1 : 0))
BUILD_DIR=${CKPTCONV_FUZZ_BUILD_DIR:-build-fuzz}
case "$SECONDS_PER_TARGET" in
'' | *[!0-9]*)
	echo "usage: fuzz.sh [SECONDS] [TARGET...]" >&2
	exit 2
	;;
esac

TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
	for src in tests/fuzz/fuzz_*.c; do
		name=${src#tests/fuzz/fuzz_}
		TARGETS+=("${name%.c}")
	done
fi

echo "=== fuzz: build in $BUILD_DIR (clang, --enable-fuzzing)"
if ! bash scripts/build.sh "$BUILD_DIR" --enable-fuzzing CC=clang; then
	echo "=== fuzz: build FAILED"
	echo "fuzz: 0 passed, ${#TARGETS[@]} failed"
	exit 1
fi

PASS=0
FAIL=0
export GOLDEN_DIR="$REPO/tests/golden"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

# stat NAME LOG: the figure libFuzzer's final statistics give for NAME.
stat() {
	sed -n "s/^stat::$1: *\([0-9]*\).*/\1/p" "$2" | tail -1
}

for name in "${TARGETS[@]}"; do
	src=tests/fuzz/fuzz_$name.c
	bin=$BUILD_DIR/tests/fuzz/fuzz_$name
	seeds=tests/fuzz/corpus/$name
	work=$BUILD_DIR/fuzz-corpus/$name
	artifacts=$BUILD_DIR/fuzz-artifacts/$name
	log=$BUILD_DIR/fuzz-$name.log
	if [ ! -f "$src" ] || [ ! -x "$bin" ] || [ ! -d "$seeds" ]; then
		echo "=== fuzz $name: FAILED: needs $src, $seeds/ and the program $bin" \
			"(listed in Makefile.am's FUZZ_TARGETS)"
		FAIL=$((FAIL + 1))
		continue
	fi
	# The options the target states: "libFuzzer options: -max_len=... -dict=...".
	read -r -a options <<<"$(sed -n 's/^ \* libFuzzer options: *//p' "$src")"
	mkdir -p "$work" "$artifacts"
	echo "=== fuzz $name: ${SECONDS_PER_TARGET} s, ${options[*]}"
	rc=0
	timeout --kill-after=10 $((SECONDS_PER_TARGET + 120)) \
		"$bin" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$artifacts/" "${options[@]}" \
		"$work" "$seeds" >"$log" 2>&1 || rc=$?
	runs=$(stat number_of_executed_units "$log")
	found=$(stat new_units_added "$log")
	corpus=$(ls "$work" | wc -l)
	if [ "$rc" -eq 0 ]; then
		PASS=$((PASS + 1))
		echo "=== fuzz $name: passed: ${runs:-?} executions, ${found:-0} new inputs" \
			"(BUILD_DIR corpus ${corpus})"
	else
		FAIL=$((FAIL + 1))
		echo "=== fuzz $name: FAILED (exit $rc) after ${runs:-?} executions; the end of $log:"
		tail -n 60 "$log"
		echo "=== fuzz $name: the inputs that failed, in $artifacts/:"
		ls -l "$artifacts"
		echo "=== fuzz $name: reproduce with GOLDEN_DIR=tests/golden $bin INPUT;" \
			"once fixed, add INPUT to $seeds/ as a regression input"
	fi
done

echo "fuzz: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
