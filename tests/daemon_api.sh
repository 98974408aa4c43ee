#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_api.sh: the HTTP API of `ckptconv serve` answer by answer: health,
# readiness, version and metrics; the bearer token; every error status with
# its body (400, 401, 403, 404, 405, 409, 413, 415, 422, 429; 503 is in
# daemon_drain.sh); path traversal and symlink escapes; idempotency keys;
# listing with filters and cursors; the per-tensor listing's parameters;
# dry runs; cancelling a queued and a running job.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

copy_dir "$GOLDEN_DIR/tiny/hf" "$DATA/hf"
copy_dir "$GOLDEN_DIR/tiny/native" "$DATA/native"
mkdir -p "$DATA/empty" "$TEST_TMP/outside"
ln -s "$TEST_TMP/outside" "$DATA/escape"
ln -s "$GOLDEN_DIR/tiny/hf" "$DATA/hf-elsewhere"
echo "t0k3n-$RANDOM$RANDOM" >"$TEST_TMP/token"
SECRET=$(cat "$TEST_TMP/token")
SLOW='{"max_bytes_per_second": "1KB"}'

daemon_start --token-file "$TEST_TMP/token" --max-running 1 --max-queued 1

# ---- open routes, the token ------------------------------------------------
api GET /healthz
assert_eq "healthz 200 without a token" "200 ok" "$STATUS $(jget status)"
api GET /readyz
assert_eq "readyz 200 when ready" "200 ready" "$STATUS $(jget status)"
api GET /metrics
if [ "$STATUS" = 200 ] && grep -q '^ckptconv_jobs{state="queued"} 0$' "$BODY" &&
	grep -q '^ckptconv_workers_busy ' "$BODY" && grep -q '^ckptconv_queue_length 0$' "$BODY"; then
	pass "metrics without a token"
else
	fail "metrics without a token" "status $STATUS" "$(head -5 "$BODY")"
fi
api GET /v1/version
expect_error "version without a token" 401 unauthorized
assert_eq "401 names the scheme" "Bearer" "$(header WWW-Authenticate)"
api GET /v1/jobs -H "Authorization: Bearer wrong-$SECRET"
expect_error "wrong token" 401 unauthorized
api GET /v1/jobs -H "Authorization: Bearer ${SECRET%?}"
expect_error "token prefix" 401 unauthorized
api GET /v1/nowhere
expect_error "unknown /v1 route needs the token first" 401 unauthorized
TOKEN=$SECRET
api GET /v1/version
assert_eq "version with the token" "200 ckptconv" "$STATUS $(jget name)"
if ! grep -q "$SECRET" "$DAEMON_LOG"; then
	pass "the token never appears in the log"
else
	fail "the token never appears in the log"
fi

# ---- malformed requests -------------------------------------------------------
REQ=$(job_json "$DATA/hf" "$DATA/out" native)
api POST /v1/jobs -H 'Content-Type: text/plain' --data-binary "$REQ"
expect_error "text/plain body" 415 unsupported_media_type
api POST /v1/jobs --data-binary "$REQ"
expect_error "form-encoded body" 415 unsupported_media_type
"$PY" -c 'print("{\"pad\": \"" + "x" * 70000 + "\"}")' >"$TEST_TMP/big.json"
api POST /v1/jobs -H 'Content-Type: application/json' --data-binary @"$TEST_TMP/big.json"
expect_error "body over 64 KiB" 413 payload_too_large
api POST /v1/jobs -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' \
	--data-binary @"$TEST_TMP/big.json"
expect_error "chunked body over 64 KiB" 413 payload_too_large
post_job '{"source": "/x", '
expect_error "truncated JSON" 400 invalid_json
post_job '{"source": "/x", "source": "/y", "destination": "/z", "to": "hf"}'
expect_error "duplicate key" 400 invalid_json
post_job '[]'
expect_error "not an object" 400 invalid_json
post_job "{\"source\": \"$DATA/hf\", \"destination\": \"$DATA/out\", \"to\": \"native\", \"colour\": \"red\"}"
expect_error "unknown field" 400 unknown_field colour
post_job "$(job_json "$DATA/hf" "$DATA/out" native '{"turbo": true}')"
expect_error "unknown option" 400 unknown_field options.turbo
post_job "{\"source\": \"$DATA/hf\", \"destination\": \"$DATA/out\"}"
expect_error "missing to" 400 missing_field to
post_job "$(job_json "$DATA/hf" "$DATA/out" native '{"dtype": "fp4"}')"
expect_error "bad dtype" 400 invalid_field options.dtype
post_job "$(job_json "$DATA/hf" "$DATA/out" native '{"io": "direct"}')"
expect_error "bad io" 400 invalid_field options.io
post_job "$(job_json "$DATA/hf" "$DATA/out" native '{"expert_parallel": {"size": 2, "rank": 5}}')"
expect_error "EP rank out of range" 400 invalid_field options.expert_parallel.rank
post_job "$(job_json "$DATA/hf" "$DATA/out" native '{"max_shard_size": "12 furlongs"}')"
expect_error "bad size" 400 invalid_size options.max_shard_size
post_job "$(job_json "$DATA/hf" "$DATA/out" native '{"exclude": "(unclosed"}')"
expect_error "bad exclude pattern" 400 invalid_exclude options.exclude
post_job "$(job_json "$DATA/hf" "$DATA/hf/inside" native)"
expect_error "destination inside the source" 400 invalid_field destination
post_job "$(job_json "$DATA/hf" "$DATA/out" native)" -H 'Idempotency-Key: bad key with spaces'
expect_error "bad Idempotency-Key" 400 invalid_field Idempotency-Key

# ---- paths ----------------------------------------------------------------------
post_job "$(job_json "$DATA/../../etc" "$DATA/out" native)"
expect_error "source with .. out of the root" 403 forbidden_path source
post_job "$(job_json "$DATA/hf" "$DATA/x/../../outside" native)"
expect_error "destination with .. out of the root" 403 forbidden_path destination
post_job "$(job_json "$DATA/hf" "$DATA/escape/out" native)"
expect_error "destination through a symlink out of the root" 403 forbidden_path destination
post_job "$(job_json "$DATA/hf-elsewhere" "$DATA/out" native)"
expect_error "source symlinked out of the root" 403 forbidden_path source
post_job "$(job_json "$DATA/hf" "$STATE/jobs" native)"
expect_error "state dir as destination" 403 forbidden_path destination
post_job "$(job_json "s3://bucket/ling" "$DATA/out" native)"
expect_error "s3 source not allowed" 403 forbidden_s3_location source
post_job "$(job_json "$DATA/hf" relative/out native)"
expect_error "relative destination" 400 invalid_field destination
# Control characters would reach the terminals that show the job.
post_job '{"source": "'"$DATA"'/hf", "destination": "'"$DATA"'/out\u001b[31m", "to": "native"}'
expect_error "ESC in the destination" 400 invalid_field destination
assert_eq "the message names it" "destination contains the control character U+001B at byte $((${#DATA} + 4))" \
	"$(jget error.message)"
post_job '{"source": "'"$DATA"'/hf\r", "destination": "'"$DATA"'/out", "to": "native"}'
expect_error "CR in the source" 400 invalid_field source
post_job '{"source": "'"$DATA"'/hf", "destination": "'"$DATA"'/out\u009b2J", "to": "native"}'
expect_error "a C1 CSI in the destination" 400 invalid_field destination
assert_eq "the message names it" "destination contains the control character U+009B at byte $((${#DATA} + 4))" \
	"$(jget error.message)"
post_job '{"source": "'"$DATA"'/hf", "destination": "'"$DATA"'/out", "to": "native", "labels": {"team": "nlp", "note": "\u001b]0;pwned\u0007"}}'
expect_error "a title escape in a label" 400 invalid_field labels.note
post_job '{"source": "'"$DATA"'/hf", "destination": "'"$DATA"'/out", "to": "native", "labels": {"note": "x\u007f"}}'
expect_error "DEL in a label" 400 invalid_field labels.note
post_job '{"source": "'"$DATA"'/hf", "destination": "'"$DATA"'/out-utf8", "to": "native", "options": {"dry_run": true}, "labels": {"note": "caf\u00e9 \u00a0\u4e2d"}}'
assert_eq "other UTF-8 in a label is accepted" "201 "$'caf\xc3\xa9 \xc2\xa0\xe4\xb8\xad' "$STATUS $(jget labels.note)"
UTF8_JOB=$(jget id)
expect_job "that dry run ends" "$UTF8_JOB" succeeded
api DELETE "/v1/jobs/$UTF8_JOB"
assert_eq "its record is removed" 204 "$STATUS"
if [ -z "$(ls -A "$TEST_TMP/outside")" ] && [ ! -e "$DATA/out" ]; then
	pass "refused jobs wrote nothing"
else
	fail "refused jobs wrote nothing" "$(ls -A "$TEST_TMP/outside" "$DATA")"
fi

# ---- sources that cannot be converted (422, checked before 201) ----------------
post_job "$(job_json "$DATA/missing" "$DATA/out" native)"
expect_error "missing source" 422 source_not_found source
post_job "$(job_json "$DATA/empty" "$DATA/out" native)"
expect_error "empty source" 422 not_a_checkpoint source
post_job "$(job_json "$DATA/native" "$DATA/out" native)"
expect_error "already native" 422 already_in_layout

# ---- 404 and 405 -------------------------------------------------------------------
api GET /v1/jobs/0123456789abcdef
expect_error "unknown job" 404 job_not_found
api GET /v1/jobs/not-an-id/tensors
expect_error "malformed job id" 404 job_not_found
api DELETE /v1/jobs/0123456789abcdef
expect_error "delete unknown job" 404 job_not_found
api GET /v1/nothing
expect_error "unknown route" 404 not_found
api PUT /v1/jobs
expect_error "PUT on jobs" 405 method_not_allowed
assert_eq "405 lists the methods" "GET,POST" "$(header Allow)"
api POST /healthz
expect_error "POST on healthz" 405 method_not_allowed

# ---- dry run ------------------------------------------------------------------------
post_job "$(job_json "$DATA/hf" "$DATA/dry" native '{"dry_run": true}')"
if [ "$STATUS" = 201 ] && [ "$(jget state)" = succeeded ] && [ "$(jget result.tensors)" -gt 0 ] &&
	[ ! -e "$DATA/dry" ]; then
	pass "dry run plans without writing"
else
	fail "dry run plans without writing" "status $STATUS" "$(head -c 300 "$BODY")"
fi

# ---- conflicts, idempotency, the queue ----------------------------------------------
submit "slow job A" "$DATA/hf" "$DATA/a" native "$SLOW"
A=$JOB
assert_eq "201 Location" "/v1/jobs/$A" "$(header Location)"
wait_job "$A" running --timeout 20
assert_eq "job A runs" running "$WAITED_STATE"
post_job "$(job_json "$DATA/hf" "$DATA/a" native)"
expect_error "same destination as a running job" 409 destination_in_use destination
post_job "$(job_json "$DATA/hf" "$DATA/a/sub" native)"
expect_error "destination inside a running job's" 409 destination_in_use destination
post_job "$(job_json "$DATA/a2" "$DATA/hf" hf)"
expect_error "destination on a running job's source" 409 destination_in_use destination

B_REQ=$(job_json "$DATA/hf" "$DATA/b" native "$SLOW")
post_job "$B_REQ" -H 'Idempotency-Key: job-b-1'
B=$(jget id)
assert_eq "job B queued behind A" "201 queued" "$STATUS $(jget state)"
post_job "$B_REQ" -H 'Idempotency-Key: job-b-1'
assert_eq "same key, same body: the same job" "200 $B" "$STATUS $(jget id)"
post_job "$(job_json "$DATA/hf" "$DATA/b2" native)" -H 'Idempotency-Key: job-b-1'
expect_error "same key, other body" 409 idempotency_conflict
post_job "$(job_json "$DATA/hf" "$DATA/c" native)"
expect_error "queue full" 429 queue_full
assert_eq "429 carries Retry-After" yes "$([ -n "$(header Retry-After)" ] && echo yes)"

# ---- listing ---------------------------------------------------------------------------
api GET '/v1/jobs?limit=1'
FIRST=$(jget jobs.0.id)
CURSOR=$(jget next_cursor)
assert_eq "limit=1 gives one job and a cursor" "1 yes" "$(jget jobs.#) $([ "$CURSOR" != null ] && echo yes)"
api GET "/v1/jobs?limit=1&cursor=$CURSOR"
SECOND=$(jget jobs.0.id)
assert_eq "the cursor moves on" yes "$([ -n "$SECOND" ] && [ "$SECOND" != "$FIRST" ] && echo yes)"
api GET '/v1/jobs?limit=100'
assert_eq "newest first" "$B $A" "$(jget jobs.0.id) $(jget jobs.1.id)"
api GET '/v1/jobs?state=queued'
assert_eq "state filter" "1 $B" "$(jget jobs.#) $(jget jobs.0.id)"
# A dry run costs a plan and a record like any job: it counts toward
# --max-queued (1, held by B).
post_job "$(job_json "$DATA/hf" "$DATA/dry2" native '{"dry_run": true}')"
expect_error "a dry run counts toward --max-queued" 429 queue_full
api GET '/v1/jobs?state=sleeping'
expect_error "bad state filter" 400 invalid_field state
api GET '/v1/jobs?limit=0'
expect_error "bad limit" 400 invalid_field limit
api GET '/v1/jobs?cursor=abc'
expect_error "bad cursor" 400 invalid_field cursor
api GET '/v1/jobs?label=nocolon'
expect_error "bad label filter" 400 invalid_field label

# ---- per-tensor listing parameters --------------------------------------------------
api GET "/v1/jobs/$A/tensors?limit=5&offset=2"
assert_eq "tensors page" "200 5 2" "$STATUS $(jget tensors.#) $(jget offset)"
TOTAL=$(jget total)
api GET "/v1/jobs/$A/tensors?state=pending&limit=10000"
PENDING=$(jget total)
api GET "/v1/jobs/$A/tensors?state=done&limit=10000"
DONE=$(jget total)
api GET "/v1/jobs/$A/tensors?state=running&limit=10000"
RUNNING=$(jget total)
assert_eq "state filters partition the tensors" "$TOTAL" "$((PENDING + DONE + RUNNING))"
api GET "/v1/jobs/$A/tensors?state=finished"
expect_error "bad tensor state" 400 invalid_field state
api GET "/v1/jobs/$A/tensors?limit=10001"
expect_error "tensor limit too large" 400 invalid_field limit

# ---- cancelling ---------------------------------------------------------------------------
api DELETE "/v1/jobs/$B"
assert_eq "DELETE queued job: cancelled at once" "200 cancelled" "$STATUS $(jget state)"
post_job "$(job_json "$DATA/hf" "$DATA/lab" native '{"dry_run": true}' | sed 's/}$/, "labels": {"team": "nlp"}}/')"
LABELLED=$(jget id)
assert_eq "with the queue empty again a dry run is accepted" 201 "$STATUS"
api GET '/v1/jobs?label=team:nlp'
assert_eq "label filter" "1 $LABELLED" "$(jget jobs.#) $(jget jobs.0.id)"
api DELETE "/v1/jobs/$A"
assert_eq "DELETE running job: 202" "202 true" "$STATUS $(jget cancel_requested)"
expect_job "running job ends cancelled" "$A" cancelled 30
assert_eq "cancelled job says why" cancelled "$(job_field "$A" error.code)"
no_finished_output "cancelled job left no output" "$DATA/a"
api DELETE "/v1/jobs/$A"
assert_eq "DELETE finished job: record removed" 204 "$STATUS"
api GET "/v1/jobs/$A"
expect_error "deleted job is gone" 404 job_not_found
if [ ! -e "$STATE/jobs/$A.json" ]; then
	pass "deleted job's record file removed"
else
	fail "deleted job's record file removed"
fi

# ---- metrics after all this ---------------------------------------------------------------
api GET /metrics
if grep -q '^ckptconv_http_requests_total{method="POST",route="/v1/jobs",code="201"} ' "$BODY" &&
	grep -q 'code="401"' "$BODY" && grep -q '^ckptconv_jobs{state="cancelled"} 1$' "$BODY" &&
	grep -q '^ckptconv_job_duration_seconds_count{state="cancelled"} 2$' "$BODY"; then
	pass "metrics count requests and jobs"
else
	fail "metrics count requests and jobs" "$(grep -E 'http_requests|ckptconv_jobs|count' "$BODY" | head -12)"
fi
if "$PY" - "$DAEMON_LOG" <<'PYEOF'; then
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines, "no log"
for line in lines:
    o = json.loads(line)
    assert {"ts", "level", "msg"} <= set(o), line
assert any(json.loads(l).get("job") for l in lines), "no line names a job"
PYEOF
	pass "logs are JSON lines naming jobs"
else
	fail "logs are JSON lines naming jobs" "$(head -3 "$DAEMON_LOG")"
fi

daemon_stop
assert_eq "clean exit on SIGTERM" 0 "$DAEMON_RC"
finish
