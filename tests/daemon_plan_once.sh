#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_plan_once.sh: the daemon reads and plans a job's source once per
# start.  A queued job keeps the plan its submission made and holds no
# descriptor of its source while it waits; its runner converts from that
# plan without reading the source's headers again.  A source whose files
# changed (one removed, or a shard's header overwritten in place, same
# size: another mtime and ctime) is planned again before it runs: the
# output follows the source as it is then, and the overwritten header
# fails the job (header_not_object naming the shard) with nothing written.
# After a restart a queued job is planned again, once: the same overwritten
# header now fails it (header_not_object naming the shard), and an
# untouched one converts.  The daemon logs one "job planned" line per plan.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

SLOW='{"max_bytes_per_second": "8KB"}'
SHARD=model-00002-of-00005.safetensors

expect_ok "fixture tiny" "$CKPTCONV" fixture --preset tiny "$DATA/slow-src"
expect_ok "reference conversion by the CLI" "$CKPTCONV" convert --to native \
	"$GOLDEN_DIR/tiny/hf" "$TEST_TMP/ref"
for d in kept rewritten changed restarted-ok restarted-bad; do
	copy_dir "$GOLDEN_DIR/tiny/hf" "$DATA/$d"
done
echo "notes" >"$DATA/changed/NOTES.md"

# plans JOB: how many "job planned" lines the current daemon logged for JOB.
plans() {
	grep '"msg":"job planned"' "$DAEMON_LOG" | grep -c "\"job\":\"$1\"" || true
}

# open_under DIR: how many of the daemon's descriptors refer to DIR or below.
open_under() {
	local fd n=0
	for fd in /proc/"$DAEMON_PID"/fd/*; do
		case "$(readlink "$fd" 2>/dev/null)" in
		"$1" | "$1"/*) n=$((n + 1)) ;;
		esac
	done
	echo "$n"
}

# overwrite_header DIR: the first byte of the shard's header JSON becomes
# 'X'; the file keeps its size, so the source's listing does not change.
overwrite_header() {
	printf 'X' | dd of="$1/$SHARD" bs=1 seek=8 conv=notrunc status=none
}

# hold_runner DST: a throttled job (SLOW_JOB) that keeps the one runner
# busy while others queue behind it.
hold_runner() {
	submit "throttled job holding the runner" "$DATA/slow-src" "$1" native "$SLOW"
	SLOW_JOB=$JOB
	wait_progress "$SLOW_JOB" 30 || true
}

daemon_start --max-running 1
hold_runner "$DATA/slow-out"
submit "queued job" "$DATA/kept" "$DATA/kept-out" native
KEPT=$JOB
submit "queued job whose shard will be rewritten" "$DATA/rewritten" "$DATA/rewritten-out" native
REWRITTEN=$JOB
submit "queued job whose source will change" "$DATA/changed" "$DATA/changed-out" native
CHANGED=$JOB
assert_eq "all wait behind the throttled job" "queued queued queued" \
	"$(job_state "$KEPT") $(job_state "$REWRITTEN") $(job_state "$CHANGED")"
assert_eq "each was planned once, at submission" "1 1 1" \
	"$(plans "$KEPT") $(plans "$REWRITTEN") $(plans "$CHANGED")"
if [ "$(open_under "$DATA/slow-src")" -gt 0 ]; then
	pass "the running job's source is open (the descriptor count sees it)"
else
	fail "the running job's source is open (the descriptor count sees it)" \
		"$(ls -l /proc/"$DAEMON_PID"/fd)"
fi
assert_eq "queued jobs hold no descriptor of their sources" "0 0 0" \
	"$(open_under "$DATA/kept") $(open_under "$DATA/rewritten") $(open_under "$DATA/changed")"

overwrite_header "$DATA/rewritten"
expect_fail "the overwritten header is refused by a fresh read" header_not_object "$SHARD" \
	"$CKPTCONV" inspect "$DATA/rewritten"
rm "$DATA/changed/NOTES.md"

api DELETE "/v1/jobs/$SLOW_JOB"
expect_job "the throttled job is cancelled" "$SLOW_JOB" cancelled 30
expect_job "the queued job succeeds from its submission's plan" "$KEPT" succeeded 60
same_files "... its output equals the CLI's conversion of the original" "$TEST_TMP/ref" \
	"$DATA/kept-out"
assert_eq "... planned once in all" 1 "$(plans "$KEPT")"
listing_matches_output "... its per-tensor listing matches the output" "$KEPT" "$DATA/kept-out"

expect_job "the job whose shard was rewritten in place fails" "$REWRITTEN" failed 60
if grep '"msg":"job source changed since it was planned; planning again"' "$DAEMON_LOG" |
	grep -q "\"job\":\"$REWRITTEN\""; then
	pass "... planned again before it ran, saying that its source changed"
else
	fail "... planned again before it ran, saying that its source changed" \
		"$(grep "$REWRITTEN" "$DAEMON_LOG" | tail -5)"
fi
assert_eq "... with header_not_object" header_not_object "$(job_field "$REWRITTEN" error.code)"
case "$(job_field "$REWRITTEN" error.message)" in
*"$SHARD"*) pass "... naming the shard" ;;
*) fail "... naming the shard" "$(job_field "$REWRITTEN" error.message)" ;;
esac
if [ ! -e "$DATA/rewritten-out" ]; then
	pass "... and wrote nothing"
else
	fail "... and wrote nothing" "$(ls -a "$DATA/rewritten-out")"
fi

expect_job "the job whose source changed succeeds" "$CHANGED" succeeded 60
assert_eq "... planned again before it ran" 2 "$(plans "$CHANGED")"
if grep '"msg":"job source changed since it was planned; planning again"' "$DAEMON_LOG" |
	grep -q "\"job\":\"$CHANGED\""; then
	pass "... saying that its source changed"
else
	fail "... saying that its source changed" "$(grep "$CHANGED" "$DAEMON_LOG" | tail -5)"
fi
same_files "... its output is the source as it is now (no NOTES.md)" "$TEST_TMP/ref" \
	"$DATA/changed-out"

# ---- a restart plans queued jobs again, once ------------------------------------
hold_runner "$DATA/slow-out-2"
submit "queued job, untouched" "$DATA/restarted-ok" "$DATA/restarted-ok-out" native
R_OK=$JOB
submit "queued job, header to be overwritten" "$DATA/restarted-bad" "$DATA/restarted-bad-out" native
R_BAD=$JOB
assert_eq "planned once before the restart" "1 1" "$(plans "$R_OK") $(plans "$R_BAD")"
overwrite_header "$DATA/restarted-bad"
daemon_stop
assert_eq "drained and stopped" 0 "$DAEMON_RC"

daemon_start --max-running 2
expect_job "after the restart the untouched job succeeds" "$R_OK" succeeded 60
same_files "... with the CLI's output" "$TEST_TMP/ref" "$DATA/restarted-ok-out"
assert_eq "... planned once in this start" 1 "$(plans "$R_OK")"
expect_job "the overwritten header fails the other once planned again" "$R_BAD" failed 60
assert_eq "... with header_not_object" header_not_object "$(job_field "$R_BAD" error.code)"
case "$(job_field "$R_BAD" error.message)" in
*"$SHARD"*) pass "... naming the shard" ;;
*) fail "... naming the shard" "$(job_field "$R_BAD" error.message)" ;;
esac
if [ ! -e "$DATA/restarted-bad-out" ]; then
	pass "... and wrote nothing"
else
	fail "... and wrote nothing" "$(ls -a "$DATA/restarted-bad-out")"
fi
api DELETE "/v1/jobs/$SLOW_JOB"
expect_job "the throttled job is cancelled" "$SLOW_JOB" cancelled 30
api GET /healthz
assert_eq "the daemon stays healthy" 200 "$STATUS"

daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"
finish
