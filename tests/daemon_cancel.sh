#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_cancel.sh: DELETE of a job in the middle of its conversion (a
# fixture throttled with max_bytes_per_second so some tensors are done and
# others pending): the answer is 202, workers stop, the job ends
# "cancelled" with a reason, its per-tensor listing keeps the states it
# reached, and its destination holds nothing that looks finished and no
# temporary files.  The service carries on: the same conversion then
# succeeds.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

expect_ok "fixture" "$CKPTCONV" fixture --preset tiny "$DATA/src"
daemon_start --max-running 1

submit "throttled job" "$DATA/src" "$DATA/out" native '{"max_bytes_per_second": "16KB"}'
J=$JOB
if wait_progress "$J"; then
	pass "job is mid-way"
else
	fail "job is mid-way" "state $(job_state "$J")"
fi
api GET "/v1/jobs/$J/tensors?state=done&limit=1"
DONE_BEFORE=$(jget total)
api DELETE "/v1/jobs/$J"
# The job as it is when the answer is made: still running with the
# cancellation pending, or already stopped if a worker was quicker.
case "$STATUS $(jget state) $(jget cancel_requested)" in
"202 running true" | "202 cancelled true") pass "DELETE answers 202 with the job, cancel_requested" ;;
*) fail "DELETE answers 202 with the job, cancel_requested" "$STATUS $(jget state) $(jget cancel_requested)" ;;
esac
expect_job "job ends cancelled" "$J" cancelled 30
api GET "/v1/jobs/$J"
assert_eq "cancelled job's error" "cancelled" "$(jget error.code)"
assert_eq "cancelled job has no result" null "$(jget result)"
TOTAL=$(jget progress.tensors_total)
DONE=$(jget progress.tensors_done)
if [ "$DONE" -ge "$DONE_BEFORE" ] && [ "$DONE" -gt 0 ] && [ "$DONE" -lt "$TOTAL" ]; then
	pass "cancelled mid-job ($DONE of $TOTAL tensors done)"
else
	fail "cancelled mid-job" "done $DONE (before cancel $DONE_BEFORE) of $TOTAL"
fi
api GET "/v1/jobs/$J/tensors?state=pending&limit=10000"
PENDING=$(jget total)
api GET "/v1/jobs/$J/tensors?state=done&limit=10000"
assert_eq "listing keeps the states reached" "$TOTAL" "$((PENDING + $(jget total)))"
no_finished_output "nothing finished or temporary left" "$DATA/out"

# The service carries on.
submit "same conversion again" "$DATA/src" "$DATA/out" native
expect_job "it succeeds" "$JOB" succeeded 60
expect_ok "reference conversion by the CLI" "$CKPTCONV" convert --to native "$DATA/src" "$TEST_TMP/ref"
same_files "the job's output equals the CLI's" "$TEST_TMP/ref" "$DATA/out"

daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"
finish
