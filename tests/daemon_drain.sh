#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_drain.sh: SIGTERM while a job runs and another waits.  During the
# drain readiness answers 503, new jobs are refused with 503 "draining" and
# Retry-After, reads still work and open event streams end with a
# "shutdown" event saying the job stays queued; the running
# conversion stops at a safe point and both jobs are recorded as queued; the
# process exits 0 within --shutdown-timeout.  The next start runs both jobs
# to success.  SIGINT drains the same way.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

copy_dir "$GOLDEN_DIR/tiny/hf" "$DATA/hf"
TIMEOUT=10

daemon_start --max-running 1 --drain-grace 5 --shutdown-timeout "$TIMEOUT"
submit "running job" "$DATA/hf" "$DATA/r" native '{"max_bytes_per_second": "20KB"}'
R=$JOB
submit "queued job" "$DATA/hf" "$DATA/q" native
Q=$JOB
if wait_progress "$R"; then
	pass "job R is mid-way"
else
	fail "job R is mid-way" "state $(job_state "$R")"
fi
curl -sN --max-time 60 "$BASE/v1/jobs/$R/events" >"$TEST_TMP/events.txt" 2>/dev/null &
CURL_PID=$!
curl -sN --max-time 60 "$BASE/v1/jobs/$Q/events" >"$TEST_TMP/events_q.txt" 2>/dev/null &
CURL_Q_PID=$!
sleep 0.3

START_NS=$(date +%s%N)
kill -TERM "$DAEMON_PID"
sleep 0.2
# Plain status reads first: the drain grace is short.
api GET "/v1/jobs/$Q"
READ_STATUS=$STATUS
api GET /healthz
HEALTH_STATUS=$STATUS
api GET /readyz
cp "$BODY" "$TEST_TMP/readyz.json"
cp "$HEADERS" "$TEST_TMP/readyz.headers"
post_job "$(job_json "$DATA/hf" "$DATA/new" native)"
expect_error "new job while draining" 503 draining
assert_eq "draining 503 carries Retry-After" yes "$([ -n "$(header Retry-After)" ] && echo yes)"
cp "$TEST_TMP/readyz.json" "$BODY"
cp "$TEST_TMP/readyz.headers" "$HEADERS"
STATUS=$(head -1 "$HEADERS" | cut -d' ' -f2)
expect_error "readyz while draining" 503 not_ready
assert_eq "readyz 503 carries Retry-After" yes "$([ -n "$(header Retry-After)" ] && echo yes)"
assert_eq "reads still answered while draining" 200 "$READ_STATUS"
assert_eq "healthz still 200 while draining" 200 "$HEALTH_STATUS"
if [ -e "$DATA/new" ]; then
	fail "refused job wrote nothing"
else
	pass "refused job wrote nothing"
fi

daemon_wait_exit $((TIMEOUT + 5)) || true
ELAPSED_MS=$((($(date +%s%N) - START_NS) / 1000000))
assert_eq "exit status after a drain" 0 "$DAEMON_RC"
if [ "$ELAPSED_MS" -le $((TIMEOUT * 1000)) ]; then
	pass "exited within --shutdown-timeout (${ELAPSED_MS} ms)"
else
	fail "exited within --shutdown-timeout" "${ELAPSED_MS} ms"
fi
STREAM_RC=0
for i in $(seq 50); do
	kill -0 "$CURL_PID" 2>/dev/null || break
	sleep 0.1
done
kill "$CURL_PID" 2>/dev/null && STREAM_RC=killed
kill "$CURL_Q_PID" 2>/dev/null && STREAM_RC=killed
wait "$CURL_PID" "$CURL_Q_PID" 2>/dev/null || true
assert_eq "open event streams ended with the service" 0 "$STREAM_RC"
# last_event FILE: the last event of a stream, as "NAME id state".
last_event() {
	"$PY" - "$1" <<'PYEOF'
import json, sys
events, name, data = [], None, None
for line in open(sys.argv[1]).read().split("\n"):
    if line.startswith("event: "):
        name = line[7:]
    elif line.startswith("data: "):
        data = json.loads(line[6:])
    elif line == "" and name:
        events.append((name, data))
        name = None
if events:
    name, data = events[-1]
    print(name, data.get("id"), data.get("state"), "message" if data.get("message") else "")
else:
    print("none")
PYEOF
}
assert_eq "the running job's stream ends with a shutdown event: queued again" \
	"shutdown $R queued message" "$(last_event "$TEST_TMP/events.txt")"
assert_eq "the queued job's stream ends with a shutdown event: still queued" \
	"shutdown $Q queued message" "$(last_event "$TEST_TMP/events_q.txt")"
for id in "$R" "$Q"; do
	if grep -q '"state":"queued"' "$STATE/jobs/$id.json"; then
		pass "job $id recorded as queued"
	else
		fail "job $id recorded as queued" "$(head -c 300 "$STATE/jobs/$id.json")"
	fi
done
no_finished_output "stopped job left nothing finished" "$DATA/r"
if grep -q '"msg":"draining' "$DAEMON_LOG" && grep -q '"msg":"stopped"' "$DAEMON_LOG"; then
	pass "drain logged"
else
	fail "drain logged" "$(tail -3 "$DAEMON_LOG")"
fi

daemon_start --max-running 1
api GET "/v1/jobs/$R"
assert_eq "a drained job is not counted as a crash restart" 0 "$(jget restarts)"
expect_job "drained job runs again and succeeds" "$R" succeeded 120
expect_job "queued job succeeds" "$Q" succeeded 60
expect_ok "drained job's output equals golden" "$CKPTCONV" verify "$GOLDEN_DIR/tiny/native" "$DATA/r"
expect_ok "queued job's output equals golden" "$CKPTCONV" verify "$GOLDEN_DIR/tiny/native" "$DATA/q"

kill -INT "$DAEMON_PID"
daemon_wait_exit 15 || true
assert_eq "SIGINT drains and exits 0" 0 "$DAEMON_RC"
finish
