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
        if path == "/v1/jobs":
            return self.answer(200, {"jobs": [FAILED, OK], "next_cursor": "c\u001b[5m\r"})
        if len(parts) == 4 and parts[3] in JOBS:
            return self.answer(200, JOBS[parts[3]])
        if len(parts) == 5 and parts[3] in JOBS and parts[4] == "events":
            return self.events([": hello\n\n", "event: state\ndata: "
                                + json.dumps(JOBS[parts[3]]) + "\n\n"])
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

stop_hostile
finish
