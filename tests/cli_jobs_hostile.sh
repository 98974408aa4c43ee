#!/bin/bash
# SPDX-License-Identifier: MIT
#
# cli_jobs_hostile.sh: `ckptconv jobs` against a hostile server on
# 127.0.0.1 (a small Python HTTP server started here).  Every value the
# text output shows (locations, labels, state, times, error code and
# message, the next page's cursor) reaches the terminal escaped, never as
# ESC, BEL, CR or a C1 control; --json stays JSON with those escaped too.

. "$(dirname "$0")/lib.sh"
need_binary

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
unset CKPTCONV_SERVER CKPTCONV_TOKEN_FILE CKPTCONV_LISTEN
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

HOSTILE_PY="$TEST_TMP/hostile.py"
HOSTILE_LOG="$TEST_TMP/hostile.log"
HOSTILE_PORT_FILE="$TEST_TMP/hostile.port"
cat >"$HOSTILE_PY" <<'PYEOF'
import http.server, json, sys

log_path, port_file = sys.argv[1], sys.argv[2]

def job(id_, state, **extra):
    j = {
        "id": id_, "state": state,
        "created_at": "\u009b31m2026-01-01T00:00:00Z",
        "started_at": "2026-01-01T00:00:01Z\u001b[?1049h",
        "finished_at": "2026-01-01T00:00:02Z\u009d0;x\u009c",
        "source": "/src\u001b]52;c;cHduZWQ=\u0007",
        "destination": "/dst\u001b[31mRED\u0007",
        "to": "native\u007f",
        "options": {"dry_run": False},
        "labels": {"team\u001b[1m": "\u001b[2J\u001b]0;pwned\u0007"},
        "progress": {"tensors_total": 2, "tensors_done": 2, "bytes_total": 10,
                     "bytes_done": 10, "percent": 100.0, "bytes_per_second": 5,
                     "elapsed_seconds": 2.0, "eta_seconds": None, "in_flight": []},
        "result": None, "error": None, "cancel_requested": False, "restarts": 0,
        "credentials_source": "\r\u001b[Kenvironment",
    }
    j.update(extra)
    return j

FAILED = job("hostile", "failed", error={
    "code": "destination_not_empty",
    "message": "taken\r\u001b[K\u001b]0;pwned\u0007 \u009d0;x\u009c",
    "tensor": "w\u001b[8m"})
UNKNOWN = job("unknown", "failed", error={
    "code": "\u001b[31mboom", "message": "x\u0007", "tensor": None})
OK = job("hostile-ok", "succeeded", result={
    "files": ["model.safetensors"], "tensors": 2, "bytes": 10, "warnings": []})
JOBS = {"hostile": FAILED, "unknown": UNKNOWN, "hostile-ok": OK}
LIMIT = 64 << 20
# answers of the wrong shape
SHAPES = {
    "id-number": job(7, "succeeded"),
    "state-array": job("state-array", []),
    "state-bogus": job("state-bogus", "pwned"),
    "label-number": job("label-number", "succeeded", labels={"team": 1}),
    "percent-string": job("percent-string", "running", progress={"percent": "x"}),
    "error-no-code": job("error-no-code", "failed", error={"message": "m"}),
    "still-running": job("still-running", "running"),
    "not-object": [],
}
STALE = {"tensors_total": 2, "tensors_done": 1, "bytes_total": 10, "bytes_done": 5,
         "percent": 50.0, "bytes_per_second": 1, "elapsed_seconds": 1.0, "eta_seconds": 5,
         "in_flight": []}
PAGES = {
    "state-array": {"jobs": [OK, job("x", [])], "next_cursor": None},
    "jobs-object": {"jobs": {}, "next_cursor": None},
    "no-jobs": {"next_cursor": None},
    "cursor-number": {"jobs": [], "next_cursor": 3},
}

def padded(doc, size):
    """doc as JSON, white space after it up to size bytes: still valid JSON."""
    data = json.dumps(doc).encode()
    return data + b" " * (size - len(data))

class Hostile(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, doc, content_type="application/json"):
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def big(self, status, data, sized):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if sized:
            self.send_header("Content-Length", str(len(data)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            view = memoryview(data)
            for i in range(0, len(data), 1 << 20):
                self.wfile.write(view[i:i + (1 << 20)])
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def events(self, chunks):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for c in chunks:
            self.wfile.write(c.encode())
        self.close_connection = True

    def handle_one(self):
        with open(log_path, "a") as f:
            f.write(self.command + " " + self.path + "\n")
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path, _, query = self.path.partition("?")
        parts = path.split("/")
        if self.command == "POST" and path == "/v1/jobs":
            return self.answer(201, OK)
        cursor = [q[len("cursor="):] for q in query.split("&") if q.startswith("cursor=")]
        if path == "/v1/jobs" and cursor and cursor[0] in PAGES:
            return self.answer(200, PAGES[cursor[0]])
        if path == "/v1/jobs":
            return self.answer(200, {"jobs": [FAILED, OK], "next_cursor": "c\u001b[5m\r"})
        if len(parts) == 4 and parts[3] in JOBS:
            return self.answer(200, JOBS[parts[3]])
        if len(parts) == 5 and parts[3] in JOBS and parts[4] == "events":
            return self.events([": hello\n\n", "event: state\ndata: "
                                + json.dumps(JOBS[parts[3]]) + "\n\n"])
        if len(parts) == 4 and parts[3] in SHAPES:
            return self.answer(200, SHAPES[parts[3]])
        if len(parts) == 5 and parts[3] in SHAPES and parts[4] == "events":
            return self.events(["event: state\ndata: " + json.dumps(SHAPES[parts[3]]) + "\n\n"])
        if len(parts) == 5 and parts[3] in ("silent", "stale") and parts[4] == "events":
            # a client that would follow for ever meets an end here, and
            # fails the test by its code rather than by hanging
            self.server.opened[parts[3]] = self.server.opened.get(parts[3], 0) + 1
            if self.server.opened[parts[3]] > 30:
                return self.answer(404, {"error": {"code": "job_not_found", "message": "enough"}})
        if len(parts) == 5 and parts[3] == "silent" and parts[4] == "events":
            return self.events([": keepalive\n\n"])
        if len(parts) == 5 and parts[3] == "stale" and parts[4] == "events":
            return self.events(["event: progress\ndata: " + json.dumps(STALE) + "\n\n"])
        if len(parts) == 5 and parts[3] == "climbing" and parts[4] == "events":
            self.server.climbed += 1
            return self.events(["event: progress\ndata: " + json.dumps(
                dict(STALE, bytes_done=self.server.climbed)) + "\n\n"] + (
                    ["event: state\ndata: " + json.dumps(OK) + "\n\n"]
                    if self.server.climbed == 8 else []))
        if len(parts) == 4 and parts[3] == "exact":
            return self.big(200, padded(job("exact", "succeeded"), LIMIT), True)
        if len(parts) == 4 and parts[3] == "exact-unsized":
            return self.big(200, padded(job("exact-unsized", "succeeded"), LIMIT), False)
        if len(parts) == 4 and parts[3] == "over":
            return self.big(200, padded(job("over", "succeeded"), LIMIT + 1), True)
        if len(parts) == 4 and parts[3] == "over-unsized":
            return self.big(200, padded(job("over-unsized", "succeeded"), LIMIT + 1), False)
        if len(parts) == 4 and parts[3] == "over-error":
            return self.big(500, padded({"error": {"code": "internal_error", "message": "x"}},
                                        LIMIT + 1), False)
        if len(parts) == 4 and parts[3] == "gone":
            return self.answer(404, {"error": {
                "code": "job_not_found", "message": "no job \u001b]0;pwned\u0007 here",
                "field": "id\u001b[2J"}})
        if len(parts) == 4 and parts[3] == "odd-code":
            return self.answer(409, {"error": {"code": "\u001b[31mweird", "message": "m\r"}})
        return self.answer(404, {"error": {"code": "not_found", "message": "no route"}})

    do_GET = do_POST = do_DELETE = handle_one

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
server.daemon_threads = True
server.climbed = 0
server.opened = {}
open(port_file, "w").write(str(server.server_address[1]))
server.serve_forever()
PYEOF

HOSTILE_PID=
stop_hostile() {
	if [ -n "$HOSTILE_PID" ]; then
		kill "$HOSTILE_PID" 2>/dev/null || true
		wait "$HOSTILE_PID" 2>/dev/null || true
		HOSTILE_PID=
	fi
}
CLEANUP_HOOKS+=(stop_hostile)
: >"$HOSTILE_LOG"
"$PY" "$HOSTILE_PY" "$HOSTILE_LOG" "$HOSTILE_PORT_FILE" &
HOSTILE_PID=$!
for i in $(seq 100); do
	[ -s "$HOSTILE_PORT_FILE" ] && break
	sleep 0.1
done
[ -s "$HOSTILE_PORT_FILE" ] || {
	fail "the hostile server starts"
	finish
}
H=(--server "http://127.0.0.1:$(cat "$HOSTILE_PORT_FILE")")
J=("$CKPTCONV" jobs)

# shows NAME LINE [FILE]: FILE (stdout) holds LINE exactly.
shows() {
	if grep -qxF -- "$2" "${3:-$TEST_TMP/run.out}"; then
		pass "$1"
	else
		fail "$1" "wanted the line: $2" "$(cat "${3:-$TEST_TMP/run.out}")"
	fi
}

# ---- terminal escapes in the text output ----

expect_ok "get a job full of escape sequences" "${J[@]}" get "${H[@]}" hostile
no_raw_controls "get"
shows "get: the source's OSC 52 is shown escaped" 'source       /src\x1b]52;c;cHduZWQ=\x07'
shows "get: the destination's colour is shown escaped" 'destination  /dst\x1b[31mRED\x07'
shows "get: DEL is shown escaped" 'to           native\x7f'
shows "get: a C1 CSI is shown escaped" 'created      \xc2\x9b31m2026-01-01T00:00:00Z (- ago)'
shows "get: an alternate screen switch is shown escaped" 'started      2026-01-01T00:00:01Z\x1b[?1049h'
shows "get: C1 OSC and ST are shown escaped" 'finished     2026-01-01T00:00:02Z\xc2\x9d0;x\xc2\x9c'
shows "get: the label's clear screen and title are shown escaped" 'labels       team\x1b[1m=\x1b[2J\x1b]0;pwned\x07'
shows "get: the credentials source's CR and erase line are shown escaped" 'credentials  \x0d\x1b[Kenvironment'
shows "get: the error's message and tensor are shown escaped" \
	'error        destination_not_empty: taken\x0d\x1b[K\x1b]0;pwned\x07 \xc2\x9d0;x\xc2\x9c (tensor w\x1b[8m)'

expect_ok "get a job failed with an unknown code" "${J[@]}" get "${H[@]}" unknown
no_raw_controls "get, unknown code"
shows "get: the unknown code is shown escaped" \
	'error        server_bad_response: the job failed with the unknown code \x1b[31mboom: x\x07'

expect_ok "list" "${J[@]}" list "${H[@]}"
no_raw_controls "list"
shows "list: a row shows its locations and labels escaped" \
	'hostile           failed     100.0%        -  /src\x1b]52;c;cHduZWQ=\x07 -> /dst\x1b[31mRED\x07 [team\x1b[1m=\x1b[2J\x1b]0;pwned\x07]'
shows "list: the next page's cursor is shown escaped" '(more: --cursor c\x1b[5m\x0d)'

expect_fail "watch a job that failed" destination_not_empty "" "${J[@]}" watch "${H[@]}" hostile
no_raw_controls "watch"
assert_eq "watch: its error line is escaped" \
	'ckptconv: destination_not_empty: taken\x0d\x1b[K\x1b]0;pwned\x07 \xc2\x9d0;x\xc2\x9c' "$(run_err)"

expect_ok "watch a job that succeeded" "${J[@]}" watch "${H[@]}" hostile-ok
no_raw_controls "watch, success"
shows "watch: the result line shows the destination escaped" \
	'job hostile-ok converted 2 tensors (10 B) into 1 file in 2.00 s (5 B/s): /dst\x1b[31mRED\x07'

expect_ok "submit --wait" "${J[@]}" submit "${H[@]}" --to native --wait /src /dst
no_raw_controls "submit --wait"
shows "submit --wait: the result line shows the destination escaped" \
	'job hostile-ok converted 2 tensors (10 B) into 1 file in 2.00 s (5 B/s): /dst\x1b[31mRED\x07'

expect_fail "an error answer" job_not_found "" "${J[@]}" get "${H[@]}" gone
no_raw_controls "an error answer"
assert_eq "its message and field are shown escaped" \
	'ckptconv: job_not_found: no job \x1b]0;pwned\x07 here (field id\x1b[2J)' "$(run_err)"
expect_fail "an error answer with an unknown code" server_bad_response "" "${J[@]}" cancel "${H[@]}" odd-code
no_raw_controls "an unknown error code"
assert_eq "the unknown code and message are shown escaped" \
	"ckptconv: server_bad_response: http://127.0.0.1:$(cat "$HOSTILE_PORT_FILE")/v1/jobs/odd-code answered HTTP 409 with the unknown code \\x1b[31mweird: m\\x0d" \
	"$(run_err)"

# ---- --json stays JSON, with every control escaped ----

expect_ok "get --json" "${J[@]}" get "${H[@]}" --json hostile
no_raw_controls "get --json"
"$PY" - "$TEST_TMP/run.out" <<'PYEOF' && pass "get --json: the same job, as JSON" || fail "get --json: the same job, as JSON"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["destination"] == "/dst\u001b[31mRED\u0007", j["destination"]
assert j["to"] == "native\u007f" and j["created_at"].startswith("\u009b31m"), j
assert j["labels"] == {"team\u001b[1m": "\u001b[2J\u001b]0;pwned\u0007"}, j["labels"]
PYEOF
expect_ok "watch --json" "${J[@]}" watch "${H[@]}" --json hostile-ok
no_raw_controls "watch --json"
expect_exit "an error answer with --json: exit 1" 1 "${J[@]}" get "${H[@]}" --json gone
no_raw_controls "an error answer, --json"
"$PY" - "$TEST_TMP/run.out" <<'PYEOF' && pass "the error is JSON carrying the message" || fail "the error is JSON carrying the message" "$(run_out)"
import json, sys
e = json.load(open(sys.argv[1]))["error"]
assert e == {"code": "job_not_found", "message": "no job \u001b]0;pwned\u0007 here (field id\u001b[2J)"}, e
PYEOF

# ---- answers over 64 MiB ----

URL="http://127.0.0.1:$(cat "$HOSTILE_PORT_FILE")"
expect_ok "an answer of exactly 64 MiB is read" "${J[@]}" get "${H[@]}" exact
shows "and shown" 'id           exact'
expect_ok "so is one of exactly 64 MiB without a length" "${J[@]}" get "${H[@]}" exact-unsized
shows "and shown" 'id           exact-unsized'
for what in over over-unsized over-error; do
	expect_fail "an answer of 64 MiB and 1 byte ($what)" server_bad_response \
		"$URL/v1/jobs/$what: the answer is over 64 MiB" "${J[@]}" get "${H[@]}" "$what"
	assert_eq "it is the whole message ($what)" \
		"ckptconv: server_bad_response: $URL/v1/jobs/$what: the answer is over 64 MiB" "$(run_err)"
done

# ---- answers of the wrong shape ----

# refused NAME MESSAGE CMD...: exit 1, nothing on stdout, and the one line
# "ckptconv: server_bad_response: MESSAGE" on stderr.
refused() {
	local name=$1 message=$2
	shift 2
	expect_fail "$name" server_bad_response "" "$@" || return 1
	assert_eq "$name: nothing is shown but the error" \
		"|ckptconv: server_bad_response: $message" "$(run_out)|$(run_err)"
}
refused "get: id a number" "the answer's id is an integer, not a string" "${J[@]}" get "${H[@]}" id-number
refused "get: state an array" "the answer's state is an array, not a string" "${J[@]}" get "${H[@]}" state-array
refused "get: state not a job state" "the answer's state is 'pwned', not a job state" "${J[@]}" get "${H[@]}" state-bogus
refused "get: a label's value a number" "the answer's labels.team is not a string" "${J[@]}" get "${H[@]}" label-number
refused "get: progress.percent a string" "the answer's progress.percent is a string, not a number" \
	"${J[@]}" get "${H[@]}" percent-string
refused "get: an error without a code" "the answer's error.code is missing" "${J[@]}" get "${H[@]}" error-no-code
refused "get: not an object" "the answer's job is not an object" "${J[@]}" get "${H[@]}" not-object
expect_exit "get --json: state an array: exit 1" 1 "${J[@]}" get "${H[@]}" --json state-array
assert_eq "get --json: the error alone, as JSON" \
	'{"error":{"code":"server_bad_response","message":"the answer'"'"'s state is an array, not a string"}}' "$(run_out)"
refused "cancel: state an array" "the answer's state is an array, not a string" "${J[@]}" cancel "${H[@]}" state-array
refused "list: a job's state an array" "the answer's jobs[1].state is an array, not a string" \
	"${J[@]}" list "${H[@]}" --cursor state-array
refused "list: jobs an object" "the answer's jobs is an object, not an array" \
	"${J[@]}" list "${H[@]}" --cursor jobs-object
refused "list: no jobs" "the answer's jobs is missing" "${J[@]}" list "${H[@]}" --cursor no-jobs
refused "list: next_cursor a number" "the answer's next_cursor is an integer, not a string or null" \
	"${J[@]}" list "${H[@]}" --cursor cursor-number
expect_exit "list --json: a job's state an array: exit 1" 1 "${J[@]}" list "${H[@]}" --json --cursor state-array
assert_eq "list --json: the error alone, as JSON" \
	'{"error":{"code":"server_bad_response","message":"the answer'"'"'s jobs[1].state is an array, not a string"}}' "$(run_out)"
refused "watch: a final state that is an array" "the answer's state is an array, not a string" \
	"${J[@]}" watch "${H[@]}" state-array
refused "watch: a final state event of a running job" \
	"the final state event says the job is running, which is not an end" "${J[@]}" watch "${H[@]}" still-running
expect_exit "watch --json: a final state that is an array: exit 1" 1 "${J[@]}" watch "${H[@]}" --json state-array
assert_eq "watch --json: the error alone, not the event" \
	'{"error":{"code":"server_bad_response","message":"the answer'"'"'s state is an array, not a string"}}' "$(run_out)"

# ---- event streams that end with no news of the job ----

# streams ID: how many times the event stream of job ID was opened.
streams() { grep -c "^GET /v1/jobs/$1/events\$" "$HOSTILE_LOG"; }
IDLE="ended 5 times in a row with no news of the job (no further progress, no final state)"
expect_fail "watch: streams that end at once, empty" server_bad_response "" "${J[@]}" watch "${H[@]}" silent
assert_eq "it gives up with the reason" "ckptconv: server_bad_response: the event stream of job silent $IDLE" \
	"$(error_line "$TEST_TMP/run.err")"
assert_eq "after 5 streams" 5 "$(streams silent)"
expect_fail "watch: streams that tell the same progress again and again" server_bad_response "" \
	"${J[@]}" watch "${H[@]}" stale
assert_eq "it gives up with the reason" "ckptconv: server_bad_response: the event stream of job stale $IDLE" \
	"$(error_line "$TEST_TMP/run.err")"
assert_eq "after the first stream (its progress is news) and 5 more" 6 "$(streams stale)"
expect_exit "watch --json: the same, exit 1" 1 "${J[@]}" watch "${H[@]}" --json silent
assert_eq "the error alone, as JSON" \
	"{\"error\":{\"code\":\"server_bad_response\",\"message\":\"the event stream of job silent $IDLE\"}}" "$(run_out)"
assert_eq "after 5 more streams" 10 "$(streams silent)"
expect_ok "watch: streams that end early but tell further progress each time" \
	"${J[@]}" watch "${H[@]}" climbing
assert_eq "it follows the job to its end" 8 "$(streams climbing)"

stop_hostile
finish
