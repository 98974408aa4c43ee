#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_options.sh: how `ckptconv serve` is configured and how it refuses
# to start: every option from its CKPTCONV_* variable, flags winning over
# variables, usage errors (exit 2), a state dir already in use and a busy
# port (exit 1); readiness follows the state dir's writability; oversized
# request headers are refused.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

copy_dir "$GOLDEN_DIR/tiny/hf" "$DATA/hf"
echo "env-token-$RANDOM" >"$TEST_TMP/token"

expect_exit "--help" 0 "$CKPTCONV" serve --help
if grep -q -- "--allow-root" "$TEST_TMP/run.out" && grep -q CKPTCONV_ALLOW_ROOT "$TEST_TMP/run.out"; then
	pass "--help names flags and variables"
else
	fail "--help names flags and variables"
fi
expect_exit "unknown flag" 2 "$CKPTCONV" serve --colour
expect_exit "bad --workers" 2 "$CKPTCONV" serve --workers many
expect_exit "bad --retain-jobs" 2 "$CKPTCONV" serve --retain-jobs 3y
expect_exit "bad variable" 2 env CKPTCONV_MAX_RUNNING=0 "$CKPTCONV" serve
expect_exit "bad flag value beside a valid variable" 2 env CKPTCONV_MAX_QUEUED=1 "$CKPTCONV" serve --max-queued x
expect_exit "bad --allow-s3 prefix" 2 "$CKPTCONV" serve --listen 127.0.0.1:0 \
	--state-dir "$STATE" --allow-s3 s3://
expect_exit "bad --allow-s3-endpoint" 2 "$CKPTCONV" serve --listen 127.0.0.1:0 \
	--state-dir "$STATE" --allow-s3-endpoint ftp://files.example
expect_exit "bad --http-nice" 2 "$CKPTCONV" serve --http-nice 25
expect_exit "allow-root must exist" 2 "$CKPTCONV" serve --listen 127.0.0.1:0 \
	--state-dir "$STATE" --allow-root "$TEST_TMP/none"
expect_exit "unreadable token file" 2 "$CKPTCONV" serve --listen 127.0.0.1:0 \
	--state-dir "$STATE" --token-file "$TEST_TMP/none"

# Configured by the environment only.
mkdir -p "$TEST_TMP/other-root"
export CKPTCONV_LISTEN=127.0.0.1:0 CKPTCONV_STATE_DIR="$STATE" CKPTCONV_ALLOW_ROOT="$TEST_TMP/other-root:$DATA" \
	CKPTCONV_TOKEN_FILE="$TEST_TMP/token" CKPTCONV_MAX_QUEUED=1 CKPTCONV_MAX_RUNNING=1 \
	CKPTCONV_SHUTDOWN_TIMEOUT=20
DAEMON_ENV_ONLY=1 daemon_start
api GET /v1/jobs
expect_error "CKPTCONV_TOKEN_FILE asks for the token" 401 unauthorized
TOKEN=$(cat "$TEST_TMP/token")
submit "CKPTCONV_ALLOW_ROOT (second entry) admits a job" "$DATA/hf" "$DATA/a" native \
	'{"max_bytes_per_second": "1KB"}'
A=$JOB
submit "second job queues" "$DATA/hf" "$DATA/b" native
post_job "$(job_json "$DATA/hf" "$DATA/c" native)"
expect_error "CKPTCONV_MAX_QUEUED=1 limits the queue" 429 queue_full

# A second daemon on the same state dir is refused.
run "$CKPTCONV" serve --listen 127.0.0.1:0 --state-dir "$STATE"
if [ "$RUN_RC" = 1 ] && grep -q "another ckptconv serve" "$TEST_TMP/run.err"; then
	pass "state dir in use: exit 1"
else
	fail "state dir in use: exit 1" "exit $RUN_RC" "$(tail -2 "$TEST_TMP/run.err")"
fi
run "$CKPTCONV" serve --listen "127.0.0.1:$DAEMON_PORT" --state-dir "$TEST_TMP/state2"
assert_eq "busy port: exit 1" 1 "$RUN_RC"

# Readiness follows the state dir: a jobs directory that cannot be
# written turns /readyz to 503 within a few seconds, and back.
mv "$STATE/jobs" "$STATE/jobs.moved"
touch "$STATE/jobs"
READY=200
for i in $(seq 100); do
	api GET /readyz
	READY=$STATUS
	[ "$READY" = 503 ] && break
	sleep 0.1
done
expect_error "unwritable state dir: not ready" 503 not_ready
rm "$STATE/jobs"
mv "$STATE/jobs.moved" "$STATE/jobs"
for i in $(seq 100); do
	api GET /readyz
	[ "$STATUS" = 200 ] && break
	sleep 0.1
done
assert_eq "writable again: ready" 200 "$STATUS"

# The HTTP threads run at a lower priority than the conversion workers
# (default --http-nice 5): some thread answering requests has nice 5, the
# workers keep 0.
for i in $(seq 20); do api GET /healthz; done
NICES=$("$PY" - "$DAEMON_PID" <<'PYEOF'
import os, sys
pid = sys.argv[1]
out = []
for tid in os.listdir(f"/proc/{pid}/task"):
    comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
    nice = int(open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()[16])
    out.append(f"{'worker' if comm.startswith('ckptconv-w') else 'other'}:{nice}")
print(" ".join(sorted(set(out))))
PYEOF
)
if [[ " $NICES " == *" other:5 "* ]] && [[ " $NICES " == *" worker:0 "* ]] &&
	[[ " $NICES " != *" worker:5 "* ]]; then
	pass "HTTP threads niced, workers not ($NICES)"
else
	fail "HTTP threads niced, workers not" "$NICES"
fi

HUGE=$(head -c 100000 /dev/zero | tr '\0' a)
api GET /healthz -H "X-Padding: $HUGE"
assert_eq "oversized request headers refused" 431 "$STATUS"
api GET /healthz
assert_eq "and the service carries on" 200 "$STATUS"
api DELETE "/v1/jobs/$A"
daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"

# Flags win over variables.
unset CKPTCONV_LISTEN CKPTCONV_STATE_DIR CKPTCONV_ALLOW_ROOT CKPTCONV_TOKEN_FILE CKPTCONV_MAX_RUNNING
export CKPTCONV_MAX_QUEUED=1
TOKEN=
rm -rf "$STATE"
daemon_start --max-queued 5
submit "slow job" "$DATA/hf" "$DATA/d" native '{"max_bytes_per_second": "1KB"}'
D=$JOB
submit "queued 1" "$DATA/hf" "$DATA/e" native
submit "queued 2: --max-queued 5 wins over CKPTCONV_MAX_QUEUED=1" "$DATA/hf" "$DATA/f" native
api DELETE "/v1/jobs/$D"
daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"

# Retention: finished records older than --retain-jobs are removed (the
# converted output stays).
daemon_start
submit "short job" "$DATA/hf" "$DATA/g" native
G=$JOB
expect_job "short job succeeds" "$G" succeeded 60
daemon_stop
sleep 1.2
daemon_start --retain-jobs 1
api GET "/v1/jobs/$G"
expect_error "expired record removed" 404 job_not_found
if [ ! -e "$STATE/jobs/$G.json" ] && [ ! -e "$STATE/jobs/$G.tensors" ] && [ -e "$DATA/g/model.safetensors" ]; then
	pass "record files gone, output kept"
else
	fail "record files gone, output kept" "$(ls "$STATE/jobs" "$DATA/g")"
fi
daemon_stop
finish
