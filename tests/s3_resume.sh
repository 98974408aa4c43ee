#!/bin/bash
# SPDX-License-Identifier: MIT
#
# s3_resume.sh: a daemon job writing into the S3 test server (s3rver on
# 127.0.0.1) is cut by kill -9 of the daemon once a few shards are
# uploaded; after a restart on the same state dir the job resumes
# (restarts 1) and the objects finished before the kill are not uploaded
# again: each has exactly one PUT in the server's request log; nor are they
# read back (no GET of a kept object: their ETags, asked with HeadObject,
# equal those the checksum record kept from the PUT answers).  The output
# then equals an uninterrupted local conversion's, records but the plan
# manifest (which names the source) included, the checksum record by its
# files, sizes and CRC-32C (the identities it holds are the objects' ETags).

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
. "$(dirname "$0")/s3_lib.sh"

need_binary
start_s3rver dst-bkt
# The daemon talks to the server through a front that logs every request.
start_s3_requests_log
ENDPOINT=$S3_FRONT
S3_OPTS="{\"endpoint_url\": \"$ENDPOINT\", \"region\": \"us-east-1\", \"addressing_style\": \"path\"}"
DST=s3://dst-bkt/resume/

# About 7.4 MB of tensors in shards of 1 MB: single PUTs, one per shard.
expect_ok "make the fixture" "$CKPTCONV" fixture --preset tiny --layers 40 --dtype f32 "$DATA/src" ||
	finish
expect_ok "uninterrupted local conversion" "$CKPTCONV" convert --no-fsync --to native \
	--max-shard-size 1MB "$DATA/src" "$TEST_TMP/ref"
NALL=$(ls "$TEST_TMP/ref" | grep -c '^model-.*\.safetensors$')

daemon_start --max-running 1 --allow-s3 "$DST" --allow-s3-endpoint "$ENDPOINT/"
submit "throttled job into S3" "$DATA/src" "$DST" native \
	"{\"max_shard_size\": \"1MB\", \"max_bytes_per_second\": \"384KB\", \"s3\": $S3_OPTS}"
M=$JOB
KILLED=no
for i in $(seq 600); do
	# One grep of the requests log per turn (a listing through the AWS
	# CLI takes seconds on a loaded machine): shards go up by single PUTs.
	if [ "$(grep -c '^PUT /dst-bkt/resume/model-.*\.safetensors 200$' "$S3_REQUESTS_LOG")" -ge 3 ]; then
		kill -9 "$DAEMON_PID"
		wait "$DAEMON_PID" 2>/dev/null || true
		KILLED=yes
		break
	fi
	sleep 0.1
done
assert_eq "killed once a few shards were uploaded" yes "$KILLED"
BEFORE=$(s3_keys "$DST" | grep '^model-.*\.safetensors$')
NBEFORE=$(echo "$BEFORE" | grep -c .)
if [ "$NBEFORE" -lt "$NALL" ]; then
	pass "$NBEFORE of $NALL shards were uploaded before the kill"
else
	fail "the kill came before the last shard" "$NBEFORE of $NALL"
fi

daemon_start --max-running 1 --allow-s3 "$DST" --allow-s3-endpoint "$ENDPOINT/"
api GET "/v1/jobs/$M"
assert_eq "the job is back, restart counted" 1 "$(jget restarts)"
expect_job "the resumed job succeeds" "$M" succeeded 300
api GET "/v1/jobs/$M"
KEPT=$(jget result.kept_files)
if [ "$KEPT" -ge 1 ] && [ "$KEPT" -le "$NBEFORE" ]; then
	pass "its result counts $KEPT shards kept"
else
	fail "its result counts the shards kept" "kept_files $KEPT, $NBEFORE uploaded before the kill"
fi
# s3rver logs every PutObject it stores as 'Stored object "KEY" in bucket
# "BUCKET" successfully'.  Each shard uploaded before the kill and
# recorded: one PUT in all.  (A shard uploaded just before the kill but
# not yet recorded goes again.)
puts_of() { grep -c "Stored object \"resume/$1\" in bucket \"dst-bkt\"" "$S3_LOG" || true; }
ONCE=0
for f in $BEFORE; do
	[ "$(puts_of "$f")" = 1 ] && ONCE=$((ONCE + 1))
done
assert_eq "the $KEPT kept shards were uploaded once, not again" "$KEPT" "$ONCE"
TOTAL_PUTS=$(grep -c 'Stored object "resume/model-.*" in bucket "dst-bkt"' "$S3_LOG" || true)
if [ "$TOTAL_PUTS" -eq $((NALL + NBEFORE - KEPT)) ]; then
	pass "$TOTAL_PUTS shard PUTs in all: $NALL shards, $KEPT not sent again"
else
	fail "shard PUTs: every shard once, but those kept" "$TOTAL_PUTS PUTs, $NALL shards, $KEPT kept"
fi
# The requests the daemon sent for each shard uploaded before the kill.
requests_of() { grep -c "^$1 /dst-bkt/resume/$2 " "$S3_REQUESTS_LOG" || true; }
GETS=0 HEADS=0
for f in $BEFORE; do
	GETS=$((GETS + $(requests_of GET "$f")))
	HEADS=$((HEADS + $(requests_of HEAD "$f")))
done
if grep -q "^GET /dst-bkt/resume/ckptconv-sums.json " "$S3_REQUESTS_LOG"; then
	pass "the requests log sees the daemon's GETs (the record read back)"
else
	fail "the requests log sees the daemon's GETs" "$(head -5 "$S3_REQUESTS_LOG")"
fi
assert_eq "the kept shards were not read back: no GET of any shard uploaded before the kill" 0 "$GETS"
if [ "$HEADS" -ge "$KEPT" ]; then
	pass "... they were asked with HeadObject instead ($HEADS HEADs)"
else
	fail "... they were asked with HeadObject instead" "$HEADS HEADs, $KEPT kept" \
		"$(tail -5 "$S3_REQUESTS_LOG")"
fi
s3_download "$DST" "$TEST_TMP/down" || fail "download the output"
BAD=""
for f in $(ls "$TEST_TMP/ref"); do
	[ "$f" = ckptconv-plan.json ] || [ "$f" = ckptconv-sums.json ] && continue
	cmp -s "$TEST_TMP/ref/$f" "$TEST_TMP/down/$f" || BAD="$BAD $f"
done
assert_eq "the output equals the uninterrupted local run's" "" "$BAD"
assert_eq "... its checksum record too, by files, sizes and CRC-32C" same \
	"$(same_sums "$TEST_TMP/ref" "$TEST_TMP/down")"
assert_eq "the record holds every shard's ETag" "" "$(python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))
print(" ".join(f["name"] for f in r["files"]
               if f["name"].endswith(".safetensors") and not f.get("etag")))' \
	"$TEST_TMP/down/ckptconv-sums.json")"
expect_ok "verify --checksums on S3" "$CKPTCONV" verify --checksums "$DST"
daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"
finish
