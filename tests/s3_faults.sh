#!/bin/bash
# SPDX-License-Identifier: MIT
#
# s3_faults.sh: answers S3 gives that s3rver cannot, from a small
# fault-injecting front on 127.0.0.1 that forwards everything else to
# s3rver.  S3 may answer CompleteMultipartUpload with 200 OK and an <Error>
# body (InternalError, SlowDown): that is retried with the same backoff as
# a 500 and the conversion succeeds with the right object; when every
# attempt answers so, the conversion fails with s3_unavailable after the
# configured attempts and publishes nothing.  307 TemporaryRedirect is
# followed, signed again for the new host (checked by the stand-ins'
# verifying front), at most 3 times and never to another host or another
# port of the endpoint's host; 301
# PermanentRedirect naming the bucket's region is followed for that and
# every later request, or fails with s3_wrong_region when its endpoint is
# outside the configured one; RequestTimeTooSkewed corrects the clock once,
# then clock_skew; ExpiredToken of a token that is never refreshed fails at
# once naming its source; a failed conversion removes every object it
# wrote, and names any it could not.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"

need_binary
start_s3rver dst-bkt

FRONT_PY=$TEST_TMP/front.py
FAULTS=$TEST_TMP/faults
FRONT_LOG=$TEST_TMP/front.log
FRONT_PORT_FILE=$TEST_TMP/front.port
REQUESTS=$TEST_TMP/requests.log

# The front: a threading HTTP/1.1 server that forwards each request to
# s3rver unless a rule of FAULTS (JSON, read at every request) takes it.
# A rule is {"n": times left, "match": {...}, "answer": {...}}; the first
# rule with n above 0 whose match holds and whose answer applies answers
# the request instead, and its n goes down.  match (all optional):
# "method", "query" (a substring of the query), "suffix" (the path ends
# with it), "host" (the Host header is it).  answer:
#   {"forward": HOST:PORT}     passed on there instead of to s3rver, its
#                              Host kept (not logged as injected)
#   {"status": S, "code": C}   an <Error> answer with that status (200:
#                              after white space, as S3 sends while it works)
#   {"redirect": 307, "to": URL}
#                              TemporaryRedirect, Location URL + the path
#   {"redirect": 301, "region": R, "endpoint": E}
#                              PermanentRedirect with <Endpoint>E and
#                              x-amz-bucket-region R, to requests signed for
#                              another region than R (HEAD: no body)
#   {"skew": SECONDS, "always": B}
#                              a server whose clock is SECONDS ahead: 403
#                              RequestTimeTooSkewed with its Date and
#                              <ServerTime> when x-amz-date is more than 15
#                              minutes off it (always: whatever the date);
#                              as the first rule, the x-amz-date of what is
#                              forwarded is put back on s3rver's clock
# Every injected answer is logged as "injected CODE", every forwarded
# CompleteMultipartUpload (POST ...?uploadId=) as "forwarded"; REQUESTS
# gets "METHOD PATH HOST REGION" for every request forwarded.
cat >"$FRONT_PY" <<'PYEOF'
import datetime, email.utils, http.client, http.server, json, sys, threading, time

upstream, faults, log, port_file, requests = sys.argv[1:6]
lock = threading.Lock()
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-connection"}

def note(path, line):
    with lock, open(path, "a") as f:
        f.write(line + "\n")

def scope_region(headers):
    auth = headers.get("Authorization", "")
    i = auth.find("Credential=")
    parts = auth[i + 11:].split(",")[0].split("/") if i >= 0 else []
    return parts[2] if len(parts) == 5 else ""

def amz_time(headers):
    try:
        return datetime.datetime.strptime(headers.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return 0

def error_xml(code, message, extra=""):
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>" + code + "</Code><Message>"
            + message + "</Message>" + extra + "<RequestId>F1</RequestId></Error>").encode()

MESSAGES = {"InternalError": "We encountered an internal error. Please try again.",
            "SlowDown": "Please reduce your request rate.",
            "AccessDenied": "Access Denied",
            "ExpiredToken": "The provided token has expired."}

def applies(rule, handler):
    m, a = rule.get("match", {}), rule["answer"]
    path, _, query = handler.path.partition("?")
    if "method" in m and m["method"] != handler.command:
        return False
    if "query" in m and m["query"] not in query:
        return False
    if "suffix" in m and not path.endswith(m["suffix"]):
        return False
    if "host" in m and handler.headers.get("Host") != m["host"]:
        return False
    if a.get("redirect") == 301:
        return scope_region(handler.headers) != a["region"]
    if "skew" in a and not a.get("always"):
        return abs(amz_time(handler.headers) - (time.time() + a["skew"])) > 900
    return True

def server_skew():
    with lock:
        return sum(r["answer"].get("skew", 0) for r in json.load(open(faults))[:1])

def take_fault(handler):
    with lock:
        rules = json.load(open(faults))
        for rule in rules:
            if rule["n"] > 0 and applies(rule, handler):
                rule["n"] -= 1
                open(faults, "w").write(json.dumps(rules))
                return rule["answer"]
    return None

class Front(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, data, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def inject(self, a):
        if a.get("redirect") == 307:
            host = a["to"].split("://", 1)[1]
            note(log, "injected TemporaryRedirect")
            self.answer(307, error_xml("TemporaryRedirect", "Please re-send this request to the "
                                       "specified temporary endpoint. Continue to use the original "
                                       "request endpoint for future requests.",
                                       "<Endpoint>" + host + "</Endpoint>"),
                        [("Location", a["to"] + self.path)])
        elif a.get("redirect") == 301:
            note(log, "injected PermanentRedirect")
            self.answer(301, error_xml("PermanentRedirect", "The bucket you are attempting to access "
                                       "must be addressed using the specified endpoint. Please send "
                                       "all future requests to this endpoint.",
                                       "<Endpoint>" + a["endpoint"] + "</Endpoint>"),
                        [("x-amz-bucket-region", a["region"])])
        elif "skew" in a:
            server = time.time() + a["skew"]
            note(log, "injected RequestTimeTooSkewed")
            self.answer(403, error_xml("RequestTimeTooSkewed", "The difference between the request "
                                       "time and the current time is too large.",
                                       "<RequestTime>" + self.headers.get("x-amz-date", "") +
                                       "</RequestTime><ServerTime>" + (a.get("server_time") or time.strftime(
                                           "%Y-%m-%dT%H:%M:%SZ", time.gmtime(server))) +
                                       "</ServerTime><MaxAllowedSkewMilliseconds>900000"
                                       "</MaxAllowedSkewMilliseconds>"),
                        [("Date", email.utils.formatdate(server, usegmt=True))])
        else:
            note(log, "injected " + a["code"])
            data = error_xml(a["code"], MESSAGES.get(a["code"], a["code"]))
            self.answer(a["status"], (b"\n  \n" if a["status"] == 200 else b"") + data)

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        a = take_fault(self)
        if a and "forward" not in a:
            self.inject(a)
            return
        if self.command == "POST" and "uploadId=" in self.path:
            note(log, "forwarded")
        note(requests, " ".join([self.command, self.path, self.headers.get("Host", ""),
                                 scope_region(self.headers)]))
        conn = http.client.HTTPConnection(a["forward"] if a else upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        skew = server_skew()
        if skew and "x-amz-date" in self.headers:
            # s3rver checks the request time against its own clock
            headers["x-amz-date"] = time.strftime(
                "%Y%m%dT%H%M%SZ", time.gmtime(amz_time(self.headers) - skew))
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        # a HEAD's length is the object's, as the upstream gave it
        length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length or "0")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
server.daemon_threads = True
open(port_file, "w").write(str(server.server_address[1]))
server.serve_forever()
PYEOF

# faults JSON: the front's rules from now on, its logs emptied.
faults() {
	printf '%s\n' "$1" >"$FAULTS.tmp" && mv "$FAULTS.tmp" "$FAULTS"
	: >"$FRONT_LOG"
	: >"$REQUESTS"
}
# complete_fault N CODE: the next N CompleteMultipartUploads answer 200 CODE.
complete_fault() {
	faults "[{\"n\": $1, \"match\": {\"method\": \"POST\", \"query\": \"uploadId=\"},
		\"answer\": {\"status\": 200, \"code\": \"$2\"}}]"
}
# injected CODE: how many answers CODE the front injected.
injected() {
	grep -c "^injected $1\$" "$FRONT_LOG" || true
}

FRONT_PID=
stop_front() {
	if [ -n "$FRONT_PID" ]; then
		kill "$FRONT_PID" 2>/dev/null || true
		wait "$FRONT_PID" 2>/dev/null || true
		FRONT_PID=
	fi
}
CLEANUP_HOOKS+=(stop_front)

faults '[]'
python3 "$FRONT_PY" "127.0.0.1:$S3_PORT" "$FAULTS" "$FRONT_LOG" "$FRONT_PORT_FILE" "$REQUESTS" &
FRONT_PID=$!
await_port_file "$FRONT_PORT_FILE" "the fault-injecting front"
FRONT=http://127.0.0.1:$(cat "$FRONT_PORT_FILE")

# A checkpoint whose single output file (about 7.4 MB) is over one 5 MiB
# part: it goes up as a multipart upload ended by CompleteMultipartUpload.
SRC=$TEST_TMP/src
expect_ok "make the fixture" "$CKPTCONV" fixture --preset tiny --layers 40 --dtype f32 "$SRC" || finish
expect_ok "local twin" "$CKPTCONV" convert --no-fsync --to native "$SRC" "$TEST_TMP/twin"
export CKPTCONV_S3_PART_SIZE=5MiB CKPTCONV_S3_MAX_ATTEMPTS=3

# The first CompleteMultipartUpload answers 200 with InternalError.
complete_fault 1 InternalError
expect_ok "200 InternalError on the first Complete: retried, converted" \
	"$CKPTCONV" convert --to native --s3-endpoint-url "$FRONT" "$SRC" s3://dst-bkt/once/
assert_eq "one Complete got the 200 error, the retry went through" \
	"injected InternalError forwarded" "$(tr '\n' ' ' <"$FRONT_LOG" | sed 's/ $//')"
if grep -q "CompleteMultipartUpload answered 200 InternalError.*retrying (attempt 2 of 3)" \
	"$TEST_TMP/run.err"; then
	pass "the retry is logged as a transient error"
else
	fail "the retry is logged as a transient error" "$(tail -3 "$TEST_TMP/run.err")"
fi
s3_download s3://dst-bkt/once/ "$TEST_TMP/once" || fail "download the output"
same_files "the object is the local conversion's bytes" "$TEST_TMP/twin" "$TEST_TMP/once"

# SlowDown twice: retried twice with backoff, then converted.
complete_fault 2 SlowDown
expect_ok "200 SlowDown on two Completes: retried, converted" \
	"$CKPTCONV" convert --to native --s3-endpoint-url "$FRONT" "$SRC" s3://dst-bkt/twice/
assert_eq "two 200 errors, then the Complete went through" \
	"injected SlowDown injected SlowDown forwarded" "$(tr '\n' ' ' <"$FRONT_LOG" | sed 's/ $//')"
s3_download s3://dst-bkt/twice/ "$TEST_TMP/twice" || fail "download the output"
same_files "the object is the local conversion's bytes" "$TEST_TMP/twin" "$TEST_TMP/twice"

# Every Complete answers 200 InternalError: s3_unavailable after the three
# attempts, naming the file and the answer; nothing is published.
complete_fault 1000 InternalError
expect_fail "a persistent 200 error fails after the retries" s3_unavailable \
	"s3://dst-bkt/always/model.safetensors: CompleteMultipartUpload answered 200 InternalError" \
	"$CKPTCONV" convert --to native --s3-endpoint-url "$FRONT" "$SRC" s3://dst-bkt/always/
if grep -q "gave up after 3 attempts" "$TEST_TMP/run.err"; then
	pass "it says how many attempts were made"
else
	fail "it says how many attempts were made" "$(tail -2 "$TEST_TMP/run.err")"
fi
assert_eq "three Completes were tried" 3 "$(grep -c injected "$FRONT_LOG")"
assert_eq "nothing published under the destination" "" "$(s3_keys s3://dst-bkt/always/)"

# ---- answers that send a request elsewhere, or refuse its time ----

# A redirect's target: the stand-ins' S3 front, which checks every
# request's signature and that its Host names it, so a request that is not
# signed again for the new host is refused there.
. "$(dirname "$0")/aws_lib.sh"
unset CKPTCONV_S3_PART_SIZE
start_standins
standins_control "{\"static\": {\"$S3_ACCESS_KEY\": {\"secret\": \"$S3_SECRET_KEY\", \"token\": null}}}"
FRONT_HOST=${FRONT#http://}
SMALL=$TEST_TMP/small
expect_ok "a small fixture" "$CKPTCONV" fixture --preset tiny --layers 2 --dtype f32 "$SMALL" || finish
# Three shards, an index and config.json: several objects to publish.
SHARDS=(--max-shard-size 150KB)
expect_ok "its local twin" "$CKPTCONV" convert --no-fsync --to native "${SHARDS[@]}" "$SMALL" \
	"$TEST_TMP/small-twin"
TEMP_MESSAGE="Please re-send this request to the specified temporary endpoint. Continue to use the original request endpoint for future requests."
PERM_MESSAGE="The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint."
SKEW_MESSAGE="The difference between the request time and the current time is too large."

# 307 TemporaryRedirect on every request, from the endpoint localhost:PORT
# to s3.localhost:PORT, a name under its host on its port (curl resolves
# both to loopback itself): each is signed again for the host of Location
# and sent there once; the front passes what names s3.localhost on to the
# stand-in, Host kept, and the stand-in accepts every one, checking its
# signature for that Host.
FRONT_PORT=${FRONT_HOST#*:}
LOCAL_FRONT=http://localhost:$FRONT_PORT
MOVED_HOST=s3.localhost:$FRONT_PORT
faults "[{\"n\": 1000, \"match\": {\"host\": \"$MOVED_HOST\"}, \"answer\": {\"forward\": \"${S3_FRONT#http://}\"}},
	{\"n\": 1000, \"answer\": {\"redirect\": 307, \"to\": \"http://$MOVED_HOST\"}}]"
standins_control "{\"static\": {\"$S3_ACCESS_KEY\": {\"secret\": \"$S3_SECRET_KEY\", \"token\": null}}, \"s3_hosts\": [\"$MOVED_HOST\"]}"
: >"$STANDINS_DIR/events.jsonl"
expect_ok "307 on every request: followed, converted" "$CKPTCONV" convert --to native \
	"${SHARDS[@]}" --s3-endpoint-url "$LOCAL_FRONT" "$SMALL" s3://dst-bkt/moved/
assert_eq "each redirected request reached the stand-in, signed for it" "$(injected TemporaryRedirect)" \
	"$(events_count 'e["event"] == "s3" and e["verdict"] == "ok"')"
assert_eq "the stand-in refused none" 0 "$(events_count 'e["event"] == "s3" and e["verdict"] != "ok"')"
assert_eq "15 requests were redirected: every one of the run, the checkpoint objects and the plan and checksum records among them" 15 \
	"$(injected TemporaryRedirect)"
assert_eq "every request the front passed on named the redirect's host" "$MOVED_HOST" \
	"$(awk '{print $3}' "$REQUESTS" | sort -u | tr '\n' ' ' | sed 's/ $//')"
if grep -qF "s3://dst-bkt/moved/config.json: PutObject answered 307 TemporaryRedirect ($TEMP_MESSAGE); sent again to $MOVED_HOST" "$TEST_TMP/run.err"; then
	pass "the redirect is logged with the host it went to"
else
	fail "the redirect is logged with the host it went to" "$(head -3 "$TEST_TMP/run.err")"
fi
s3_download s3://dst-bkt/moved/ "$TEST_TMP/moved" || fail "download the output"
same_files "the redirected objects are the local conversion's bytes" "$TEST_TMP/small-twin" \
	"$TEST_TMP/moved"
standins_control "{\"static\": {\"$S3_ACCESS_KEY\": {\"secret\": \"$S3_SECRET_KEY\", \"token\": null}}}"

# A 307 to another port of the endpoint's host: credentials do not follow,
# and nothing connects to that port (a listener there counts connections).
OTHER_PY=$TEST_TMP/other.py
OTHER_PORT_FILE=$TEST_TMP/other.port
OTHER_CONNECTIONS=$TEST_TMP/other.connections
cat >"$OTHER_PY" <<'PYEOF'
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
while True:
    conn, _ = s.accept()
    with open(sys.argv[2], "a") as f:
        f.write("connection\n")
    conn.close()
PYEOF
: >"$OTHER_CONNECTIONS"
python3 "$OTHER_PY" "$OTHER_PORT_FILE" "$OTHER_CONNECTIONS" &
OTHER_PID=$!
stop_other() {
	if [ -n "$OTHER_PID" ]; then
		kill "$OTHER_PID" 2>/dev/null || true
		wait "$OTHER_PID" 2>/dev/null || true
		OTHER_PID=
	fi
}
CLEANUP_HOOKS+=(stop_other)
for i in $(seq 100); do
	[ -s "$OTHER_PORT_FILE" ] && break
	sleep 0.1
done
OTHER_PORT=$(cat "$OTHER_PORT_FILE" 2>/dev/null)
if [ -z "$OTHER_PORT" ]; then
	fail "the listener on another port starts"
	finish
fi
faults "[{\"n\": 1000, \"answer\": {\"redirect\": 307, \"to\": \"http://localhost:$OTHER_PORT\"}}]"
expect_fail "a redirect to another port of the endpoint's host is not followed" s3_error \
	"s3://dst-bkt/port/: ListObjectsV2 answered 307 TemporaryRedirect ($TEMP_MESSAGE) to http://localhost:$OTHER_PORT, not followed: 'localhost:$OTHER_PORT' is on port $OTHER_PORT, not the endpoint's port $FRONT_PORT" \
	"$CKPTCONV" convert --to native --s3-endpoint-url "$LOCAL_FRONT" "$SMALL" s3://dst-bkt/port/
assert_eq "one request was redirected" 1 "$(injected TemporaryRedirect)"
assert_eq "no connection reached the other port" 0 "$(wc -l <"$OTHER_CONNECTIONS")"
assert_eq "nothing published under the prefix" "" "$(s3_keys s3://dst-bkt/port/)"
stop_other

# A 307 back to the same place, again and again: followed 3 times, then
# s3_error; nothing published.
faults "[{\"n\": 1000, \"answer\": {\"redirect\": 307, \"to\": \"$FRONT\"}}]"
expect_fail "a redirect loop stops after 3 redirects" s3_error \
	"s3://dst-bkt/loop/: ListObjectsV2 answered 307 TemporaryRedirect ($TEMP_MESSAGE); not followed: redirected 3 times already, at most 3 are followed" \
	"$CKPTCONV" convert --to native --s3-endpoint-url "$FRONT" "$SMALL" s3://dst-bkt/loop/
assert_eq "the request went 4 times" 4 "$(injected TemporaryRedirect)"
assert_eq "nothing published under the loop's prefix" "" "$(s3_keys s3://dst-bkt/loop/)"

# A 307 to another host than the endpoint's: credentials do not follow.
faults "[{\"n\": 1000, \"answer\": {\"redirect\": 307, \"to\": \"http://127.0.0.2:${FRONT_HOST#*:}\"}}]"
expect_fail "a redirect to another host is not followed" s3_error \
	"s3://dst-bkt/far/: ListObjectsV2 answered 307 TemporaryRedirect ($TEMP_MESSAGE) to http://127.0.0.2:${FRONT_HOST#*:}, not followed: '127.0.0.2' is neither the endpoint's host '127.0.0.1' nor under it" \
	"$CKPTCONV" convert --to native --s3-endpoint-url "$FRONT" "$SMALL" s3://dst-bkt/far/
assert_eq "one request was redirected, none sent there" 1 "$(injected TemporaryRedirect)"

# 301 PermanentRedirect to requests signed for any region but eu-west-1:
# the first is signed again for eu-west-1, and so is every later request
# for the bucket, at once.
faults "[{\"n\": 1000, \"answer\": {\"redirect\": 301, \"region\": \"eu-west-1\", \"endpoint\": \"$FRONT_HOST\"}}]"
expect_ok "301 with the bucket's region: followed, converted" "$CKPTCONV" convert --to native \
	"${SHARDS[@]}" --s3-endpoint-url "$FRONT" "$SMALL" s3://dst-bkt/region/
assert_eq "one request was redirected, the later ones went to the region at once" 1 \
	"$(injected PermanentRedirect)"
assert_eq "every request the store saw was signed for eu-west-1" "eu-west-1" \
	"$(awk '{print $4}' "$REQUESTS" | sort -u | tr '\n' ' ' | sed 's/ $//')"
if grep -qF "s3://dst-bkt: the bucket is in region eu-west-1, not us-east-1 as configured; requests go to $FRONT_HOST (set AWS_REGION=eu-west-1 to go there at once)" "$TEST_TMP/run.err"; then
	pass "the region is named in a warning"
else
	fail "the region is named in a warning" "$(head -3 "$TEST_TMP/run.err")"
fi
s3_download s3://dst-bkt/region/ "$TEST_TMP/region" || fail "download the output"
same_files "the objects are the local conversion's bytes" "$TEST_TMP/small-twin" "$TEST_TMP/region"

# A 301 naming an endpoint outside the configured one: s3_wrong_region,
# naming the region.
faults '[{"n": 1000, "answer": {"redirect": 301, "region": "eu-west-1", "endpoint": "dst-bkt.s3.eu-west-1.amazonaws.com"}}]'
expect_fail "a 301 to an endpoint outside the configured one" s3_wrong_region \
	"s3://dst-bkt/aws/: ListObjectsV2 answered 301 PermanentRedirect ($PERM_MESSAGE): the bucket is in region eu-west-1, not us-east-1; not followed to dst-bkt.s3.eu-west-1.amazonaws.com ('dst-bkt.s3.eu-west-1.amazonaws.com' is neither the endpoint's host '127.0.0.1' nor under it): set the region to eu-west-1 (AWS_REGION, --s3-region) and an endpoint of it" \
	"$CKPTCONV" convert --to native --s3-endpoint-url "$FRONT" "$SMALL" s3://dst-bkt/aws/

# A server whose clock is an hour ahead: RequestTimeTooSkewed once, then
# every request is signed with its time and the conversion succeeds.
faults '[{"n": 1000, "answer": {"skew": 3600}}]'
expect_ok "RequestTimeTooSkewed: the clock is corrected, converted" "$CKPTCONV" convert \
	--to native "${SHARDS[@]}" --s3-endpoint-url "$FRONT" "$SMALL" s3://dst-bkt/skewed/
assert_eq "one request was refused, the later ones signed with the server's time" 1 \
	"$(injected RequestTimeTooSkewed)"
if grep -qE "s3://dst-bkt/skewed/: ListObjectsV2 answered 403 RequestTimeTooSkewed \($SKEW_MESSAGE\): this machine's clock is 3(599|600|601) s behind the server's; requests are signed with the server's time from now on" "$TEST_TMP/run.err"; then
	pass "the correction is logged with the offset"
else
	fail "the correction is logged with the offset" "$(head -3 "$TEST_TMP/run.err")"
fi
s3_download s3://dst-bkt/skewed/ "$TEST_TMP/skewed" || fail "download the output"
same_files "the objects are the local conversion's bytes" "$TEST_TMP/small-twin" "$TEST_TMP/skewed"

# A server that refuses the time whatever it is: clock_skew after one
# correction, not access denied.
faults '[{"n": 1000, "answer": {"skew": 3600, "always": true}}]'
expect_fail "RequestTimeTooSkewed again after the correction" clock_skew \
	"s3://dst-bkt/skewed2/: ListObjectsV2 answered 403 RequestTimeTooSkewed ($SKEW_MESSAGE), again after signing with the server's time: this machine's clock is" \
	"$CKPTCONV" convert --to native --s3-endpoint-url "$FRONT" "$SMALL" s3://dst-bkt/skewed2/
assert_eq "sent twice: before and after the correction" 2 "$(injected RequestTimeTooSkewed)"
assert_eq "nothing published" "" "$(s3_keys s3://dst-bkt/skewed2/)"

# A ServerTime that x-amz-date cannot spell (a five-digit year) is not
# taken: clock_skew at once, nothing signed with it.
faults '[{"n": 1000, "answer": {"skew": 3600, "server_time": "99999-01-01T00:00:00Z"}}]'
expect_fail "a ServerTime out of range" clock_skew \
	"s3://dst-bkt/skewed3/: ListObjectsV2 answered 403 RequestTimeTooSkewed ($SKEW_MESSAGE), with a server time out of range (99999-01-01T00:00:00Z): not taken; this machine's clock or the server's is wrong" \
	"$CKPTCONV" convert --to native --s3-endpoint-url "$FRONT" "$SMALL" s3://dst-bkt/skewed3/
assert_eq "sent once" 1 "$(injected RequestTimeTooSkewed)"
assert_eq "nothing published" "" "$(s3_keys s3://dst-bkt/skewed3/)"

# ExpiredToken for a session token of the environment or the shared files
# (read once, never refreshed): s3_credentials at once, naming the source.
faults '[{"n": 1000, "answer": {"status": 400, "code": "ExpiredToken"}}]'
expect_fail "ExpiredToken, token from the environment" s3_credentials \
	"s3://dst-bkt/expired/: ListObjectsV2 answered 400 ExpiredToken (The provided token has expired.): the session token of the credentials from the environment (AWS_SESSION_TOKEN) has expired; give new temporary credentials" \
	env AWS_SESSION_TOKEN=token-of-an-hour-ago "$CKPTCONV" convert --to native \
	--s3-endpoint-url "$FRONT" "$SMALL" s3://dst-bkt/expired/
assert_eq "not retried" 1 "$(injected ExpiredToken)"
faults '[{"n": 1000, "answer": {"status": 400, "code": "ExpiredToken"}}]'
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\naws_session_token = token-of-an-hour-ago\n' \
	"$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$TEST_TMP/shared-credentials"
expect_fail "ExpiredToken, token from the shared files" s3_credentials \
	"s3://dst-bkt/expired/: ListObjectsV2 answered 400 ExpiredToken (The provided token has expired.): the session token of the credentials from the shared files (aws_session_token of the profile) has expired; give new temporary credentials" \
	env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_SHARED_CREDENTIALS_FILE="$TEST_TMP/shared-credentials" \
	"$CKPTCONV" convert --to native --s3-endpoint-url "$FRONT" "$SMALL" s3://dst-bkt/expired/
assert_eq "not retried" 1 "$(injected ExpiredToken)"

# ---- a failed local-to-S3 conversion removes every object it wrote ----

# The last shard's PutObject refused: config.json and the other shards,
# published before, are removed.
faults '[{"n": 1000, "match": {"method": "PUT", "suffix": "/model-00003-of-00003.safetensors"}, "answer": {"status": 403, "code": "AccessDenied"}}]'
expect_fail "the last shard refused" s3_access_denied \
	"s3://dst-bkt/failed/model-00003-of-00003.safetensors: PutObject answered 403 AccessDenied (Access Denied)" \
	"$CKPTCONV" convert --to native "${SHARDS[@]}" --s3-endpoint-url "$FRONT" "$SMALL" s3://dst-bkt/failed/
assert_eq "config.json was published before the failure" 1 \
	"$(grep -c '^PUT /dst-bkt/failed/config.json ' "$REQUESTS")"
assert_eq "nothing left under the prefix" "" "$(s3_keys s3://dst-bkt/failed/)"

# The index, the last object, refused: every shard and config.json go.
faults '[{"n": 1000, "match": {"method": "PUT", "suffix": "/model.safetensors.index.json"}, "answer": {"status": 403, "code": "AccessDenied"}}]'
expect_fail "the index refused" s3_access_denied \
	"s3://dst-bkt/failed2/model.safetensors.index.json: PutObject answered 403 AccessDenied (Access Denied)" \
	"$CKPTCONV" convert --to native "${SHARDS[@]}" --s3-endpoint-url "$FRONT" "$SMALL" s3://dst-bkt/failed2/
assert_eq "all three shards were published before the failure" 3 \
	"$(grep -c '^PUT /dst-bkt/failed2/model-0000' "$REQUESTS")"
assert_eq "nothing left under the prefix" "" "$(s3_keys s3://dst-bkt/failed2/)"

# An object that cannot be removed is named; the error stays the first.
faults '[{"n": 1, "match": {"method": "PUT", "suffix": "/model.safetensors.index.json"}, "answer": {"status": 403, "code": "AccessDenied"}},
	{"n": 1, "match": {"method": "DELETE", "suffix": "/config.json"}, "answer": {"status": 403, "code": "AccessDenied"}}]'
expect_fail "the index refused, config.json not removable" s3_access_denied \
	"s3://dst-bkt/failed3/model.safetensors.index.json: PutObject answered 403 AccessDenied (Access Denied)" \
	"$CKPTCONV" convert --to native "${SHARDS[@]}" --s3-endpoint-url "$FRONT" "$SMALL" s3://dst-bkt/failed3/
if grep -qF "s3://dst-bkt/failed3/config.json: not removed after the failure (s3_access_denied: s3://dst-bkt/failed3/config.json: DeleteObject answered 403 AccessDenied (Access Denied)); remove it by hand" "$TEST_TMP/run.err"; then
	pass "what could not be removed is named"
else
	fail "what could not be removed is named" "$(head -3 "$TEST_TMP/run.err")"
fi
assert_eq "only config.json is left" "config.json" "$(s3_keys s3://dst-bkt/failed3/)"

finish
