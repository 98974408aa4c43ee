#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_jobs.sh: `ckptconv jobs` against a live daemon with a token.  The
# server and token come from flags or CKPTCONV_SERVER / CKPTCONV_TOKEN_FILE
# (or CKPTCONV_LISTEN); submit takes convert's options and sends them as
# the job's, prints the id, and with --wait follows the job to its end
# (exit status from its outcome, output equal to `convert`'s); get, list
# (filters, pages), watch (text and --json events), cancel (queued,
# running, finished); every error has its exact code and exit status, and
# --json prints the API's JSON or {"error"}.  --wait carries on across a
# daemon restart.  The daemon stays healthy throughout.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

# The client honours proxies from the environment: none here.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
unset CKPTCONV_SERVER CKPTCONV_TOKEN_FILE CKPTCONV_LISTEN

TOKEN_FILE="$TEST_TMP/token"
printf 'cli-jobs-%s\n' "$RANDOM$RANDOM" >"$TOKEN_FILE"
expect_ok "fixture" "$CKPTCONV" fixture --preset tiny "$DATA/src"
expect_ok "reference conversion by convert" "$CKPTCONV" convert --to native "$DATA/src" "$TEST_TMP/ref"
daemon_start --max-running 1 --token-file "$TOKEN_FILE"
TOKEN=$(cat "$TOKEN_FILE")
J=("$CKPTCONV" jobs)
S=(--server "$BASE" --token-file "$TOKEN_FILE")
ID_RE='^[0-9a-f]{16}$'

# json_of FILE PATH: a value of the JSON in FILE.
json_of() { jget "$2" "$1"; }

# ---- usage ----

# expect_usage NAME MESSAGE CMD...: exit 2 and, first on stderr, the line
# "ckptconv: usage_error: MESSAGE" (MESSAGE a prefix of the rest).
expect_usage() {
	local name=$1 message=$2 line
	shift 2
	expect_exit "$name: exit 2" 2 "$@" || return 1
	line=$(head -1 "$TEST_TMP/run.err")
	if [[ "$line" == "ckptconv: usage_error: $message"* ]]; then
		pass "$name: usage_error, $message"
	else
		fail "$name: usage_error, $message" "$line"
	fi
}

expect_ok "jobs --help" "${J[@]}" --help
grep -q 'ckptconv jobs submit' "$TEST_TMP/run.out" && grep -q 'CKPTCONV_TOKEN_FILE' "$TEST_TMP/run.out" &&
	pass "the help names the subcommands and the variables" || fail "the help names the subcommands and the variables"
expect_ok "convert --help" "$CKPTCONV" convert --help
CONVERT_OPTIONS=$(grep -o '^  --[a-z0-9-]*' "$TEST_TMP/run.out" | tr -d ' ' | sort -u)
expect_ok "jobs submit --help" "${J[@]}" submit --help
MISSING=
for option in $CONVERT_OPTIONS; do
	case "$option" in
	--threads | --no-fsync) grep -q -- "^($option and \|^(--threads and $option" "$TEST_TMP/run.out" ||
		MISSING+=" $option(refusal)" ;;
	*) grep -q -- "^  $option[ ,]" "$TEST_TMP/run.out" || grep -q -- ", $option " "$TEST_TMP/run.out" ||
		MISSING+=" $option" ;;
	esac
done
assert_eq "submit's help lists every one of convert's $(wc -w <<<"$CONVERT_OPTIONS") options (--threads and --no-fsync as refused)" \
	"" "$MISSING"
expect_usage "jobs without a subcommand" "expected a subcommand: submit, get, list, watch or cancel" "${J[@]}"
expect_usage "an unknown subcommand" "unknown subcommand 'frobnicate'" "${J[@]}" frobnicate
expect_usage "submit without --to" "--to native|hf is required (see 'ckptconv jobs submit --help')" \
	"${J[@]}" submit "${S[@]}" "$DATA/src" "$DATA/x"
expect_usage "submit --threads" "--threads is not a job option" \
	"${J[@]}" submit "${S[@]}" --to native --threads 2 "$DATA/src" "$DATA/x"
expect_usage "submit --no-fsync" "--no-fsync is not a job option: a daemon always syncs" \
	"${J[@]}" submit "${S[@]}" --to native --no-fsync "$DATA/src" "$DATA/x"
# --dtype with --to hf is for consolidating a sharded checkpoint: the
# daemon refuses it for this one when it plans the job.
if expect_exit "submit --dtype with --to hf (not a sharded source): exit 2" 2 \
	"${J[@]}" submit "${S[@]}" --to hf --dtype f32 "$DATA/src" "$DATA/x"; then
	assert_eq "submit --dtype with --to hf: the daemon's refusal" \
		"ckptconv: invalid_option: a dtype applies only to conversions to native and to consolidations of a sharded checkpoint (to hf keeps an HF or native checkpoint's dtypes)" \
		"$(head -1 "$TEST_TMP/run.err")"
fi
expect_usage "submit --label without =" "--label wants NAME=VALUE, not 'team'" \
	"${J[@]}" submit "${S[@]}" --to native --label team "$DATA/src" "$DATA/x"
expect_usage "list --state bogus" "--state wants queued, running, succeeded, failed or cancelled, not 'bogus'" \
	"${J[@]}" list "${S[@]}" --state bogus
expect_usage "list --limit 0" "--limit wants a number from 1 to 1000, not '0'" "${J[@]}" list "${S[@]}" --limit 0
expect_usage "get without an id" "expected one job ID, got 0 arguments" "${J[@]}" get "${S[@]}"
expect_exit "--json usage error: exit 2" 2 "${J[@]}" list "${S[@]}" --json --limit 0
assert_eq "--json usage error is JSON on stdout" usage_error "$(json_of "$TEST_TMP/run.out" error.code)"
expect_usage "a server that is not http(s)" "the server ftp://127.0.0.1/ is not an http:// or https:// URL" \
	"${J[@]}" list --server ftp://127.0.0.1/ --token-file "$TOKEN_FILE"
expect_usage "a missing token file" "token file $TEST_TMP/nope" \
	"${J[@]}" list --server "$BASE" --token-file "$TEST_TMP/nope"
api GET /v1/jobs
assert_eq "usage errors created no job" 0 "$(jget jobs.#)"

# ---- server and token ----

expect_fail "no token" unauthorized "" "${J[@]}" list --server "$BASE"
printf 'wrong\n' >"$TEST_TMP/wrong-token"
expect_fail "a wrong token" unauthorized "" "${J[@]}" list --server "$BASE" --token-file "$TEST_TMP/wrong-token"
expect_ok "--server and --token-file" "${J[@]}" list "${S[@]}"
expect_ok "CKPTCONV_SERVER and CKPTCONV_TOKEN_FILE" env CKPTCONV_SERVER="$BASE" CKPTCONV_TOKEN_FILE="$TOKEN_FILE" \
	"${J[@]}" list
expect_ok "the server from CKPTCONV_LISTEN's wildcard address" env CKPTCONV_LISTEN="0.0.0.0:$DAEMON_PORT" \
	CKPTCONV_TOKEN_FILE="$TOKEN_FILE" "${J[@]}" list
expect_ok "--server wins over CKPTCONV_SERVER" env CKPTCONV_SERVER=http://127.0.0.1:9 \
	CKPTCONV_TOKEN_FILE="$TOKEN_FILE" "${J[@]}" list --server "$BASE"
DEAD_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
expect_fail "a server that does not answer" server_unreachable "127.0.0.1:$DEAD_PORT" \
	"${J[@]}" list --server "http://127.0.0.1:$DEAD_PORT" --token-file "$TOKEN_FILE"

# ---- submit ----

expect_ok "submit" "${J[@]}" submit "${S[@]}" --to native --max-shard-size 100KB --exclude 'lm_head' \
	--label team=nlp --label run=7 "$DATA/src" "$DATA/out-a"
A=$(run_out)
[[ "$A" =~ $ID_RE ]] && pass "submit prints the job id" || fail "submit prints the job id" "$A"
api GET "/v1/jobs/$A"
assert_eq "convert's options became the job's" "native 100000 lm_head nlp 7" \
	"$(jget to) $(jget options.max_shard_size) $(jget options.exclude) $(jget labels.team) $(jget labels.run)"
expect_job "the job succeeds" "$A" succeeded 60
expect_ok "submit --dry-run --ep-size 2 --ep-rank 1 --dtype f32 --partition 0/2 --overwrite --json" \
	"${J[@]}" submit "${S[@]}" --json --to native --dry-run --ep-size 2 --ep-rank 1 --dtype f32 \
	--partition 0/2 --overwrite --max-rate 1MB "$DATA/src" "$DATA/out-dry"
DRY=$(json_of "$TEST_TMP/run.out" id)
assert_eq "--json prints the created job with every option" "true 2 1 f32 0 2 true 1000000" \
	"$(json_of "$TEST_TMP/run.out" options.dry_run) $(json_of "$TEST_TMP/run.out" options.expert_parallel.size) $(json_of "$TEST_TMP/run.out" options.expert_parallel.rank) $(json_of "$TEST_TMP/run.out" options.dtype) $(json_of "$TEST_TMP/run.out" options.partition.index) $(json_of "$TEST_TMP/run.out" options.partition.count) $(json_of "$TEST_TMP/run.out" options.overwrite) $(json_of "$TEST_TMP/run.out" options.max_bytes_per_second)"

expect_ok "submit --wait" "${J[@]}" submit "${S[@]}" --to native --wait "$DATA/src" "$DATA/out-wait"
W=$(head -1 "$TEST_TMP/run.out")
[[ "$W" =~ $ID_RE ]] && grep -q "^job $W converted 29 tensors .* into 1 file in .*: $DATA/out-wait\$" "$TEST_TMP/run.out" &&
	pass "--wait prints the id, then the result" || fail "--wait prints the id, then the result" "$(run_out)"
same_files "--wait's output equals convert's" "$TEST_TMP/ref" "$DATA/out-wait"
expect_ok "submit --wait --json" "${J[@]}" submit "${S[@]}" --to native --wait --json "$DATA/src" "$DATA/out-wj"
assert_eq "--wait --json prints the finished job alone" "1 succeeded 29" \
	"$(wc -l <"$TEST_TMP/run.out") $(json_of "$TEST_TMP/run.out" state) $(json_of "$TEST_TMP/run.out" result.tensors)"

# A partitioned job: each partition's --wait ends with convert's hint;
# submit --finalize DST (no SRC) finishes it, and the whole equals an
# unpartitioned conversion.
expect_ok "reference conversion into 100 KB shards" "$CKPTCONV" convert --to native --max-shard-size 100KB \
	"$DATA/src" "$TEST_TMP/ref-parts"
for I in 0 1; do
	expect_ok "submit --partition $I/2 --wait" "${J[@]}" submit "${S[@]}" --to native --max-shard-size 100KB \
		--partition "$I/2" --wait "$DATA/src" "$DATA/out-parts"
	assert_eq "partition $I/2's --wait ends with the finalize hint" \
		"run \`ckptconv finalize $DATA/out-parts\` once all 2 partitions have succeeded" \
		"$(tail -1 "$TEST_TMP/run.out")"
done
expect_usage "submit --finalize with SRC" "--finalize wants DST alone (no SRC), got 2 arguments" \
	"${J[@]}" submit "${S[@]}" --finalize "$DATA/src" "$DATA/out-parts"
expect_usage "submit --finalize --to" "--to does not apply to --finalize (see 'ckptconv jobs submit --help')" \
	"${J[@]}" submit "${S[@]}" --finalize --to native "$DATA/out-parts"
expect_ok "submit --finalize --wait" "${J[@]}" submit "${S[@]}" --finalize --wait "$DATA/out-parts"
F=$(head -1 "$TEST_TMP/run.out")
[[ "$F" =~ $ID_RE ]] && [ "$(wc -l <"$TEST_TMP/run.out")" = 2 ] &&
	grep -q "^job $F converted 29 tensors .* into 2 files in .*: $DATA/out-parts\$" "$TEST_TMP/run.out" &&
	pass "--finalize --wait prints the id, then the result" || fail "--finalize --wait prints the id, then the result" "$(run_out)"
same_files "the finalized partitions equal an unpartitioned conversion" "$TEST_TMP/ref-parts" "$DATA/out-parts"

expect_fail "a destination outside the allowed roots" forbidden_path "$TEST_TMP/elsewhere" \
	"${J[@]}" submit "${S[@]}" --to native "$DATA/src" "$TEST_TMP/elsewhere"
[ ! -e "$TEST_TMP/elsewhere" ] && pass "nothing was written there" || fail "nothing was written there"
expect_fail "a relative destination" invalid_field "" "${J[@]}" submit "${S[@]}" --to native "$DATA/src" out-rel
mkdir -p "$DATA/empty"
expect_fail "a source that is not a checkpoint" not_a_checkpoint "$DATA/empty" \
	"${J[@]}" submit "${S[@]}" --to native "$DATA/empty" "$DATA/out-nc"
expect_exit "an error with --json: exit 1" 1 "${J[@]}" submit "${S[@]}" --json --to native "$DATA/src" "$TEST_TMP/elsewhere"
assert_eq "it is {\"error\"} on stdout with the daemon's code" forbidden_path "$(json_of "$TEST_TMP/run.out" error.code)"

mkdir -p "$DATA/occupied" && echo keep >"$DATA/occupied/notes.txt"
expect_fail "--wait on a job that fails: its error" destination_not_empty "$DATA/occupied" \
	"${J[@]}" submit "${S[@]}" --to native --wait "$DATA/src" "$DATA/occupied"
F=$(head -1 "$TEST_TMP/run.out")
assert_eq "the failed job's destination is untouched" "keep 1" "$(cat "$DATA/occupied/notes.txt") $(ls -A "$DATA/occupied" | wc -l)"
expect_exit "--wait --json on a failing job: exit 1" 1 "${J[@]}" submit "${S[@]}" --to native --wait --json \
	"$DATA/src" "$DATA/occupied"
assert_eq "it prints the failed job" "failed destination_not_empty" \
	"$(json_of "$TEST_TMP/run.out" state) $(json_of "$TEST_TMP/run.out" error.code)"
expect_fail "watch on the failed job: exit 1 with its error" destination_not_empty "$DATA/occupied" \
	"${J[@]}" watch "${S[@]}" "$F"

expect_ok "submit --idempotency-key" "${J[@]}" submit "${S[@]}" --to native --dry-run --idempotency-key k-1 \
	"$DATA/src" "$DATA/out-idem"
I1=$(run_out)
expect_ok "submit again with the same key" "${J[@]}" submit "${S[@]}" --to native --dry-run --idempotency-key k-1 \
	"$DATA/src" "$DATA/out-idem"
assert_eq "the same key and options give the same job" "$I1" "$(run_out)"
expect_fail "--s3-* become the job's options.s3, which this daemon does not allow" forbidden_s3_endpoint \
	"endpoint http://127.0.0.1:9 is not one the service allows (--allow-s3-endpoint) (field options.s3.endpoint_url)" \
	"${J[@]}" submit "${S[@]}" --to native --s3-endpoint-url http://127.0.0.1:9 \
	--s3-region eu-west-1 --s3-addressing-style path "$DATA/src" "$DATA/out-s3"

# ---- get and list ----

expect_ok "get" "${J[@]}" get "${S[@]}" "$A"
grep -q '^state        succeeded$' "$TEST_TMP/run.out" && grep -qx "labels       team=nlp,run=7" "$TEST_TMP/run.out" &&
	grep -q '^result       28 tensors' "$TEST_TMP/run.out" && pass "get shows state, labels and result" ||
	fail "get shows state, labels and result" "$(run_out)"
expect_ok "get of a job without labels" "${J[@]}" get "${S[@]}" "$W"
assert_eq "no labels line when there are none" "" "$(grep '^labels' "$TEST_TMP/run.out")"
expect_ok "get --json" "${J[@]}" get "${S[@]}" --json "$A"
api GET "/v1/jobs/$A"
assert_eq "get --json is the API's job" "$(jget id) $(jget state) $(jget progress.bytes_done)" \
	"$(json_of "$TEST_TMP/run.out" id) $(json_of "$TEST_TMP/run.out" state) $(json_of "$TEST_TMP/run.out" progress.bytes_done)"
expect_fail "get an unknown job" job_not_found "0123456789abcdef" "${J[@]}" get "${S[@]}" 0123456789abcdef
expect_fail "an id holding ../ reaches no other route" not_found "/v1/jobs/../../healthz" \
	"${J[@]}" get "${S[@]}" '../../healthz'
expect_ok "get the failed job" "${J[@]}" get "${S[@]}" "$F"
grep -q '^error        destination_not_empty: ' "$TEST_TMP/run.out" && pass "get shows the job's error" ||
	fail "get shows the job's error" "$(run_out)"

expect_ok "list" "${J[@]}" list "${S[@]}"
api GET /v1/jobs
assert_eq "list shows every job under a header" "$(($(jget jobs.#) + 1))" "$(wc -l <"$TEST_TMP/run.out")"
grep -q "^$A  succeeded  100.0% .* $DATA/src -> $DATA/out-a \[" "$TEST_TMP/run.out" &&
	pass "a row has id, state, progress, age, paths and labels" || fail "a row has id, state, progress, age, paths and labels" "$(run_out)"
grep -q "^$DRY  succeeded     dry  .* $DATA/src -> $DATA/out-dry\$" "$TEST_TMP/run.out" &&
	pass "a dry run's row says dry, not a percentage" || fail "a dry run's row says dry, not a percentage" "$(run_out)"
expect_ok "list --json --state failed" "${J[@]}" list "${S[@]}" --json --state failed
assert_eq "--state filters" "2 failed" "$(json_of "$TEST_TMP/run.out" jobs.#) $(json_of "$TEST_TMP/run.out" jobs.1.state)"
expect_ok "list --label team=nlp --label run=7" "${J[@]}" list "${S[@]}" --json --label team=nlp --label run=7
assert_eq "--label filters (all must match)" "1 $A" "$(json_of "$TEST_TMP/run.out" jobs.#) $(json_of "$TEST_TMP/run.out" jobs.0.id)"
expect_ok "list --limit 2" "${J[@]}" list "${S[@]}" --json --limit 2
CURSOR=$(json_of "$TEST_TMP/run.out" next_cursor)
SEEN="$(json_of "$TEST_TMP/run.out" jobs.0.id) $(json_of "$TEST_TMP/run.out" jobs.1.id)"
expect_ok "list --cursor" "${J[@]}" list "${S[@]}" --json --limit 2 --cursor "$CURSOR"
NEXT=$(json_of "$TEST_TMP/run.out" jobs.0.id)
[ "$CURSOR" != null ] && [[ "$SEEN" != *"$NEXT"* ]] && pass "--cursor gives the next page" ||
	fail "--cursor gives the next page" "cursor $CURSOR, first page $SEEN, next $NEXT"
expect_ok "list --limit 2 as text" "${J[@]}" list "${S[@]}" --limit 2
grep -q "^(more: --cursor $CURSOR)\$" "$TEST_TMP/run.out" && pass "text list says how to get more" ||
	fail "text list says how to get more" "$(run_out)"

# The daemon refuses a label or a location holding terminal escape
# sequences (cli_jobs_hostile.sh shows how the client prints such values
# from a server that sends them); its errors, and one that quotes an id
# given with escapes, are one clean line.
expect_fail "submit with a label holding escape sequences" invalid_field \
	"labels.note contains the control character U+001B at byte 0 (field labels.note)" \
	"${J[@]}" submit "${S[@]}" --to native --dry-run --wait --label $'note=\e]0;pwned\a\r\e[K' "$DATA/src" "$DATA/out-esc"
no_raw_controls "submit, label"
expect_fail "submit with a destination holding escape sequences" invalid_field \
	"destination contains the control character U+001B at byte $((${#DATA} + 5)) (field destination)" \
	"${J[@]}" submit "${S[@]}" --to native --dry-run "$DATA/src" "$DATA/out-"$'\e[31m'"red"$'\a'
no_raw_controls "submit, destination"
expect_fail "get an id holding escape sequences" job_not_found "" "${J[@]}" get "${S[@]}" $'x\e]0;pwned\a\r\e[K'
no_raw_controls "get, id"
grep -qF 'x\x1b]0;pwned\x07\x0d\x1b[K' "$TEST_TMP/run.err" && pass "the daemon's message quotes the id escaped" ||
	fail "the daemon's message quotes the id escaped" "$(run_err | od -c | head)"
[ ! -e "$DATA/out-esc" ] && pass "nothing was written" || fail "nothing was written"

# ---- watch and cancel ----

# A job throttled to about 8 s, followed twice at once: as text and --json.
expect_ok "submit a throttled job" "${J[@]}" submit "${S[@]}" --to native --max-rate 24KB "$DATA/src" "$DATA/out-watch"
WJ=$(run_out)
"${J[@]}" watch "${S[@]}" --json "$WJ" >"$TEST_TMP/watch.json" 2>"$TEST_TMP/watch.json.err" &
WATCH_JSON=$!
expect_ok "watch follows it to success" "${J[@]}" watch "${S[@]}" "$WJ"
grep -q '^ckptconv: progress: [0-9]*%, [0-9]*/29 tensors' "$TEST_TMP/run.err" &&
	pass "watch shows convert's progress lines" || fail "watch shows convert's progress lines" "$(run_err)"
grep -q "^job $WJ converted 29 tensors" "$TEST_TMP/run.out" && pass "watch ends with the result" ||
	fail "watch ends with the result" "$(run_out)"
wait "$WATCH_JSON"
assert_eq "watch --json exits 0" 0 "$?"
"$PY" - "$TEST_TMP/watch.json" >"$TEST_TMP/watch.check" 2>&1 <<'PYEOF'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1])]
progress = [e for e in events if e["event"] == "progress"]
assert progress, "no progress event"
assert all(set(e["data"]) >= {"tensors_done", "bytes_done", "elapsed_seconds", "in_flight"} for e in progress)
done = [e["data"]["bytes_done"] for e in progress]
assert done == sorted(done), f"bytes_done went back: {done}"
assert events[-1]["event"] == "state" and events[-1]["data"]["state"] == "succeeded", events[-1]
print(len(progress))
PYEOF
[ $? = 0 ] && pass "watch --json: $(cat "$TEST_TMP/watch.check") progress events, then the final state" ||
	fail "watch --json: progress events, then the final state" "$(cat "$TEST_TMP/watch.check")"
same_files "the watched job's output equals convert's" "$TEST_TMP/ref" "$DATA/out-watch"

expect_ok "submit a slow job" "${J[@]}" submit "${S[@]}" --to native --max-rate 8KB "$DATA/src" "$DATA/out-slow"
R=$(run_out)
expect_ok "submit a job queued behind it" "${J[@]}" submit "${S[@]}" --to native "$DATA/src" "$DATA/out-queued"
Q=$(run_out)
wait_progress "$R" && pass "the slow job runs" || fail "the slow job runs"
assert_eq "the other waits" queued "$(job_state "$Q")"
expect_ok "cancel the queued job" "${J[@]}" cancel "${S[@]}" "$Q"
assert_eq "it says cancelled" "job $Q cancelled" "$(run_out)"
assert_eq "the queued job is cancelled" cancelled "$(job_state "$Q")"
expect_ok "cancel the running job --json" "${J[@]}" cancel "${S[@]}" --json "$R"
assert_eq "it prints the job, stopping" "running true" \
	"$(json_of "$TEST_TMP/run.out" state) $(json_of "$TEST_TMP/run.out" cancel_requested)"
expect_fail "watch on it: exit 1 with the reason" cancelled "" "${J[@]}" watch "${S[@]}" "$R"
no_finished_output "the cancelled job left no output" "$DATA/out-slow"
expect_fail "cancel a finished job" job_finished "$R" "${J[@]}" cancel "${S[@]}" "$R"
api GET "/v1/jobs/$R"
assert_eq "its record is kept" "200 cancelled" "$STATUS $(jget state)"
expect_fail "cancel an unknown job" job_not_found "" "${J[@]}" cancel "${S[@]}" 0123456789abcdef

# ---- --wait across a daemon restart ----

"${J[@]}" submit "${S[@]}" --to native --max-rate 32KB --wait "$DATA/src" "$DATA/out-restart" \
	>"$TEST_TMP/restart.out" 2>"$TEST_TMP/restart.err" &
WAITER=$!
for i in $(seq 100); do
	RJ=$(head -1 "$TEST_TMP/restart.out" 2>/dev/null)
	[ -n "$RJ" ] && break
	sleep 0.1
done
wait_progress "$RJ" && pass "the job runs" || fail "the job runs"
PORT=$DAEMON_PORT
daemon_stop
assert_eq "the daemon drained" 0 "$DAEMON_RC"
daemon_start --max-running 1 --token-file "$TOKEN_FILE" --listen "127.0.0.1:$PORT"
assert_eq "the daemon is back on its port" "$PORT" "$DAEMON_PORT"
wait "$WAITER"
assert_eq "--wait followed the job through the restart to success" 0 "$?"
grep -q "^job $RJ converted 29 tensors" "$TEST_TMP/restart.out" && grep -q 'ended early; following it again' "$TEST_TMP/restart.err" &&
	pass "it said so, and printed the result" || fail "it said so, and printed the result" "$(cat "$TEST_TMP/restart.out" "$TEST_TMP/restart.err")"
same_files "the rerun's output equals convert's" "$TEST_TMP/ref" "$DATA/out-restart"
grep -q '^ckptconv: progress: [0-9]*%, [0-9]*/29 tensors, [0-9.]*/[0-9.]* [KMG]*B, [0-9.]* [KMG]*B/s, ETA ' "$TEST_TMP/restart.err" &&
	pass "--wait shows convert's progress lines" || fail "--wait shows convert's progress lines" "$(cat "$TEST_TMP/restart.err")"

api GET /healthz
assert_eq "the daemon is healthy" 200 "$STATUS"
daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"
finish
