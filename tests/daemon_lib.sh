# SPDX-License-Identifier: MIT
#
# daemon_lib.sh: helpers for the daemon's integration scripts (sourced after
# lib.sh).  Starts the real `ckptconv serve` on 127.0.0.1 with port 0 and a
# state dir under the test's temporary directory, reads the port it logged,
# talks HTTP with curl, reads JSON with a small Python helper, and kills
# every daemon it started when the script exits.

# The system's Python when there is one: wrappers (pyenv shims) cost seconds
# per call on a loaded machine.
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

DAEMON_PIDS=()
DAEMON_PID=
DAEMON_LOG=
DAEMON_PORT=
DAEMON_N=0
DATA="$TEST_TMP/data"
STATE="$TEST_TMP/state"
TOKEN=
mkdir -p "$DATA"

kill_daemons() {
	local pid
	for pid in "${DAEMON_PIDS[@]+"${DAEMON_PIDS[@]}"}"; do
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	DAEMON_PIDS=()
}
CLEANUP_HOOKS+=(kill_daemons)

# daemon_start [ARGS...]: starts the daemon (roots: $DATA, state: $STATE,
# port 0) and waits until it listens; BASE is its URL.  Fails the script when it
# does not come up within 15 s.
daemon_start() {
	local i
	DAEMON_N=$((DAEMON_N + 1))
	DAEMON_LOG="$TEST_TMP/daemon.$DAEMON_N.log"
	local base=(--listen 127.0.0.1:0 --state-dir "$STATE" --allow-root "$DATA" --shutdown-timeout 20)
	# DAEMON_ENV_ONLY=1: configured by CKPTCONV_* variables alone.
	[ -n "${DAEMON_ENV_ONLY:-}" ] && base=()
	"$CKPTCONV" serve "${base[@]+"${base[@]}"}" "$@" 2>"$DAEMON_LOG" &
	DAEMON_PID=$!
	DAEMON_PIDS+=("$DAEMON_PID")
	for i in $(seq 150); do
		DAEMON_PORT=$(grep -m1 -o '"msg":"listening on [^"]*","address":"[^"]*","port":[0-9]*' \
			"$DAEMON_LOG" 2>/dev/null | grep -o '[0-9]*$' || true)
		[ -n "$DAEMON_PORT" ] && break
		if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	if [ -z "$DAEMON_PORT" ]; then
		fail "daemon starts" "$(tail -5 "$DAEMON_LOG")"
		finish
	fi
	BASE="http://127.0.0.1:$DAEMON_PORT"
}

# daemon_wait_exit SECONDS: waits for the daemon to exit; sets DAEMON_RC
# (124 when it was still running).
daemon_wait_exit() {
	local i limit=$(($1 * 10))
	DAEMON_RC=124
	for i in $(seq "$limit"); do
		if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
			DAEMON_RC=0
			wait "$DAEMON_PID" || DAEMON_RC=$?
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# daemon_stop: SIGTERM and wait (kill -9 after 25 s).
daemon_stop() {
	kill -TERM "$DAEMON_PID" 2>/dev/null || true
	daemon_wait_exit 25 || { kill -9 "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; }
}

# api METHOD PATH [CURL ARGS...]: one request; the status in STATUS, the
# body in $BODY, the headers in $HEADERS.  With TOKEN set, sends it.
BODY="$TEST_TMP/body"
HEADERS="$TEST_TMP/headers"
api() {
	local method=$1 path=$2 auth=()
	shift 2
	[ -n "$TOKEN" ] && auth=(-H "Authorization: Bearer $TOKEN")
	STATUS=$(curl -s -o "$BODY" -D "$HEADERS" -w '%{http_code}' --max-time 30 -X "$method" \
		"${auth[@]+"${auth[@]}"}" "$@" "$BASE$path") || STATUS=000
}

# post_job JSON [CURL ARGS...]: POST /v1/jobs.
post_job() {
	local json=$1
	shift
	api POST /v1/jobs -H 'Content-Type: application/json' --data-binary "$json" "$@"
}

# jget PATH [FILE]: a value of a JSON document ($BODY by default) by dotted
# path ("progress.bytes_done", "jobs.0.id"; "jobs.#" is a length).  Strings
# print bare, null prints "null", objects and lists print as JSON.
jget() {
	"$PY" - "$1" "${2:-$BODY}" <<'PYEOF'
import json, sys
path, name = sys.argv[1], sys.argv[2]
with open(name) as f:
    v = json.load(f)
for part in [p for p in path.split(".") if p]:
    if part == "#":
        v = len(v)
    elif isinstance(v, list):
        v = v[int(part)]
    else:
        v = v.get(part) if isinstance(v, dict) else None
if isinstance(v, str):
    print(v)
elif v is None:
    print("null")
elif isinstance(v, bool):
    print("true" if v else "false")
else:
    print(json.dumps(v) if isinstance(v, (dict, list)) else v)
PYEOF
}

# job_json SOURCE DESTINATION TO [OPTIONS_JSON]: a request body.
job_json() {
	printf '{"source": "%s", "destination": "%s", "to": "%s", "options": %s}' \
		"$1" "$2" "$3" "${4:-{\}}"
}

# submit NAME SOURCE DESTINATION TO [OPTIONS_JSON]: POSTs a job and expects
# 201; JOB is its id ("" on failure).
submit() {
	local name=$1
	shift
	JOB=
	post_job "$(job_json "$@")"
	if [ "$STATUS" = 201 ]; then
		JOB=$(jget id)
		pass "$name: 201"
		return 0
	fi
	fail "$name: 201" "status $STATUS" "$(head -c 400 "$BODY")"
	return 1
}

# job_field ID PATH: a field of GET /v1/jobs/ID.
job_field() {
	api GET "/v1/jobs/$1"
	[ "$STATUS" = 200 ] || { echo "http-$STATUS"; return 0; }
	jget "$2"
}

# job_state ID: the job's state, read without starting Python (the job's
# own "state" is the first in its compact JSON).
job_state() {
	api GET "/v1/jobs/$1"
	[ "$STATUS" = 200 ] || { echo "http-$STATUS"; return 0; }
	grep -o '"state":"[a-z]*"' "$BODY" | head -1 | cut -d'"' -f4
}

# body_number KEY: the first integer member KEY of the last answer.
body_number() {
	grep -o "\"$1\":[0-9]*" "$BODY" | head -1 | cut -d: -f2
}

# wait_job ID STATE... [--timeout SEC]: waits until the job's state is one
# of STATE (default timeout 60 s); WAITED_STATE is the last state seen.
wait_job() {
	local id=$1 timeout=60 want=() i state
	shift
	while [ $# -gt 0 ]; do
		if [ "$1" = --timeout ]; then
			timeout=$2
			shift 2
		else
			want+=("$1")
			shift
		fi
	done
	for i in $(seq $((timeout * 10))); do
		state=$(job_state "$id")
		WAITED_STATE=$state
		for s in "${want[@]}"; do
			[ "$state" = "$s" ] && return 0
		done
		sleep 0.1
	done
	return 1
}

# expect_job NAME ID STATE [TIMEOUT]: the job reaches STATE.
expect_job() {
	if wait_job "$2" "$3" succeeded failed cancelled --timeout "${4:-60}" && [ "$WAITED_STATE" = "$3" ]; then
		pass "$1"
		return 0
	fi
	api GET "/v1/jobs/$2"
	fail "$1" "state: $WAITED_STATE (wanted $3)" "$(head -c 600 "$BODY")"
	return 1
}

# wait_progress ID: waits until the running job has written some bytes but
# not all; false after 60 s.
wait_progress() {
	local i done total state
	for i in $(seq 600); do
		state=$(job_state "$1")
		done=$(body_number bytes_done)
		total=$(body_number bytes_total)
		if [ "$state" = running ] && [ "${done:-0}" -gt 0 ] && [ "$done" -lt "$total" ]; then
			return 0
		fi
		case "$state" in succeeded | failed | cancelled) return 1 ;; esac
		sleep 0.1
	done
	return 1
}

# expect_error NAME STATUS CODE [FIELD]: the last answer was STATUS with
# {"error": {"code": CODE, "message": ..., "field": FIELD}}.
expect_error() {
	local code field message
	code=$(jget error.code 2>/dev/null || echo "?")
	field=$(jget error.field 2>/dev/null || echo "?")
	message=$(jget error.message 2>/dev/null || echo "")
	if [ "$STATUS" = "$2" ] && [ "$code" = "$3" ] && [ -n "$message" ] &&
		{ [ $# -lt 4 ] || [ "$field" = "$4" ]; }; then
		pass "$1 ($2 $3)"
		return 0
	fi
	fail "$1" "wanted $2 $3${4:+ field $4}" "got $STATUS: $(head -c 400 "$BODY")"
	return 1
}

# header NAME: a header of the last answer ("" if absent).
header() {
	grep -i "^$1:" "$HEADERS" | head -1 | cut -d: -f2- | tr -d ' \r'
}

# listing_matches_output NAME ID DIR: every tensor of the job's per-tensor
# listing is done and has the name, dtype, shape, byte count and file that
# `ckptconv inspect` finds in DIR, and the listing covers DIR's tensors.
listing_matches_output() {
	api GET "/v1/jobs/$2/tensors?limit=10000"
	cp "$BODY" "$TEST_TMP/listing.json"
	"$CKPTCONV" inspect --json --tensors "$3" >"$TEST_TMP/inspect.json" 2>/dev/null
	if "$PY" - "$TEST_TMP/listing.json" "$TEST_TMP/inspect.json" >"$TEST_TMP/cmp.out" 2>&1 <<'PYEOF'; then
import json, sys
listing = json.load(open(sys.argv[1]))
actual = {t["name"]: t for t in json.load(open(sys.argv[2]))["tensor_list"]}
assert listing["total"] == len(listing["tensors"]) == len(actual), \
    f"listing has {listing['total']} tensors, output {len(actual)}"
for t in listing["tensors"]:
    a = actual.get(t["name"])
    assert a is not None, f"{t['name']} not in the output"
    assert t["state"] == "done", f"{t['name']} is {t['state']}"
    for k in ("dtype", "shape", "bytes", "file"):
        assert t[k] == a[k], f"{t['name']}: {k} {t[k]} != {a[k]}"
    assert t["sources"], f"{t['name']} has no sources"
PYEOF
		pass "$1"
		return 0
	fi
	fail "$1" "$(tail -3 "$TEST_TMP/cmp.out")"
	return 1
}

# no_finished_output NAME DIR: DIR holds nothing that looks like a finished
# checkpoint, and no unfinished output files.
no_finished_output() {
	local left
	left=$(find "$2" -maxdepth 1 \( -name model.safetensors -o -name model.safetensors.index.json \
		-o -name '*.safetensors' -o -name '.ckptconv-tmp.*' \) 2>/dev/null | head -5)
	if [ -z "$left" ]; then
		pass "$1"
		return 0
	fi
	fail "$1" "left behind:" $left
	return 1
}
