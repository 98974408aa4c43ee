#!/bin/bash
# SPDX-License-Identifier: MIT
#
# s3_source_changed.sh: a job reads one version of each source object or
# fails.  The shards of a checkpoint are uploaded again under the same keys
# (same sizes, other bytes) while a throttled S3 -> local conversion runs:
# the job fails with source_changed naming the object and leaves its
# destination empty.  Every ranged GET carries If-Match with the ETag
# recorded when the plan was made.  s3rver does not honour If-Match on GET
# (it answers 206 with the new bytes), and replaces an object in place
# (a GET during a PUT may see part of it, where S3 replaces objects
# atomically), so both runs go through a small front on 127.0.0.1 that
# serves one request at a time, PUTs of the new version included: in the
# first run it answers 412 PreconditionFailed, as S3 does, when If-Match is
# not the object's ETag; in the second it ignores If-Match like s3rver,
# and the answer's other ETag gives the change away.  Then
# partitions: partition 1 of 2 started after a shard was uploaded again
# following partition 0's plan refuses the source, and so does finalize.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"

need_binary
start_s3rver src-bkt

T=$TEST_TMP
SRC=$T/src
SHARD=model-00006-of-00006.safetensors
expect_ok "fixture: 6 shards" "$CKPTCONV" fixture --preset tiny --layers 6 \
	--max-shard-size 100KB "$SRC" || finish

# The next version: every shard's last 256 bytes inverted, sizes kept.
NEXT=$T/next
mkdir -p "$NEXT"
cp "$SRC"/*.safetensors "$NEXT"/
python3 - "$NEXT" <<'PYEOF'
import glob, os, sys
for path in glob.glob(os.path.join(sys.argv[1], "*.safetensors")):
    with open(path, "r+b") as f:
        f.seek(-256, os.SEEK_END)
        data = f.read(256)
        f.seek(-256, os.SEEK_END)
        f.write(bytes(b ^ 0xFF for b in data))
PYEOF

# The front: forwards every request to s3rver, one at a time; with 1 as its
# last argument a GET with If-Match is answered 412 with S3's <Error> when
# the object's ETag (asked of s3rver with HEAD) is another, each such
# answer logged as "412 PATH".
FRONT_PY=$T/front.py
FRONT_LOG=$T/front.log
FRONT_PORT_FILE=$T/front.port
cat >"$FRONT_PY" <<'PYEOF'
import http.client, http.server, sys, threading

upstream, log, port_file = sys.argv[1], sys.argv[2], sys.argv[3]
honour_if_match = sys.argv[4] == "1"
lock = threading.Lock()
atomic = threading.Lock() # one request at a time: replacing an object is atomic
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-connection"}

def forward(method, path, headers, body):
    conn = http.client.HTTPConnection(upstream, timeout=60)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data

class Front(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, reason, headers, data):
        # A HEAD answer keeps the object's Content-Length.
        keep_length = self.command == "HEAD"
        self.send_response(status, reason)
        for k, v in headers:
            if k.lower() not in HOP and (keep_length or k.lower() != "content-length"):
                self.send_header(k, v)
        if not keep_length:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with atomic:
            self.serve(body)

    def serve(self, body):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        match = self.headers.get("If-Match")
        if self.command == "GET" and match and honour_if_match:
            head = {k: v for k, v in headers.items() if k.lower() not in ("range", "if-match")}
            resp, _ = forward("HEAD", self.path, head, b"")
            etag = resp.getheader("ETag")
            if resp.status == 200 and etag != match:
                with lock, open(log, "a") as f:
                    f.write("412 " + self.path + "\n")
                data = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
                        "PreconditionFailed</Code><Message>At least one of the pre-conditions"
                        " you specified did not hold</Message><Condition>If-Match</Condition>"
                        "<RequestId>F1</RequestId></Error>").encode()
                self.answer(412, "Precondition Failed", [("Content-Type", "application/xml")],
                            data)
                return
        resp, data = forward(self.command, self.path, headers, body)
        self.answer(resp.status, resp.reason, resp.getheaders(), data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
server.daemon_threads = True
open(port_file, "w").write(str(server.server_address[1]))
server.serve_forever()
PYEOF

FRONT_PIDS=()
stop_fronts() {
	local pid
	for pid in "${FRONT_PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	FRONT_PIDS=()
}
CLEANUP_HOOKS+=(stop_fronts)
: >"$FRONT_LOG"

# start_front HONOUR: sets FRONT to the URL of a new front.
start_front() {
	local port_file=$FRONT_PORT_FILE.$1
	python3 "$FRONT_PY" "127.0.0.1:$S3_PORT" "$FRONT_LOG" "$port_file" "$1" &
	FRONT_PIDS+=($!)
	await_port_file "$port_file" "the front"
	FRONT=http://127.0.0.1:$(cat "$port_file")
}

# reupload_while_running NAME PREFIX ENDPOINT: a throttled conversion of
# s3://src-bkt/PREFIX/ into $T/out-NAME through ENDPOINT; once it writes,
# the next version of every shard goes up under the same keys (through
# ENDPOINT too).  It must
# fail with source_changed naming an object of the prefix, having
# published nothing.
reupload_while_running() {
	local name=$1 prefix=$2 endpoint=$3 pid rc=0 line i
	s3_upload "$SRC" "s3://src-bkt/$prefix/" || fail "$name: upload the fixture"
	"$CKPTCONV" convert --no-fsync --to native --max-rate 32KB --s3-endpoint-url "$endpoint" \
		"s3://src-bkt/$prefix/" "$T/out-$name" >"$T/$name.out" 2>"$T/$name.err" &
	pid=$!
	for i in $(seq 600); do
		if [ -n "$(find "$T/out-$name" -mindepth 1 2>/dev/null | head -1)" ] ||
			! kill -0 "$pid" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	/usr/bin/aws --endpoint-url "$endpoint" s3 cp --recursive --only-show-errors "$NEXT" \
		"s3://src-bkt/$prefix/" || fail "$name: upload the next version"
	wait "$pid" || rc=$?
	line=$(error_line "$T/$name.err")
	if [ "$rc" -eq 1 ] && [[ "$line" == "ckptconv: source_changed: s3://src-bkt/$prefix/model-000"* ]]; then
		pass "$name: exit 1 with source_changed naming the object"
	else
		fail "$name: exit 1 with source_changed naming the object" "exit status $rc" \
			"$(cat "$T/$name.err")"
	fi
	expect_empty "$name: nothing left in the destination" "$T/out-$name"
}

start_front 1
reupload_while_running if-match a "$FRONT"
if grep -q "^412 /src-bkt/a/model-000" "$FRONT_LOG" &&
	grep -q "GetObject answered 412 PreconditionFailed" "$T/if-match.err"; then
	pass "if-match: a GET with If-Match was answered 412, reported as such"
else
	fail "if-match: a GET with If-Match was answered 412, reported as such" \
		"$(cat "$FRONT_LOG")" "$(cat "$T/if-match.err")"
fi
if grep -q "retrying" "$T/if-match.err"; then
	fail "if-match: a 412 is not retried" "$(cat "$T/if-match.err")"
else
	pass "if-match: a 412 is not retried"
fi

start_front 0
reupload_while_running etag b "$FRONT"
if grep -q "ETag \"[0-9a-f]*\" -> \"[0-9a-f]*\"" "$T/etag.err"; then
	pass "etag: the answer's other ETag is named"
else
	fail "etag: the answer's other ETag is named" "$(cat "$T/etag.err")"
fi

# --- partitions started at different times -----------------------------------

s3_upload "$SRC" s3://src-bkt/p/ || fail "upload the fixture for the partitions"
expect_ok "partition 0/2 from S3" "$CKPTCONV" convert --no-fsync --to native \
	--partition 0/2 s3://src-bkt/p/ "$T/pout"
if grep -q '"etag"' "$T/pout/ckptconv-plan.json"; then
	pass "the plan manifest records the objects' ETags"
else
	fail "the plan manifest records the objects' ETags" "$(head -c 2000 "$T/pout/ckptconv-plan.json")"
fi
before=$(cd "$T/pout" && find . | sort)
s3cli s3 cp --only-show-errors "$NEXT/$SHARD" "s3://src-bkt/p/$SHARD" ||
	fail "upload the next version of $SHARD"
expect_fail "partition 1/2 after the object changed" source_changed "$SHARD" \
	"$CKPTCONV" convert --no-fsync --to native --partition 1/2 s3://src-bkt/p/ "$T/pout"
assert_eq "partition 1/2 wrote nothing" "$before" "$(cd "$T/pout" && find . | sort)"
expect_fail "finalize after the object changed" source_changed "$SHARD" \
	"$CKPTCONV" finalize "$T/pout"
if [ ! -e "$T/pout/model.safetensors.index.json" ] && [ ! -e "$T/pout/config.json" ]; then
	pass "finalize published neither the index nor config.json"
else
	fail "finalize published neither the index nor config.json" "$(ls -a "$T/pout")"
fi
finish
