#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_restart.sh: kill -9 of the daemon in the middle of converting a
# `fixture --preset mini --layers 2` checkpoint (throttled so the kill lands
# mid-job, after a periodic record write), then a restart on the same state
# dir: the finished job is listed as before, the queued job is still
# queued, and the interrupted job runs again from the start and ends
# succeeded with output byte-identical to an uninterrupted CLI conversion.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

expect_ok "fixture mini, 2 layers" "$CKPTCONV" fixture --preset mini --layers 2 "$DATA/mini"
copy_dir "$GOLDEN_DIR/tiny/hf" "$DATA/hf"

daemon_start --max-running 1
submit "small job" "$DATA/hf" "$DATA/small" native
DONE_JOB=$JOB
expect_job "small job succeeds" "$DONE_JOB" succeeded 60
DONE_FINISHED=$(job_field "$DONE_JOB" finished_at)

submit "mini job (throttled)" "$DATA/mini" "$DATA/mini-native" native '{"max_bytes_per_second": "250MB"}'
M=$JOB
submit "job queued behind it" "$DATA/hf" "$DATA/queued" native
Q=$JOB

# Kill once the running job's record shows progress (written every few
# seconds while it runs).
RECORD="$STATE/jobs/$M.json"
KILLED=no
for i in $(seq 600); do
	if grep -q '"state":"running"' "$RECORD" 2>/dev/null &&
		! grep -q '"bytes_done":0[,}]' "$RECORD" 2>/dev/null; then
		kill -9 "$DAEMON_PID"
		wait "$DAEMON_PID" 2>/dev/null || true
		KILLED=yes
		break
	fi
	sleep 0.05
done
assert_eq "killed mid-job, after a progress record" yes "$KILLED"
if [ ! -e "$DATA/mini-native/model.safetensors.index.json" ]; then
	pass "interrupted output does not look finished"
else
	fail "interrupted output does not look finished"
fi

daemon_start --max-running 1
api GET "/v1/jobs/$DONE_JOB"
assert_eq "finished job listed as before" "succeeded $DONE_FINISHED" "$(jget state) $(jget finished_at)"
assert_eq "queued job still queued" queued "$(job_state "$Q")"
api GET "/v1/jobs/$M"
assert_eq "interrupted job is back, restart counted" "1" "$(jget restarts)"
case "$(jget state)" in
queued | running) pass "interrupted job queued again ($(jget state))" ;;
*) fail "interrupted job queued again" "$(head -c 400 "$BODY")" ;;
esac
expect_job "interrupted job ends succeeded" "$M" succeeded 300
expect_job "queued job then succeeds" "$Q" succeeded 60
expect_ok "uninterrupted conversion by the CLI" "$CKPTCONV" convert --to native "$DATA/mini" "$TEST_TMP/mini-ref"
same_files "output identical to the uninterrupted run" "$TEST_TMP/mini-ref" "$DATA/mini-native"
listing_matches_output "per-tensor listing matches the output" "$M" "$DATA/mini-native"
if [ -z "$(find "$DATA/mini-native" -name '.ckptconv-tmp.*')" ]; then
	pass "no temporary output files left"
else
	fail "no temporary output files left" "$(ls -a "$DATA/mini-native")"
fi

daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"
finish
