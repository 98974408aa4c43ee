#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_interrupted.sh: a job whose run is cut short by kill -9 of the
# daemon four times (each time after it published a shard) ends failed with
# "interrupted" at the next start, and its destination is cleaned as a
# failed job's is: its shards, copied config.json and reserved temporary
# files go, a file the destination held before stays.  The daemon is
# healthy, and the same job then succeeds with output identical to the
# CLI's.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

expect_ok "fixture tiny" "$CKPTCONV" fixture --preset tiny "$DATA/src"
mkdir -p "$DATA/out"
echo "keep" >"$DATA/out/notes.txt"
OPTIONS='{"max_bytes_per_second": "16KB", "max_shard_size": "40KB", "overwrite": true}'

daemon_start --max-running 1
submit "throttled job" "$DATA/src" "$DATA/out" native "$OPTIONS"
J=$JOB
RECORD="$STATE/jobs/$J.json"

# kill_mid_run: kill -9 once the record says the job runs with its
# destination claimed and a shard of it is published.
kill_mid_run() {
	local i
	for i in $(seq 600); do
		if grep -q '"state":"running"' "$RECORD" 2>/dev/null &&
			grep -q '"claimed":true' "$RECORD" 2>/dev/null &&
			ls "$DATA"/out/model-*-of-*.safetensors >/dev/null 2>&1; then
			kill -9 "$DAEMON_PID"
			wait "$DAEMON_PID" 2>/dev/null || true
			return 0
		fi
		sleep 0.05
	done
	return 1
}

for round in 1 2 3 4; do
	if kill_mid_run; then
		pass "kill -9 $round mid-run"
	else
		fail "kill -9 $round mid-run" "$(cat "$RECORD")"
		finish
	fi
	[ "$round" -lt 4 ] && daemon_start --max-running 1
done
if ls "$DATA"/out/model-*-of-*.safetensors >/dev/null 2>&1 &&
	[ -n "$(find "$DATA/out" -name '.ckptconv-tmp.*')" ] && [ -e "$DATA/out/config.json" ]; then
	pass "the last run left a shard, config.json and temporary files"
else
	fail "the last run left a shard, config.json and temporary files" "$(ls -a "$DATA/out")"
fi

daemon_start --max-running 1
api GET "/v1/jobs/$J"
assert_eq "the job failed as interrupted after 4 restarts" "failed interrupted 4" \
	"$(jget state) $(jget error.code) $(jget restarts)"
assert_eq "its destination holds only what was there before" "notes.txt" \
	"$(ls -A "$DATA/out" | tr '\n' ' ' | sed 's/ $//')"
assert_eq "that file is intact" keep "$(cat "$DATA/out/notes.txt")"
api GET /healthz
assert_eq "the daemon is healthy" "200 ok" "$STATUS $(jget status)"

submit "the same job again, unthrottled" "$DATA/src" "$DATA/out" native '{"overwrite": true}'
expect_job "it succeeds" "$JOB" succeeded 60
rm "$DATA/out/notes.txt"
expect_ok "reference conversion by the CLI" "$CKPTCONV" convert --to native "$DATA/src" "$TEST_TMP/ref"
same_files "output identical to the CLI's" "$TEST_TMP/ref" "$DATA/out"

daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"
finish
