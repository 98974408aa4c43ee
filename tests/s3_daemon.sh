#!/bin/bash
# SPDX-License-Identifier: MIT
#
# s3_daemon.sh: S3 jobs through the daemon's API.  The service's own
# endpoint points nowhere useful, so a job reaches the test store (s3rver on
# 127.0.0.1) only through its options.s3.endpoint_url, which must be on the
# --allow-s3-endpoint list.  A golden conversion S3 -> S3 with per-tensor
# progress followed while it runs (throttled), its output checked with
# `ckptconv verify` after the AWS CLI takes it out; then the refusals: a
# location outside --allow-s3 (403), an endpoint outside the list (403),
# secrets in options.s3 (400), the clear errors of a missing bucket and an
# unreachable store, and the store killed in the middle of a job (the job
# retries, fails, publishes nothing).  The secret key appears in no
# answer, log or record.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
. "$(dirname "$0")/s3_lib.sh"

need_binary
start_s3rver src-bkt dst-bkt other-bkt
ENDPOINT=http://127.0.0.1:$S3_PORT
G=$GOLDEN_DIR/tiny
s3_upload "$G/hf" s3://src-bkt/tiny/hf/ || fail "upload the golden HF checkpoint"

# The service's default endpoint is a closed port: only a job's options.s3
# reaches the store.
AWS_ENDPOINT_URL_S3=http://127.0.0.1:1 CKPTCONV_S3_MAX_ATTEMPTS=2 daemon_start \
	--allow-s3 s3://src-bkt/tiny/ --allow-s3 s3://dst-bkt/jobs/ \
	--allow-s3 s3://no-such-bucket/ --allow-s3-endpoint "$ENDPOINT/"

S3_OPTS="{\"endpoint_url\": \"$ENDPOINT\", \"region\": \"us-east-1\", \"addressing_style\": \"path\"}"

# A golden conversion, throttled so its per-tensor progress can be seen.
if submit "s3 job" s3://src-bkt/tiny/hf/ s3://dst-bkt/jobs/native/ native \
	"{\"max_bytes_per_second\": \"40KB\", \"s3\": $S3_OPTS}"; then
	seen_partial=no
	for _ in $(seq 300); do
		api GET "/v1/jobs/$JOB/tensors?limit=1000"
		if [ "$STATUS" = 200 ] && "$PY" - "$BODY" <<'PYEOF'; then
import json, sys
t = json.load(open(sys.argv[1]))["tensors"]
done = sum(1 for x in t if x["state"] == "done")
sys.exit(0 if 0 < done < len(t) else 1)
PYEOF
			seen_partial=yes
			break
		fi
		[ "$(job_state "$JOB")" = running ] || [ "$(job_state "$JOB")" = queued ] || break
		sleep 0.1
	done
	assert_eq "s3 job: per-tensor progress shows some tensors done, some not" yes "$seen_partial"
	api GET "/v1/jobs/$JOB"
	if grep -q '"in_flight"' "$BODY" && grep -q '"bytes_total"' "$BODY"; then
		pass "s3 job: progress has bytes and in-flight tensors"
	else
		fail "s3 job: progress has bytes and in-flight tensors" "$(head -c 400 "$BODY")"
	fi
	if expect_job "s3 job succeeds" "$JOB" succeeded 120; then
		if s3_download s3://dst-bkt/jobs/native/ "$TEST_TMP/down"; then
			expect_ok "s3 job: output equals golden native" "$CKPTCONV" verify "$G/native" \
				"$TEST_TMP/down"
			listing_matches_output "s3 job: per-tensor listing matches the output" "$JOB" \
				"$TEST_TMP/down"
		else
			fail "s3 job: download the output"
		fi
	fi
	api GET "/v1/jobs/$JOB"
	cp "$BODY" "$TEST_TMP/job.json"
fi

# Refusals.
post_job "$(job_json s3://src-bkt/tiny/hf/ s3://other-bkt/out/ native "{\"s3\": $S3_OPTS}")"
expect_error "destination bucket outside --allow-s3" 403 forbidden_s3_location destination
post_job "$(job_json s3://src-bkt/elsewhere/ s3://dst-bkt/jobs/x/ native "{\"s3\": $S3_OPTS}")"
expect_error "source prefix outside --allow-s3" 403 forbidden_s3_location source
post_job "$(job_json s3://dst-bkt/jobsfoo/ s3://dst-bkt/jobs/y/ native "{\"s3\": $S3_OPTS}")"
expect_error "a prefix that only starts like an allowed one" 403 forbidden_s3_location source
post_job "$(job_json s3://src-bkt/tiny/hf/ s3://dst-bkt/jobs/z/ native \
	'{"s3": {"endpoint_url": "http://127.0.0.1:9"}}')"
expect_error "endpoint outside --allow-s3-endpoint" 403 forbidden_s3_endpoint options.s3.endpoint_url
post_job "$(job_json s3://src-bkt/tiny/hf/ s3://dst-bkt/jobs/z/ native \
	"{\"s3\": {\"endpoint_url\": \"$ENDPOINT\", \"secret_access_key\": \"$S3_SECRET_KEY\"}}")"
expect_error "credentials in options.s3" 400 unknown_field options.s3.secret_access_key
post_job "$(job_json s3://src-bkt/tiny/hf/ s3://dst-bkt/jobs/z/ native \
	"{\"s3\": {\"endpoint_url\": \"$ENDPOINT\", \"addressing_style\": \"sideways\"}}")"
expect_error "a bad addressing style" 400 s3_config options.s3.addressing_style

# Clear errors from the store.
post_job "$(job_json s3://no-such-bucket/x/ s3://dst-bkt/jobs/nb/ native "{\"s3\": $S3_OPTS}")"
if [ "$STATUS" = 201 ]; then
	JOB=$(jget id)
	expect_job "missing bucket: the job fails" "$JOB" failed 60
	api GET "/v1/jobs/$JOB"
	assert_eq "missing bucket: error code" s3_no_such_bucket "$(jget error.code)"
else
	expect_error "missing bucket" 422 s3_no_such_bucket
fi
post_job "$(job_json s3://src-bkt/tiny/hf/ s3://dst-bkt/jobs/down/ native)"
if [ "$STATUS" = 201 ]; then
	JOB=$(jget id)
	expect_job "unreachable store: the job fails" "$JOB" failed 60
	api GET "/v1/jobs/$JOB"
	assert_eq "unreachable store: error code" s3_unavailable "$(jget error.code)"
else
	expect_error "unreachable store" 502 s3_unavailable
fi
cp "$BODY" "$TEST_TMP/last.json"

# The store dies in the middle of a throttled job: the job retries, fails
# with a clear error, and publishes nothing.
if submit "s3 job killed mid-way" s3://src-bkt/tiny/hf/ s3://dst-bkt/jobs/killed/ native \
	"{\"max_bytes_per_second\": \"40KB\", \"s3\": $S3_OPTS}"; then
	if wait_progress "$JOB"; then
		pass "killed job: running with bytes written"
	else
		fail "killed job: running with bytes written" "state $(job_state "$JOB")"
	fi
	kill_s3rver
	expect_job "killed job: fails once the store is gone" "$JOB" failed 60
	api GET "/v1/jobs/$JOB"
	assert_eq "killed job: error code" s3_unavailable "$(jget error.code)"
	if jget error.message | grep -q "attempts"; then
		pass "killed job: the message says it retried"
	else
		fail "killed job: the message says it retried" "$(jget error.message)"
	fi
	cp "$BODY" "$TEST_TMP/killed.json"
	start_s3rver
	left=$(s3_keys s3://dst-bkt/jobs/killed/)
	if echo "$left" | grep -qx -e model.safetensors.index.json -e model.safetensors; then
		fail "killed job: nothing that looks finished was published" "$left"
	else
		pass "killed job: nothing that looks finished was published"
	fi
fi

daemon_stop
no_secret_in "the secret key appears in no answer, log or job record" "$DAEMON_LOG" \
	"$TEST_TMP/job.json" "$TEST_TMP/last.json" "$TEST_TMP/killed.json" $(find "$STATE" -type f)

finish
