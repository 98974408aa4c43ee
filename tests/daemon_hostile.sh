#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_hostile.sh: the daemon under hostile clients, all on 127.0.0.x,
# bounded in time and connections.
# - Exclude patterns that would cost regcomp gigabytes or make regexec
#   backtrack are refused with 400 invalid_exclude naming the bound, at
#   once, while /healthz keeps answering; the daemon's peak memory stays
#   small.
# - A request with an ambiguous body length (two Content-Length headers,
#   Content-Length with Transfer-Encoding, another coding) is answered 400
#   malformed_request and its connection closed: the request smuggled in
#   its body is never served.
# - Every GET route answers HEAD with its headers and no body, so the next
#   answer on a kept-alive connection starts right after them; an event
#   stream answers HEAD 405.  An HTTP/1.1 request without Host, or with
#   two, is answered 400 malformed_request; HTTP/1.0 needs none.
# - Slow clients: connections that send one header line a second are cut
#   at --request-timeout; one client address gets at most
#   --max-connections-per-ip connections, so /healthz from another address
#   answers throughout; and while 600 trickling connections from 30
#   addresses keep the main listener full, the health listener answers
#   /healthz, /readyz and /metrics within 2 s every time.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

copy_dir "$GOLDEN_DIR/tiny/hf" "$DATA/hf"

# vm_kb PID FIELD: a field of /proc/PID/status in kB.
vm_kb() {
	sed -n "s/^$2:[[:space:]]*\\([0-9]*\\) kB/\\1/p" "/proc/$1/status"
}

# ---- exclude patterns -------------------------------------------------------------------
daemon_start --http-threads 2
# A prober: /healthz every 0.2 s while the patterns go in; one line per
# probe, "ok" or what went wrong.
PROBES=$TEST_TMP/probes
"$PY" - "$BASE/healthz" "$PROBES" "$TEST_TMP/probe.stop" <<'PYEOF' &
import os, sys, time, urllib.request
url, out, stop = sys.argv[1:4]
with open(out, "w") as f:
    deadline = time.time() + 120
    while not os.path.exists(stop) and time.time() < deadline:
        t = time.time()
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                ok = r.status == 200
            f.write("ok\n" if ok else "status\n")
        except Exception as e:
            f.write(f"error {e}\n")
        f.flush()
        time.sleep(max(0.0, 0.2 - (time.time() - t)))
PYEOF
PROBER=$!

# exclude_refused NAME PATTERN MESSAGE: POSTed as options.exclude, the
# pattern is refused with 400 invalid_exclude naming MESSAGE, within 5 s.
exclude_refused() {
	local name=$1 pattern=$2 message=$3 json
	json=$("$PY" -c 'import json, sys
print(json.dumps({"source": sys.argv[1], "destination": sys.argv[2], "to": "native",
                  "options": {"exclude": sys.argv[3], "dry_run": True}}))' "$DATA/hf" "$DATA/x" "$pattern")
	post_job "$json" --max-time 5
	expect_error "$name" 400 invalid_exclude options.exclude &&
		if jget error.message | grep -qF -- "$message"; then
			pass "$name: the message says '$message'"
		else
			fail "$name: the message says '$message'" "$(jget error.message)"
		fi
}
exclude_refused "26-byte nested repetition (regcomp: 1.1 GB)" '((a{1,100}){1,100}){1,100}' \
	"expands to more than 4000"
exclude_refused "nested repetition (regcomp: 5.6 GB)" '(((a{1,100}){1,100}){1,100}){1,20}' \
	"nested repetitions multiply"
exclude_refused "back-references (regexec backtracks)" '^(.*)(.*)(.*)(.*)(.*)(.*)\6\5\4\3\2\1$' \
	"back-references such as \\6"
exclude_refused "a pattern over 1024 bytes" "$(head -c 1100 /dev/zero | tr '\0' a)" \
	"1100 bytes long, over the limit of 1024"
exclude_refused "groups nested 40 deep" "$(printf '(%.0s' $(seq 40))a$(printf ')%.0s' $(seq 40))" \
	"nested more than 32 deep"
exclude_refused "a pattern regcomp refuses" 'layers.(1' "no closing )"
# The costliest kind of pattern the bounds admit is planned as usual.
post_job "$(job_json "$DATA/hf" "$DATA/y" native '{"dry_run": true, "exclude": "(a?){500}z|experts"}')"
assert_eq "a pattern within the bounds: planned" "201 succeeded" "$STATUS $(jget state)"
touch "$TEST_TMP/probe.stop"
wait "$PROBER"
assert_eq "/healthz answered every probe meanwhile" "0" "$(grep -vc '^ok$' "$PROBES")"
if [ "$(grep -c '^ok$' "$PROBES")" -ge 1 ]; then pass "the prober ran"; else fail "the prober ran"; fi
HWM=$(vm_kb "$DAEMON_PID" VmHWM)
if [ -n "${CKPTCONV_SANITIZERS:-}" ]; then
	skip "peak memory under 256 MiB: not measured under the sanitizers (shadow memory); VmHWM ${HWM} kB"
elif [ -n "$HWM" ] && [ "$HWM" -lt $((256 * 1024)) ]; then
	pass "the daemon's peak memory stayed small (VmHWM ${HWM} kB < 256 MiB)"
else
	fail "the daemon's peak memory stayed small" "VmHWM ${HWM:-?} kB"
fi

# ---- ambiguous body lengths ---------------------------------------------------------------
# raw REQUEST_BYTES (Python literal): sends them on one connection, reads
# until the server closes it (5 s at most); prints the number of HTTP
# answers, the first status, whether the server closed, and the first body.
raw() {
	"$PY" - "$DAEMON_PORT" "$1" <<'PYEOF'
import ast, socket, sys, time
port, data = int(sys.argv[1]), ast.literal_eval(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(data)
got, closed, end = b"", False, time.time() + 5
while time.time() < end:
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        break
    if not chunk:
        closed = True
        break
    got += chunk
answers = got.count(b"HTTP/1.1 ")
status = got.split(b" ", 2)[1].decode() if answers else "none"
body = got.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1 ")[0].decode(errors="replace") if answers else ""
print(answers, status, "closed" if closed else "open", body.strip())
PYEOF
}
# refused NAME REQUEST: one answer, 400 malformed_request, then closed.
refused() {
	local out
	out=$(raw "$2")
	case "$out" in
	"1 400 closed "*'"code":"malformed_request"'*) pass "$1: 400 malformed_request, one answer, closed" ;;
	*) fail "$1: 400 malformed_request, one answer, closed" "$out" ;;
	esac
}
SMUGGLED='GET /v1/jobs/0123456789abcdef HTTP/1.1\r\nHost: x\r\n\r\n'
LEN=$(printf "$SMUGGLED" | wc -c)
POST="POST /v1/jobs HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\n"
refused "two Content-Length headers, a request in the body" \
	"b'${POST}Content-Length: 0\\r\\nContent-Length: $LEN\\r\\n\\r\\n$SMUGGLED'"
refused "two equal Content-Length headers" \
	"b'${POST}Content-Length: 3\\r\\nContent-Length: 3\\r\\n\\r\\n{}\\n'"
refused "Content-Length with Transfer-Encoding, a request in the body" \
	"b'${POST}Content-Length: 5\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n$SMUGGLED'"
refused "a Transfer-Encoding other than chunked" \
	"b'${POST}Transfer-Encoding: gzip, chunked\\r\\n\\r\\n0\\r\\n\\r\\n'"
refused "any route, a GET too" \
	"b'GET /healthz HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 0\\r\\nContent-Length: 1\\r\\n\\r\\n'"
# Well-formed requests pipelined on one connection are all served.
OUT=$(raw "b'GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /healthz HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'")
assert_eq "two well-formed pipelined requests: two answers" "2 200 closed" "$(cut -d' ' -f1-3 <<<"$OUT")"
api GET /metrics
if grep -q '^ckptconv_http_requests_total{method="GET",route="/v1/jobs/{id}",code="404"}' "$BODY"; then
	fail "no smuggled request was served" "$(grep 'code="404"' "$BODY")"
else
	pass "no smuggled request was served"
fi

# ---- HEAD and Host (RFC 9110 section 9.3.2, RFC 9112 section 3.2) -----------------------------
# head_then_get PATH: on one kept-alive connection, HEAD PATH, then (once
# the HEAD's answer has had 0.5 s to arrive whole) GET PATH with
# Connection: close.  Prints the HEAD's status, whether the GET's answer
# starts right after the HEAD's headers, the GET's status, and whether the
# HEAD's Content-Length (if any) equals the GET's body length.
head_then_get() {
	"$PY" - "$DAEMON_PORT" "$1" <<'PYEOF'
import socket, sys, time
port, path = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=5)
def read_for(seconds, until_close):
    got, end = b"", time.time() + seconds
    s.settimeout(0.1)
    while time.time() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        got += chunk
    return got
s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
head = read_for(0.5, False)
s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
rest = read_for(5, True)
got = head + rest
head_headers, _, after = got.partition(b"\r\n\r\n")
head_status = head_headers.split(b" ", 2)[1].decode() if head_headers.startswith(b"HTTP/1.1 ") else "none"
clean = after.startswith(b"HTTP/1.1 ")
get_headers, _, get_body = after.partition(b"\r\n\r\n")
get_status = get_headers.split(b" ", 2)[1].decode() if clean else "none"
length = None
for line in head_headers.split(b"\r\n")[1:]:
    k, _, v = line.partition(b":")
    if k.strip().lower() == b"content-length":
        length = int(v.strip())
same = "length-ok" if length is None or length == len(get_body) else f"length-{length}-vs-{len(get_body)}"
print(head_status, "clean" if clean else "body:" + repr(after[:40]), get_status, same)
PYEOF
}
post_job "$(job_json "$DATA/hf" "$DATA/head" native '{"dry_run": true}')"
HJ=$(jget id)
for route in /healthz /readyz /metrics /v1/version / /ui/app.js /v1/jobs "/v1/jobs/$HJ" "/v1/jobs/$HJ/tensors"; do
	assert_eq "HEAD $route: its headers, no body; GET on the same connection answered next" \
		"200 clean 200 length-ok" "$(head_then_get "$route")"
done
# (The 405's Content-Length is that of a GET's 405, not of the stream.)
assert_eq "HEAD /v1/jobs/{id}/events: 405, no body, no chunked terminator; GET next answered" \
	"405 clean 200" "$(head_then_get "/v1/jobs/$HJ/events" | cut -d' ' -f1-3)"
OUT=$(raw "b'HEAD /v1/jobs/$HJ/events HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'")
case "$OUT" in
"1 405 closed ") pass "HEAD /v1/jobs/{id}/events: 405 and nothing after its headers" ;;
*) fail "HEAD /v1/jobs/{id}/events: 405 and nothing after its headers" "$OUT" ;;
esac
api HEAD "/v1/jobs/$HJ/events" -I
assert_eq "HEAD /v1/jobs/{id}/events names GET in Allow" "405 GET" "$STATUS $(header Allow)"
OUT=$(raw "b'GET /healthz HTTP/1.1\\r\\n\\r\\n'")
case "$OUT" in
*" 400 closed "*'"code":"malformed_request"'*) pass "HTTP/1.1 without Host: 400 malformed_request" ;;
*) fail "HTTP/1.1 without Host: 400 malformed_request" "$OUT" ;;
esac
OUT=$(raw "b'GET /healthz HTTP/1.1\\r\\nHost: a\\r\\nHost: b\\r\\n\\r\\n'")
case "$OUT" in
"1 400 closed "*'"code":"malformed_request"'*'more than one Host'*) pass "two Host headers: 400 malformed_request" ;;
*) fail "two Host headers: 400 malformed_request" "$OUT" ;;
esac
OUT=$(raw "b'GET /healthz HTTP/1.0\\r\\n\\r\\n'")
assert_eq "HTTP/1.0 without Host: 200" "1 200 closed" "$(cut -d' ' -f1-3 <<<"$OUT")"
daemon_stop

# ---- slow clients ---------------------------------------------------------------------------
# The slow clients: tests/trickle.py (see there what it prints).
TRICKLE=$TOP_SRCDIR/tests/trickle.py

daemon_start --max-connections 100 --max-connections-per-ip 20 --request-timeout 3 \
	--http-threads 2 --health-listen 127.0.0.1:0
HEALTH_PORT=$(grep -m1 -o '"health_port":[0-9]*' "$DAEMON_LOG" | cut -d: -f2)

# One address, 150 trickling connections for 8 s: it gets 20 of them, the
# others are closed at once, none outlives the 3 s request timeout by
# much, and /healthz from 127.0.0.1 on the main listener answers throughout.
read -r SENT FAILED OPENED REFUSED LONGEST HELD _ < <("$PY" "$TRICKLE" "$DAEMON_PORT" 1 150 8 2>"$TEST_TMP/trickle1.err")
assert_eq "one address trickling 150 connections: every probe on the main listener answered" \
	"0 of ${SENT:-?}" "${FAILED:-?} of ${SENT:-?}"
if [ "${HELD:-0}" -ge 10 ] && [ "${HELD:-99}" -le 20 ]; then
	pass "it held at most --max-connections-per-ip 20 connections ($HELD)"
else
	fail "it held at most --max-connections-per-ip 20 connections" "held ${HELD:-?}, refused ${REFUSED:-?} of ${OPENED:-?}"
fi
if "$PY" -c 'import sys; sys.exit(0 if 2.5 <= float(sys.argv[1]) <= 6.5 else 1)' "${LONGEST:-0}"; then
	pass "a trickling connection was cut at --request-timeout 3 (lived ${LONGEST} s)"
else
	fail "a trickling connection was cut at --request-timeout 3" "longest life ${LONGEST:-?} s" "$(cat "$TEST_TMP/trickle1.err")"
fi

# 600 connections from 30 addresses (20 each) for 10 s: far more than
# --max-connections 100, so the main listener is full (connections past
# it wait in the listen queue, and /healthz there goes unanswered); the
# health listener answers every probe within 2 s.
read -r SENT FAILED OPENED REFUSED LONGEST HELD MAIN_SENT MAIN_FAILED _ < <("$PY" "$TRICKLE" "$DAEMON_PORT" 30 20 10 "$HEALTH_PORT" 2>"$TEST_TMP/trickle2.err")
if [ "${HELD:-0}" -ge 500 ] && [ "${MAIN_FAILED:-0}" -gt 0 ]; then
	pass "600 trickling connections fill the main listener (${MAIN_FAILED} of ${MAIN_SENT} probes there failed)"
else
	fail "600 trickling connections fill the main listener" "held ${HELD:-?}, main probes failed ${MAIN_FAILED:-?} of ${MAIN_SENT:-?}"
fi
assert_eq "meanwhile the health listener answered every probe (/healthz, /readyz, /metrics)" \
	"0 of ${SENT:-?}" "${FAILED:-?} of ${SENT:-?}"
if [ "${SENT:-0}" -ge 20 ]; then pass "the probes ran ($SENT)"; else fail "the probes ran" "${SENT:-0}"; fi
if grep -q 'closed [0-9]* connections that sent no whole request in time' "$DAEMON_LOG"; then
	pass "the cut connections are logged"
else
	fail "the cut connections are logged"
fi
# The attack over, the main listener answers again; the health listener
# serves nothing else.
for i in $(seq 50); do
	api GET /healthz --max-time 2
	[ "$STATUS" = 200 ] && break
	sleep 0.1
done
assert_eq "the main listener answers again" 200 "$STATUS"
STATUS=$(curl -s -o "$BODY" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$HEALTH_PORT/v1/jobs")
expect_error "the health listener serves only /healthz, /readyz and /metrics" 404 not_found
daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"
finish
