#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test.sh: the whole test suite, from a fresh Debian 12 machine.  Installs
# the dependencies, then builds and runs `make check` twice: with warnings
# as errors (build-ci/), and with AddressSanitizer and UndefinedBehavior-
# Sanitizer (build-asan/); then runs every fuzz target for 20 s
# (scripts/fuzz.sh, in build-fuzz/).  Prints the logs of what failed and
# ends with one line "N passed, N failed, N skipped" over all of it, a fuzz
# target counting once; exits non-zero on any failure.

set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

export CKPTCONV_NPM_DIR=${CKPTCONV_NPM_DIR:-/var/cache/ckptconv-test-npm}
bash scripts/install-deps.sh test || {
	echo "test.sh: installing the dependencies failed"
	echo "0 passed, 1 failed"
	exit 1
}
export PATH="$CKPTCONV_NPM_DIR/node_modules/.bin:$PATH"

TOTAL_PASS=0
TOTAL_FAIL=0
TOTAL_SKIP=0
STATUS=0

# suite NAME BUILD_DIR CONFIGURE_FLAGS...: builds and runs make check,
# adding its automake summary to the totals.
suite() {
	local name=$1 dir=$2 log pass fail skip error xpass rc=0
	shift 2
	log="$REPO/$dir/check-output.txt"
	echo "=== $name: build in $dir ($*)"
	if ! bash scripts/build.sh "$dir" "$@"; then
		echo "=== $name: build FAILED"
		TOTAL_FAIL=$((TOTAL_FAIL + 1))
		STATUS=1
		return
	fi
	echo "=== $name: make check"
	mkdir -p "$dir"
	(cd "$dir" && make -j"$(nproc)" check) 2>&1 | tee "$log" || rc=$?
	pass=$(sed -n 's/^# PASS: *\([0-9]*\).*/\1/p' "$log" | tail -1)
	fail=$(sed -n 's/^# FAIL: *\([0-9]*\).*/\1/p' "$log" | tail -1)
	skip=$(sed -n 's/^# SKIP: *\([0-9]*\).*/\1/p' "$log" | tail -1)
	error=$(sed -n 's/^# ERROR: *\([0-9]*\).*/\1/p' "$log" | tail -1)
	xpass=$(sed -n 's/^# XPASS: *\([0-9]*\).*/\1/p' "$log" | tail -1)
	pass=${pass:-0}
	skip=${skip:-0}
	fail=$((${fail:-0} + ${error:-0} + ${xpass:-0}))
	if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
		# make check itself failed (e.g. a test program did not build).
		fail=1
	fi
	if [ "$fail" -ne 0 ]; then
		STATUS=1
		echo "=== $name: logs of what failed"
		if [ -f "$dir/test-suite.log" ]; then
			cat "$dir/test-suite.log"
		fi
	fi
	echo "=== $name: $pass passed, $fail failed, $skip skipped"
	TOTAL_PASS=$((TOTAL_PASS + pass))
	TOTAL_FAIL=$((TOTAL_FAIL + fail))
	TOTAL_SKIP=$((TOTAL_SKIP + skip))
}

# fuzz SECONDS: every libFuzzer target for SECONDS (scripts/fuzz.sh), one
# pass or fail each in the totals.
fuzz() {
	local log="$REPO/build-fuzz/fuzz-output.txt" pass fail rc=0
	echo "=== fuzzing: each target for $1 s"
	mkdir -p build-fuzz
	CKPTCONV_FUZZ_BUILD_DIR=build-fuzz bash scripts/fuzz.sh "$1" 2>&1 | tee "$log" || rc=$?
	pass=$(sed -n 's/^fuzz: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$log" | tail -1)
	fail=$(sed -n 's/^fuzz: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$log" | tail -1)
	pass=${pass:-0}
	fail=${fail:-0}
	if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
		fail=1
	fi
	[ "$fail" -eq 0 ] || STATUS=1
	echo "=== fuzzing: $pass passed, $fail failed"
	TOTAL_PASS=$((TOTAL_PASS + pass))
	TOTAL_FAIL=$((TOTAL_FAIL + fail))
}

suite "warnings as errors" build-ci --enable-werror
# Tests may read CKPTCONV_SANITIZERS: memory figures mean nothing under ASan.
CKPTCONV_SANITIZERS=1 suite "sanitizers" build-asan --enable-sanitizers --enable-werror
fuzz 20

echo "$TOTAL_PASS passed, $TOTAL_FAIL failed, $TOTAL_SKIP skipped"
exit "$STATUS"
