#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_resume.sh: kill -9 of the daemon while a job converts the mini
# fixture into 100 MB shards (throttled), once a few shards are published;
# a restart on the same state dir resumes the job (restarts 1): the shards
# published before the kill keep their inode and mtime, the result counts
# them as kept_files/kept_bytes, and the output equals an uninterrupted CLI
# conversion's, records included.  A job submitted with
# "options": {"resume": true} onto the finished destination keeps every
# shard and writes none.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

expect_ok "fixture mini" "$CKPTCONV" fixture --preset mini "$DATA/mini"
OUT=$DATA/out
OPTS='{"max_shard_size": "100MB", "max_bytes_per_second": "40MB"}'

daemon_start --max-running 1
submit "throttled mini job into 100 MB shards" "$DATA/mini" "$OUT" native "$OPTS"
M=$JOB
KILLED=no
for i in $(seq 900); do
	if [ "$(ls "$OUT" 2>/dev/null | grep -c '^model-.*\.safetensors$')" -ge 3 ]; then
		kill -9 "$DAEMON_PID"
		wait "$DAEMON_PID" 2>/dev/null || true
		KILLED=yes
		break
	fi
	sleep 0.1
done
assert_eq "killed once a few shards were published" yes "$KILLED"
PUBLISHED=$(ls "$OUT" | grep '^model-.*\.safetensors$')
NPUB=$(echo "$PUBLISHED" | grep -c .)
(cd "$OUT" && stat -c '%n %i %Y.%y' $PUBLISHED) >"$TEST_TMP/before"
KEPT_BYTES=$(cd "$OUT" && stat -c %s $PUBLISHED | awk '{s += $1} END {print s}')
if [ ! -e "$OUT/model.safetensors.index.json" ]; then
	pass "interrupted output has no index ($NPUB shards published)"
else
	fail "interrupted output has no index"
fi

daemon_start --max-running 1
api GET "/v1/jobs/$M"
assert_eq "the job is back, restart counted" 1 "$(jget restarts)"
expect_job "the resumed job succeeds" "$M" succeeded 300
api GET "/v1/jobs/$M"
assert_eq "its result counts the shards kept" "$NPUB $KEPT_BYTES" \
	"$(jget result.kept_files) $(jget result.kept_bytes)"
(cd "$OUT" && stat -c '%n %i %Y.%y' $PUBLISHED) >"$TEST_TMP/after"
if cmp -s "$TEST_TMP/before" "$TEST_TMP/after"; then
	pass "the $NPUB shards finished before the kill were not written again"
else
	fail "the shards finished before the kill were not written again" \
		"$(diff "$TEST_TMP/before" "$TEST_TMP/after" | head -4)"
fi
if ls -A "$OUT" | grep -q '^\.ckptconv-tmp\.'; then
	fail "no temporary file remains" "$(ls -A "$OUT")"
else
	pass "no temporary file remains"
fi
expect_ok "uninterrupted conversion by the CLI" "$CKPTCONV" convert --to native \
	--max-shard-size 100MB "$DATA/mini" "$TEST_TMP/ref"
if diff -r -q -x ckptconv-sums.json "$TEST_TMP/ref" "$OUT" >"$TEST_TMP/diff.out" &&
	[ "$(same_sums "$TEST_TMP/ref" "$OUT")" = same ]; then
	pass "the output equals the uninterrupted run's, records included"
else
	fail "the output equals the uninterrupted run's, records included" \
		"$(head -5 "$TEST_TMP/diff.out")" "$(same_sums "$TEST_TMP/ref" "$OUT")"
fi
expect_ok "and verifies by its checksums" "$CKPTCONV" verify --checksums "$OUT"

# ---- "resume": true through the API -------------------------------------------
NALL=$(ls "$OUT" | grep -c '^model-.*\.safetensors$')
(cd "$OUT" && stat -c '%n %i %Y.%y' model-*.safetensors) >"$TEST_TMP/before"
submit "a job with resume onto the finished destination" "$DATA/mini" "$OUT" native \
	'{"max_shard_size": "100MB", "resume": true}'
R=$JOB
expect_job "it succeeds" "$R" succeeded 120
api GET "/v1/jobs/$R"
assert_eq "it kept every shard" "$NALL true" \
	"$(jget result.kept_files) $(jget options.resume)"
(cd "$OUT" && stat -c '%n %i %Y.%y' model-*.safetensors) >"$TEST_TMP/after"
if cmp -s "$TEST_TMP/before" "$TEST_TMP/after"; then
	pass "... and wrote none again"
else
	fail "... and wrote none again" "$(diff "$TEST_TMP/before" "$TEST_TMP/after" | head -4)"
fi
api POST /v1/jobs -H 'Content-Type: application/json' --data-binary \
	"$(job_json "$DATA/mini" "$OUT" native '{"max_shard_size": "50MB", "resume": true}')"
if [ "$STATUS" = 201 ]; then
	expect_job "resume onto another plan's destination fails" "$(jget id)" failed 120
	assert_eq "... with manifest_mismatch" manifest_mismatch "$(jget error.code)"
else
	fail "a job with another plan is accepted, then fails" "HTTP $STATUS $(head -c 300 "$BODY")"
fi

daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"
finish
