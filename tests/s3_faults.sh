#!/bin/bash
# SPDX-License-Identifier: MIT
#
# s3_faults.sh: answers S3 gives that s3rver cannot, from a small
# fault-injecting front on 127.0.0.1 that forwards everything else to
# s3rver.  S3 may answer CompleteMultipartUpload with 200 OK and an <Error>
# body (InternalError, SlowDown): that is retried with the same backoff as
# a 500 and the conversion succeeds with the right object; when every
# attempt answers so, the conversion fails with s3_unavailable after the
# configured attempts and publishes nothing.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"

need_binary
start_s3rver dst-bkt

# The front: a threading HTTP/1.1 server that forwards each request to
# s3rver, except CompleteMultipartUpload (POST ...?uploadId=) while the
# number in FAULTS is above 0: that one gets 200, white space (as S3 sends
# while it works) and <Error><Code>CODE</Code>, and the number goes down.
# Every CompleteMultipartUpload is logged as "injected" or "forwarded".
FRONT_PY=$TEST_TMP/front.py
FAULTS=$TEST_TMP/faults
FRONT_LOG=$TEST_TMP/front.log
FRONT_PORT_FILE=$TEST_TMP/front.port
cat >"$FRONT_PY" <<'PYEOF'
import http.client, http.server, sys, threading

upstream, faults, log, port_file = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
lock = threading.Lock()
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-connection"}

def take_fault():
    with lock:
        n, code = open(faults).read().split()
        if int(n) <= 0:
            return None
        open(faults, "w").write(f"{int(n) - 1} {code}\n")
        return code

class Front(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.command == "POST" and "uploadId=" in self.path:
            code = take_fault()
            with lock, open(log, "a") as f:
                f.write(("injected " + code if code else "forwarded") + "\n")
            if code:
                answer = ("\n  \n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
                          + code + "</Code><Message>We encountered an internal error. "
                          "Please try again.</Message><RequestId>F1</RequestId></Error>")
                data = answer.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
        conn = http.client.HTTPConnection(upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
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

FRONT_PID=
stop_front() {
	if [ -n "$FRONT_PID" ]; then
		kill "$FRONT_PID" 2>/dev/null || true
		wait "$FRONT_PID" 2>/dev/null || true
		FRONT_PID=
	fi
}
CLEANUP_HOOKS+=(stop_front)

echo "0 InternalError" >"$FAULTS"
: >"$FRONT_LOG"
python3 "$FRONT_PY" "127.0.0.1:$S3_PORT" "$FAULTS" "$FRONT_LOG" "$FRONT_PORT_FILE" &
FRONT_PID=$!
for i in $(seq 100); do
	[ -s "$FRONT_PORT_FILE" ] && break
	sleep 0.1
done
if [ ! -s "$FRONT_PORT_FILE" ]; then
	fail "the fault-injecting front starts"
	finish
fi
FRONT=http://127.0.0.1:$(cat "$FRONT_PORT_FILE")

# A checkpoint whose single output file (about 7.4 MB) is over one 5 MiB
# part: it goes up as a multipart upload ended by CompleteMultipartUpload.
SRC=$TEST_TMP/src
expect_ok "make the fixture" "$CKPTCONV" fixture --preset tiny --layers 40 --dtype f32 "$SRC" || finish
expect_ok "local twin" "$CKPTCONV" convert --no-fsync --to native "$SRC" "$TEST_TMP/twin"
export CKPTCONV_S3_PART_SIZE=5MiB CKPTCONV_S3_MAX_ATTEMPTS=3

# The first CompleteMultipartUpload answers 200 with InternalError.
echo "1 InternalError" >"$FAULTS"
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
: >"$FRONT_LOG"
echo "2 SlowDown" >"$FAULTS"
expect_ok "200 SlowDown on two Completes: retried, converted" \
	"$CKPTCONV" convert --to native --s3-endpoint-url "$FRONT" "$SRC" s3://dst-bkt/twice/
assert_eq "two 200 errors, then the Complete went through" \
	"injected SlowDown injected SlowDown forwarded" "$(tr '\n' ' ' <"$FRONT_LOG" | sed 's/ $//')"
s3_download s3://dst-bkt/twice/ "$TEST_TMP/twice" || fail "download the output"
same_files "the object is the local conversion's bytes" "$TEST_TMP/twin" "$TEST_TMP/twice"

# Every Complete answers 200 InternalError: s3_unavailable after the three
# attempts, naming the file and the answer; nothing is published.
: >"$FRONT_LOG"
echo "1000 InternalError" >"$FAULTS"
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

finish
