#!/bin/bash
# SPDX-License-Identifier: MIT
#
# s3_credentials_daemon.sh: the daemon's jobs on temporary credentials that
# expire while they run.  The service gets a web identity (as IRSA gives a
# pod) exchanged with a stand-in STS whose credentials live 20 s; the store
# is reached through the front of tests/aws_standins.py, which refuses any
# request signed with credentials that expired or were never issued, and
# only through the jobs' options.s3 (the service's own endpoint is a closed
# port).  A conversion throttled to last about 45 s and a quick one run
# side by side: both succeed with not one request refused, the quick one
# on the same credentials as the other (one provider, one STS exchange),
# the long one across at least two refreshes, signed with at least three
# successive keys.  Half-way through, the token file is rotated and the old
# token revoked: the next refreshes present the new one.  Both jobs say
# credentials_source "web_identity"; no secret or token appears in the
# answers, the debug log, the job records or /metrics.
#
# Then two more services.  In one, a job from a local directory to the
# store is the first to need credentials (fetched once it runs): it too
# says credentials_source "web_identity".  In the other, the web identity
# token file is a FIFO nothing writes to: a submission from the store is
# refused at once with s3_credentials naming the file, and a local job
# submitted after it is accepted and runs.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
. "$(dirname "$0")/s3_lib.sh"
. "$(dirname "$0")/aws_lib.sh"

need_binary
start_s3rver src-bkt dst-bkt
start_standins
G=$GOLDEN_DIR/tiny
s3_upload "$G/hf" s3://src-bkt/tiny/hf/ || fail "upload the golden HF checkpoint"

ROLE_ARN=arn:aws:iam::123456789012:role/ckptconv
TOKEN_A=jwt-a-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
TOKEN_B=jwt-b-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
standins_control "{\"lifetime\": 20, \"role_arn\": \"$ROLE_ARN\", \"web_tokens\": [\"$TOKEN_A\"]}"
printf '%s\n' "$TOKEN_A" >"$CREDS_HOME/token"

# The service's environment: a web identity and nothing else.
for v in "${CREDS_VARIABLES[@]}"; do
	unset "$v"
done
export HOME=$CREDS_HOME AWS_CONFIG_FILE=$CREDS_HOME/.aws/config
export AWS_SHARED_CREDENTIALS_FILE=$CREDS_HOME/.aws/credentials
export AWS_ROLE_ARN=$ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE=$CREDS_HOME/token
export AWS_ENDPOINT_URL_STS=$STS_URL
AWS_ENDPOINT_URL_S3=http://127.0.0.1:$CLOSED_PORT daemon_start --max-running 2 --log-level debug \
	--allow-s3 s3://src-bkt/tiny/ --allow-s3 s3://dst-bkt/jobs/ --allow-s3-endpoint "$S3_FRONT"
# The AWS CLI that takes the output out keeps using the test server's key.
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
unset AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE
S3_OPTS="{\"endpoint_url\": \"$S3_FRONT\", \"region\": \"us-east-1\", \"addressing_style\": \"path\"}"

mark=$(events_mark)
# 194 KB of tensors at 4.4 KB/s: about 45 s.
submit "long job" s3://src-bkt/tiny/hf/ s3://dst-bkt/jobs/long/ native \
	"{\"max_bytes_per_second\": \"4400\", \"s3\": $S3_OPTS}"
LONG=$JOB
submit "quick job" s3://src-bkt/tiny/hf/ s3://dst-bkt/jobs/quick/ native "{\"s3\": $S3_OPTS}"
QUICK=$JOB
T0=$(date +%s)
expect_job "quick job succeeds" "$QUICK" succeeded 60
# Both jobs opened their stores at once; credentials are first refreshed
# 10 s after they were issued: until then, one exchange for both.
FIRST=$("$PY" - "$STANDINS_DIR/events.jsonl" "$mark" <<'PYEOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()[int(sys.argv[2]):]
issued = [e["t"] for e in map(json.loads, lines) if e["event"] == "issue"]
print(sum(1 for t in issued if t < issued[0] + 9) if issued else 0)
PYEOF
)
assert_eq "one STS exchange for both jobs (one provider)" 1 "$FIRST"
assert_eq "quick job: credentials_source" web_identity "$(job_field "$QUICK" credentials_source)"

# Half-way through the long job, the token file is rotated and the old
# token revoked.
while [ $(($(date +%s) - T0)) -lt 15 ] && [ "$(job_state "$LONG")" = running ]; do
	sleep 1
done
assert_eq "long job still running at rotation time" running "$(job_state "$LONG")"
rotated=$(events_mark)
printf '%s\n' "$TOKEN_B" >"$CREDS_HOME/token.new" && mv "$CREDS_HOME/token.new" "$CREDS_HOME/token"
standins_control "{\"lifetime\": 20, \"role_arn\": \"$ROLE_ARN\", \"web_tokens\": [\"$TOKEN_B\"]}"

if expect_job "long job succeeds across refreshes" "$LONG" succeeded 150; then
	echo "  (long job: $(($(date +%s) - T0)) s)"
	if s3_download s3://dst-bkt/jobs/long/ "$TEST_TMP/long"; then
		expect_ok "long job: output equals golden native" "$CKPTCONV" verify "$G/native" \
			"$TEST_TMP/long"
	else
		fail "long job: download the output"
	fi
fi
api GET "/v1/jobs/$LONG"
cp "$BODY" "$TEST_TMP/long.json"
assert_eq "long job: credentials_source" web_identity "$(job_field "$LONG" credentials_source)"
if "$CKPTCONV" jobs get --server "$BASE" "$LONG" >"$TEST_TMP/jobs-get.out" 2>&1 &&
	grep -q "^credentials  web_identity$" "$TEST_TMP/jobs-get.out"; then
	pass "ckptconv jobs get names the credentials' source"
else
	fail "ckptconv jobs get names the credentials' source" "$(cat "$TEST_TMP/jobs-get.out")"
fi
assert_eq "not one request refused by the front" 0 \
	"$(events_since "$mark" "e['event'] == 's3' and e['verdict'] != 'ok'")"
ISSUES=$(events_since "$mark" "e['event'] == 'issue'")
KEYS=$("$PY" - "$STANDINS_DIR/events.jsonl" "$mark" <<'PYEOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()[int(sys.argv[2]):]
print(len({e["key"] for e in map(json.loads, lines) if e["event"] == "s3"}))
PYEOF
)
echo "  (STS exchanges: $ISSUES; keys that signed requests: $KEYS)"
if [ "$ISSUES" -ge 3 ]; then
	pass "at least two refreshes during the long job"
else
	fail "at least two refreshes during the long job" "STS issued $ISSUES credentials"
fi
if [ "$KEYS" -ge 3 ]; then
	pass "refreshed credentials sign the requests (3 keys or more)"
else
	fail "refreshed credentials sign the requests (3 keys or more)" "$KEYS keys"
fi
assert_eq "no STS request refused (the revoked token was never sent again)" 0 \
	"$(events_since "$mark" "e['event'] == 'refused'")"
if [ "$(events_since "$rotated" "e['event'] == 'issue' and e['web_token'] == '$TOKEN_B'")" -ge 1 ]; then
	pass "refreshes after the rotation present the token file's new token"
else
	fail "refreshes after the rotation present the token file's new token"
fi
if grep -q "refreshing the object storage credentials" "$DAEMON_LOG"; then
	fail "no refresh failed" "$(grep -m3 "refreshing the object storage credentials" "$DAEMON_LOG")"
else
	pass "no refresh failed"
fi

api GET /metrics
cp "$BODY" "$TEST_TMP/metrics.txt"
api GET "/v1/jobs?limit=10"
cp "$BODY" "$TEST_TMP/jobs.json"
no_credentials_in "no secret or token in the answers, the log, the records or /metrics" \
	"$TEST_TMP/long.json" "$TEST_TMP/metrics.txt" "$TEST_TMP/jobs.json" "$DAEMON_LOG" \
	"$TEST_TMP/jobs-get.out" \
	$(find "$STATE" -type f)

# with_web_identity TOKEN_FILE CMD...: CMD with the service's environment
# (a web identity, no keys); the AWS CLI's keys come back after it.
with_web_identity() {
	local file=$1
	shift
	unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
	export AWS_ROLE_ARN=$ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE=$file
	export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$CLOSED_PORT
	"$@"
	export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
	unset AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_ENDPOINT_URL_S3
}

daemon_stop
cp -r "$G/hf" "$DATA/tiny-hf"
STATE=$TEST_TMP/state-local
with_web_identity "$CREDS_HOME/token" daemon_start --allow-s3 s3://dst-bkt/jobs/ \
	--allow-s3-endpoint "$S3_FRONT"
if submit "local to store job" "$DATA/tiny-hf" s3://dst-bkt/jobs/from-local/ native \
	"{\"s3\": $S3_OPTS}"; then
	expect_job "local to store job succeeds" "$JOB" succeeded 60
	assert_eq "local to store job: credentials_source" web_identity \
		"$(job_field "$JOB" credentials_source)"
fi

daemon_stop
mkfifo "$TEST_TMP/token-fifo"
STATE=$TEST_TMP/state-fifo
with_web_identity "$TEST_TMP/token-fifo" daemon_start --allow-s3 s3://src-bkt/tiny/ \
	--allow-s3 s3://dst-bkt/jobs/ --allow-s3-endpoint "$S3_FRONT"
post_job "$(job_json s3://src-bkt/tiny/hf/ "$DATA/from-store" native "{\"s3\": $S3_OPTS}")"
expect_error "a FIFO as the token file: the submission is refused" 502 s3_credentials
assert_eq "the error names the source and the file" \
	"web identity (STS at $STS_URL): the token file $TEST_TMP/token-fifo is not a regular file" \
	"$(jget error.message)"
if submit "a local job after it" "$DATA/tiny-hf" "$DATA/local-out" native; then
	expect_job "the local job succeeds" "$JOB" succeeded 60
fi

# The same token file, now a regular file, while STS does not answer: two
# submissions from the store wait for credentials on two submission
# threads; a local one submitted meanwhile is answered before them.
rm "$TEST_TMP/token-fifo"
printf '%s\n' "$TOKEN_B" >"$TEST_TMP/token-fifo"
standins_control "{\"lifetime\": 20, \"role_arn\": \"$ROLE_ARN\", \"web_tokens\": [\"$TOKEN_B\"], \"sts\": \"hang\"}"
hang_mark=$(events_mark)
WAITING=()
for i in 1 2; do
	curl -s -o "$TEST_TMP/waiting-$i.json" -w '%{http_code}' --max-time 60 -X POST \
		-H 'Content-Type: application/json' --data-binary \
		"$(job_json s3://src-bkt/tiny/hf/ "$DATA/waiting-$i" native "{\"s3\": $S3_OPTS}")" \
		"$BASE/v1/jobs" >"$TEST_TMP/waiting-$i.status" &
	WAITING+=($!)
done
for i in $(seq 100); do
	[ "$(events_since "$hang_mark" "e['event'] == 'hang'")" -ge 1 ] && break
	sleep 0.1
done
assert_eq "STS holds the credentials fetch" 1 "$(events_since "$hang_mark" "e['event'] == 'hang'")"
submit "a local job while credentials are fetched" "$DATA/tiny-hf" "$DATA/local-out-2" native
assert_eq "it is answered before the submissions waiting for credentials" "0 0" \
	"$(stat -c %s "$TEST_TMP/waiting-1.status") $(stat -c %s "$TEST_TMP/waiting-2.status")"
for i in 1 2; do
	wait "${WAITING[$((i - 1))]}"
	STATUS=$(cat "$TEST_TMP/waiting-$i.status")
	cp "$TEST_TMP/waiting-$i.json" "$BODY"
	expect_error "submission $i from the store: STS does not answer" 502 s3_credentials
done
expect_job "the local job submitted meanwhile succeeds" "$JOB" succeeded 60

finish
