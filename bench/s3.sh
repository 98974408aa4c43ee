#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/s3.sh: converting through an object store against what a user
# would otherwise script.  Puts `fixture --preset mini --layers 2` (about
# 1.8 GB) into the s3rver test server on 127.0.0.1 and times, alternated,
# the median of several runs of:
#
#   baseline   aws s3 cp --recursive down to local disk, then back up to
#              another prefix (the AWS CLI's defaults: 10 threads, 8 MiB
#              parts) -- moving the bytes twice without converting them
#   ckptconv   convert --to native s3://... s3://... (parallel ranged GETs,
#              64 MiB multipart uploads, nothing stored locally)
#
# with wall seconds, GB/s of checkpoint bytes and peak RSS (/usr/bin/time
# -v, the whole process tree for the baseline's two commands: the larger of
# the two), and ckptconv's ratio to the baseline (< 1.0: faster).  The
# server runs on the same machine and competes for its cores with both.
# Prints a table; never fails on time.
#
# Usage: bench/s3.sh [RUNS]   (default 3)
# Environment: CKPTCONV (default build/ckptconv), BENCH_DIR (default
# /var/tmp), CKPTCONV_NPM_DIR (where s3rver is installed).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/lib.sh"
CKPTCONV=${CKPTCONV:-$REPO/build/ckptconv}
RUNS=${1:-3}
TIME=/usr/bin/time
AWS=/usr/bin/aws
NPM_DIR=${CKPTCONV_NPM_DIR:-/var/cache/ckptconv-test-npm}
S3RVER=$(command -v s3rver || echo "$NPM_DIR/node_modules/.bin/s3rver")

for tool in "$CKPTCONV" "$TIME" "$AWS" "$S3RVER"; do
	if [ ! -x "$tool" ]; then
		echo "bench: $tool is missing (build ckptconv; scripts/install-deps.sh test)" >&2
		exit 1
	fi
done

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ckptconv-bench-s3.XXXXXX")
SERVER_PID=
cleanup() {
	if [ -n "$SERVER_PID" ]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/s3"
NODE_OPTIONS=--openssl-legacy-provider "$S3RVER" --directory "$WORK/s3" --address 127.0.0.1 \
	--port 0 --configure-bucket bench >"$WORK/s3rver.log" 2>&1 &
SERVER_PID=$!
PORT=
for _ in $(seq 1 100); do
	PORT=$(grep -o "listening on 127.0.0.1:[0-9]*" "$WORK/s3rver.log" | head -1 | cut -d: -f2 || true)
	[ -n "$PORT" ] && break
	sleep 0.1
done
if [ -z "$PORT" ]; then
	echo "bench: s3rver did not start: $(tail -3 "$WORK/s3rver.log")" >&2
	exit 1
fi

export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$PORT
export AWS_CONFIG_FILE=$WORK/aws-config AWS_SHARED_CREDENTIALS_FILE=$WORK/aws-credentials
: >"$AWS_CONFIG_FILE"
: >"$AWS_SHARED_CREDENTIALS_FILE"
unset AWS_ENDPOINT_URL AWS_SESSION_TOKEN CKPTCONV_S3_ADDRESSING_STYLE

s3() {
	"$AWS" --endpoint-url "http://127.0.0.1:$PORT" "$@"
}

echo "bench: making fixture --preset mini --layers 2 and putting it in the store" >&2
"$CKPTCONV" fixture --preset mini --layers 2 "$WORK/src" >/dev/null
s3 s3 cp --recursive --only-show-errors "$WORK/src" s3://bench/src/
BYTES=$(du -sb "$WORK/src" | cut -f1)
rm -rf "$WORK/src"

# Removes every object under a prefix (the server's files, directly: the
# CLI's recursive delete of thousands of parts would dominate the run).
clear_prefix() {
	s3 s3 rm --recursive --only-show-errors "s3://bench/$1" >/dev/null 2>&1 || true
}

# timed OUT CMD...: runs CMD under /usr/bin/time -v, appending
# "seconds rss_kib" to OUT.
timed() {
	local out=$1 start end rss
	shift
	start=$(date +%s.%N)
	"$TIME" -v -o "$WORK/time.txt" "$@" >/dev/null 2>"$WORK/cmd.err" || {
		echo "bench: failed: $* : $(tail -3 "$WORK/cmd.err")" >&2
		exit 1
	}
	end=$(date +%s.%N)
	rss=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$WORK/time.txt")
	echo "$(calc "$end - $start") $rss" >>"$out"
}

baseline_once() {
	local t0 t1 t2 r1 r2
	rm -rf "$WORK/down"
	clear_prefix baseline/
	t0=$(date +%s.%N)
	"$TIME" -v -o "$WORK/t1.txt" "$AWS" --endpoint-url "http://127.0.0.1:$PORT" s3 cp \
		--recursive --only-show-errors s3://bench/src/ "$WORK/down" >/dev/null
	t1=$(date +%s.%N)
	"$TIME" -v -o "$WORK/t2.txt" "$AWS" --endpoint-url "http://127.0.0.1:$PORT" s3 cp \
		--recursive --only-show-errors "$WORK/down" s3://bench/baseline/ >/dev/null
	t2=$(date +%s.%N)
	r1=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$WORK/t1.txt")
	r2=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$WORK/t2.txt")
	echo "$(calc "$t2 - $t0") $((r1 > r2 ? r1 : r2))" >>"$WORK/baseline.txt"
	rm -rf "$WORK/down"
}

ckptconv_once() {
	clear_prefix native/
	timed "$WORK/ckptconv.txt" "$CKPTCONV" convert --to native s3://bench/src/ s3://bench/native/
}

: >"$WORK/baseline.txt"
: >"$WORK/ckptconv.txt"
for i in $(seq 1 "$RUNS"); do
	echo "bench: run $i of $RUNS" >&2
	baseline_once
	ckptconv_once
done

b_sec=$(cut -d' ' -f1 "$WORK/baseline.txt" | median)
b_rss=$(cut -d' ' -f2 "$WORK/baseline.txt" | median)
c_sec=$(cut -d' ' -f1 "$WORK/ckptconv.txt" | median)
c_rss=$(cut -d' ' -f2 "$WORK/ckptconv.txt" | median)
c_rss_max=$(cut -d' ' -f2 "$WORK/ckptconv.txt" | sort -n | tail -1)

printf '\nS3 benchmark: fixture --preset mini --layers 2, %.2f GB, s3rver on 127.0.0.1, %s runs, medians\n' \
	"$(calc "$BYTES / 1e9")" "$RUNS"
printf '%-48s %9s %8s %14s\n' "command" "seconds" "GB/s" "peak RSS MiB"
printf '%-48s %9.2f %8.3f %14.1f\n' "aws s3 cp --recursive down + up (baseline)" "$b_sec" \
	"$(calc "$BYTES / 1e9 / $b_sec")" "$(calc "$b_rss / 1024")"
printf '%-48s %9.2f %8.3f %14.1f\n' "ckptconv convert --to native s3:// s3://" "$c_sec" \
	"$(calc "$BYTES / 1e9 / $c_sec")" "$(calc "$c_rss / 1024")"
printf 'ratio ckptconv / baseline: %.2f (target < 1.0); ckptconv peak RSS over all runs: %.1f MiB (target <= 256)\n' \
	"$(calc "$c_sec / $b_sec")" "$(calc "$c_rss_max / 1024")"
