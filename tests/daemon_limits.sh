#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_limits.sh: what bounds the daemon's memory and state dir as jobs
# come and go.  Submissions are read and planned on the registry's
# submission threads: one whose source hangs (an S3 endpoint that never
# answers) holds a place in the queue while /healthz, the job list and
# other requests are answered at once, even with one HTTP thread.  Dry
# runs count toward --max-queued like any job.  Finished records are
# pruned, oldest first, beyond --max-finished-jobs and after
# --job-retention: the pruned jobs answer 404 and their files leave the
# state dir.  A SIGTERM while a submission hangs answers it 503 and exits
# within the shutdown timeout.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

copy_dir "$GOLDEN_DIR/tiny/hf" "$DATA/hf"

# records: the number of job records in the state dir.
records() {
	find "$STATE/jobs" -maxdepth 1 -name '*.json' | wc -l
}

dry_run() {
	post_job "$(job_json "$DATA/hf" "$DATA/dry-$1" native '{"dry_run": true}')"
}

# ---- pruning by number ----------------------------------------------------------------
daemon_start --max-finished-jobs 5 --job-retention 1h
IDS=()
ok=0
for i in $(seq 12); do
	dry_run "$i"
	[ "$STATUS" = 201 ] && [ "$(jget state)" = succeeded ] && ok=$((ok + 1))
	IDS+=("$(jget id)")
done
assert_eq "12 dry runs accepted and finished" 12 "$ok"
api GET '/v1/jobs?limit=100'
assert_eq "5 finished records kept: the newest" "5 ${IDS[11]} ${IDS[7]}" \
	"$(jget jobs.#) $(jget jobs.0.id) $(jget jobs.4.id)"
api GET "/v1/jobs/${IDS[6]}"
expect_error "the newest pruned job answers 404" 404 job_not_found
api GET "/v1/jobs/${IDS[0]}"
expect_error "the oldest job answers 404" 404 job_not_found
assert_eq "the state dir holds 5 records" 5 "$(records)"
assert_eq "and 5 tensor listings" 5 "$(find "$STATE/jobs" -maxdepth 1 -name '*.tensors' | wc -l)"
# A real conversion counts among the finished records too.
submit "a conversion" "$DATA/hf" "$DATA/real" native
REAL=$JOB
expect_job "the conversion succeeds" "$REAL" succeeded 60
api GET "/v1/jobs/${IDS[7]}"
expect_error "its finishing pruned the oldest dry run" 404 job_not_found
assert_eq "still 5 records" 5 "$(records)"
if [ -e "$DATA/real/model.safetensors" ]; then pass "outputs are never pruned"; else
	fail "outputs are never pruned"; fi
daemon_stop
# The limit holds across a restart with a smaller one.
daemon_start --max-finished-jobs 2 --job-retention 1h
api GET '/v1/jobs?limit=100'
assert_eq "restarted with --max-finished-jobs 2: the 2 newest remain" "2 $REAL" \
	"$(jget jobs.#) $(jget jobs.0.id)"
assert_eq "the state dir shrank to 2 records" 2 "$(records)"
daemon_stop

# ---- pruning by age -------------------------------------------------------------------
rm -rf "$STATE"
daemon_start --job-retention 4
dry_run old
OLD=$(jget id)
api GET "/v1/jobs/$OLD"
assert_eq "a fresh record is kept" 200 "$STATUS"
sleep 2.5
dry_run newer
NEWER=$(jget id)
for i in $(seq 100); do
	api GET "/v1/jobs/$OLD"
	[ "$STATUS" = 404 ] && break
	sleep 0.1
done
expect_error "a record older than --job-retention 4 is removed" 404 job_not_found
if [ ! -e "$STATE/jobs/$OLD.json" ] && [ ! -e "$STATE/jobs/$OLD.tensors" ]; then
	pass "and its files left the state dir"
else
	fail "and its files left the state dir" "$(ls "$STATE/jobs")"
fi
api GET "/v1/jobs/$NEWER"
assert_eq "the newer record is still there" 200 "$STATUS"
daemon_stop

# ---- submissions are prepared off the HTTP threads --------------------------------------
# An S3 endpoint that accepts connections and never answers.
STALL_PY=$TEST_TMP/stall.py
cat >"$STALL_PY" <<'PYEOF'
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
held = []
while True:
    c, _ = s.accept()
    held.append(c)
PYEOF
STALL_PID=
stop_stall() {
	if [ -n "$STALL_PID" ]; then
		kill "$STALL_PID" 2>/dev/null || true
		wait "$STALL_PID" 2>/dev/null || true
		STALL_PID=
	fi
}
CLEANUP_HOOKS+=(stop_stall)
"$PY" "$STALL_PY" "$TEST_TMP/stall.port" &
STALL_PID=$!
await_port_file "$TEST_TMP/stall.port" "the stalling S3 stand-in"

rm -rf "$STATE"
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test-secret AWS_REGION=us-east-1 \
	AWS_ENDPOINT_URL_S3="http://127.0.0.1:$(cat "$TEST_TMP/stall.port")" \
	CKPTCONV_S3_MAX_ATTEMPTS=2 CKPTCONV_S3_STALL_TIMEOUT=60 \
	daemon_start --http-threads 1 --max-queued 2 --allow-s3 s3://stall/ --shutdown-timeout 3
# Two submissions whose source never answers, each waiting in the background.
for n in 1 2; do
	curl -s -o "$TEST_TMP/stalled$n.body" -w '%{http_code}' --max-time 30 \
		-H 'Content-Type: application/json' \
		--data-binary "$(job_json "s3://stall/src$n/" "$DATA/out-stall$n" native)" \
		"$BASE/v1/jobs" >"$TEST_TMP/stalled$n.status" 2>/dev/null &
	eval "STALLED$n=\$!"
done
sleep 1
T0=$(date +%s.%N)
api GET /healthz
H=$STATUS
api GET /v1/jobs
L=$STATUS
T1=$(date +%s.%N)
assert_eq "while two sources hang, /healthz and the job list answer (one HTTP thread)" "200 200" "$H $L"
if "$PY" -c "import sys; sys.exit(0 if float(sys.argv[2]) - float(sys.argv[1]) < 5 else 1)" "$T0" "$T1"; then
	pass "and answer at once"
else
	fail "and answer at once" "took $T0 .. $T1"
fi
assert_eq "the stalled submissions are still waiting" "yes yes" \
	"$(kill -0 "$STALLED1" 2>/dev/null && echo yes) $(kill -0 "$STALLED2" 2>/dev/null && echo yes)"
dry_run counted
expect_error "submissions being prepared hold their places in --max-queued 2" 429 queue_full
post_job "$(job_json "$DATA/hf" "$DATA/x" native '{"exclude": "(a)\\1"}')"
expect_error "a bad request is still answered at once" 400 invalid_exclude options.exclude

# SIGTERM while they hang: answered 503, exit within --shutdown-timeout 3.
kill -TERM "$DAEMON_PID"
daemon_wait_exit 10
assert_eq "the daemon exits though a submission hangs (status 1: stopped the hard way)" 1 "$DAEMON_RC"
wait "$STALLED1" "$STALLED2" 2>/dev/null
assert_eq "the hanging submissions were answered 503" "503 503" \
	"$(cat "$TEST_TMP/stalled1.status") $(cat "$TEST_TMP/stalled2.status")"
if grep -q '"code":"draining"' "$TEST_TMP/stalled1.body"; then
	pass "with the code draining"
else
	fail "with the code draining" "$(cat "$TEST_TMP/stalled1.body")"
fi
stop_stall
finish
