#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_golden.sh: conversions through the API give the reference outputs
# of tests/golden (HF -> native, expert-parallel ranks, native -> HF),
# checked with `ckptconv verify`; each job's per-tensor listing agrees with
# the files it wrote; two jobs run at once on the shared pool; the event
# stream sends progress while a job runs, then its final state, then ends.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

copy_dir "$GOLDEN_DIR/tiny/hf" "$DATA/hf"
copy_dir "$GOLDEN_DIR/tiny/native" "$DATA/native"

daemon_start --max-running 2 --workers 2

# ---- the golden conversions ----------------------------------------------------
submit "HF -> native" "$DATA/hf" "$DATA/out-native" native
J_NATIVE=$JOB
submit "HF -> native, EP 2 rank 0" "$DATA/hf" "$DATA/out-ep0" native \
	'{"expert_parallel": {"size": 2, "rank": 0}}'
J_EP0=$JOB
submit "HF -> native, EP 2 rank 1" "$DATA/hf" "$DATA/out-ep1" native \
	'{"expert_parallel": {"size": 2, "rank": 1}}'
J_EP1=$JOB
submit "native -> HF" "$DATA/native" "$DATA/out-hf" hf
J_HF=$JOB

check_golden() {
	local name=$1 id=$2 dir=$3 golden=$4
	expect_job "$name succeeds" "$id" succeeded 120 || return 0
	expect_ok "$name equals golden/tiny/$golden" "$CKPTCONV" verify "$GOLDEN_DIR/tiny/$golden" "$dir"
	listing_matches_output "$name: per-tensor listing matches the output" "$id" "$dir"
	api GET "/v1/jobs/$id"
	if [ "$(jget progress.tensors_done)" = "$(jget progress.tensors_total)" ] &&
		[ "$(jget progress.percent)" = 100.0 ] && [ "$(jget result.tensors)" = "$(jget progress.tensors_total)" ] &&
		[ "$(jget error)" = null ] && [ "$(jget finished_at)" != null ]; then
		pass "$name: final progress and result"
	else
		fail "$name: final progress and result" "$(head -c 600 "$BODY")"
	fi
	# The result's bytes are tensor bytes, as progress counts them;
	# file_bytes the *.safetensors files' sizes, headers included.
	assert_eq "$name: result bytes are the tensor bytes progress counted" \
		"$(jget progress.bytes_total)" "$(jget result.bytes)"
	assert_eq "$name: result file_bytes are the *.safetensors files' bytes" \
		"$(cat "$dir"/*.safetensors | wc -c)" "$(jget result.file_bytes)"
}
check_golden "HF -> native" "$J_NATIVE" "$DATA/out-native" native
check_golden "EP rank 0" "$J_EP0" "$DATA/out-ep0" native-ep2-rank0
check_golden "EP rank 1" "$J_EP1" "$DATA/out-ep1" native-ep2-rank1
check_golden "native -> HF" "$J_HF" "$DATA/out-hf" hf-from-native

# ---- two jobs at once, one followed by its event stream --------------------------
SLOW='{"max_bytes_per_second": "40KB"}'
submit "throttled job P" "$DATA/hf" "$DATA/out-p" native "$SLOW"
P=$JOB
curl -sN --max-time 120 "$BASE/v1/jobs/$P/events" >"$TEST_TMP/events.txt" 2>/dev/null &
CURL_PID=$!
STREAM_START=$(date +%s%N)
submit "throttled job Q" "$DATA/hf" "$DATA/out-q" native "$SLOW"
Q=$JOB
BOTH=no
METRICS=no
for i in $(seq 300); do
	api GET '/v1/jobs?state=running'
	if grep -q "\"id\":\"$P\"" "$BODY" && grep -q "\"id\":\"$Q\"" "$BODY"; then
		BOTH=yes
		api GET /metrics
		grep -q '^ckptconv_jobs{state="running"} 2$' "$BODY" && METRICS=yes && break
	fi
	sleep 0.1
done
assert_eq "two jobs run at the same time" yes "$BOTH"
assert_eq "metrics see two running jobs" yes "$METRICS"
expect_job "job P succeeds" "$P" succeeded 120
expect_job "job Q succeeds" "$Q" succeeded 120
expect_ok "job P's output equals golden" "$CKPTCONV" verify "$GOLDEN_DIR/tiny/native" "$DATA/out-p"
expect_ok "job Q's output equals golden" "$CKPTCONV" verify "$GOLDEN_DIR/tiny/native" "$DATA/out-q"
same_files "both outputs byte-identical" "$DATA/out-p" "$DATA/out-q"

STREAM_RC=0
for i in $(seq 100); do
	kill -0 "$CURL_PID" 2>/dev/null || break
	sleep 0.1
done
wait "$CURL_PID" || STREAM_RC=$?
STREAM_MS=$((($(date +%s%N) - STREAM_START) / 1000000))
assert_eq "event stream ends by itself" 0 "$STREAM_RC"
if "$PY" - "$TEST_TMP/events.txt" "$P" "$STREAM_MS" >"$TEST_TMP/sse.out" 2>&1 <<'PYEOF'; then
import json, sys
text = open(sys.argv[1]).read()
events = []
for block in text.split("\n\n"):
    lines = [l for l in block.split("\n") if l and not l.startswith(":")]
    if not lines:
        continue
    kind = [l[7:] for l in lines if l.startswith("event: ")]
    data = [l[6:] for l in lines if l.startswith("data: ")]
    assert len(kind) == 1 and len(data) == 1, block
    events.append((kind[0], json.loads(data[0])))
kinds = [k for k, _ in events]
assert kinds, "no events"
assert kinds[-1] == "state", f"last event is {kinds[-1]}"
assert kinds.count("state") == 1, kinds
assert "progress" in kinds, kinds
final = events[-1][1]
assert final["id"] == sys.argv[2] and final["state"] == "succeeded", final
done = [d["bytes_done"] for k, d in events if k == "progress"]
assert done == sorted(done), f"progress goes backwards: {done}"
# At most one progress event per 500 ms (plus the first).
assert len(done) <= int(sys.argv[3]) / 500 + 2, f"{len(done)} progress events in {sys.argv[3]} ms"
PYEOF
	pass "event stream: progress events, then one final state event"
else
	fail "event stream: progress events, then one final state event" "$(tail -3 "$TEST_TMP/sse.out")" \
		"$(head -c 300 "$TEST_TMP/events.txt")"
fi

# A finished job's stream is its final state at once.
run curl -sN --max-time 10 "$BASE/v1/jobs/$J_NATIVE/events"
if [ "$RUN_RC" = 0 ] && [ "$(grep -c '^event: state$' "$TEST_TMP/run.out")" = 1 ] &&
	! grep -q '^event: progress' "$TEST_TMP/run.out"; then
	pass "finished job's stream: one state event and the end"
else
	fail "finished job's stream: one state event and the end" "exit $RUN_RC" "$(head -c 300 "$TEST_TMP/run.out")"
fi
api GET /v1/jobs/0123456789abcdef/events
expect_error "stream of an unknown job" 404 job_not_found

daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"
finish
