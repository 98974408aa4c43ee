# SPDX-License-Identifier: MIT
#
# s3_lib.sh: helpers for the object-storage integration scripts (sourced
# after lib.sh).  Starts the s3rver test server (npm, pinned in
# tests/package.json) on 127.0.0.1 with a port it picks and a data
# directory under the test's temporary directory, stops it when the script
# exits, and wraps Debian's AWS CLI as the independent client that puts
# fixtures in and takes results out.  The server accepts the access key
# S3RVER and does not check signatures (tests/check_sigv4.c does); the
# secret used here is distinctive so the scripts can check it never shows.

S3_ACCESS_KEY=S3RVER
S3_SECRET_KEY="s3cret-S3RVER-never-printed"
S3RVER_PID=
S3_PORT=
S3_DATA=$TEST_TMP/s3-data
S3_LOG=$TEST_TMP/s3rver.log
S3_BUCKETS=()
# With S3_TLS_KEY and S3_TLS_CERT set, the server speaks https only.
S3_TLS_KEY=${S3_TLS_KEY:-}
S3_TLS_CERT=${S3_TLS_CERT:-}
S3_SCHEME=http

# The server's launcher: on PATH (scripts/test.sh puts the npm tools there)
# or in the npm directory scripts/install-deps.sh test fills.
s3rver_bin() {
	local dir=${CKPTCONV_NPM_DIR:-/var/cache/ckptconv-test-npm}
	if command -v s3rver >/dev/null 2>&1; then
		command -v s3rver
	elif [ -x "$dir/node_modules/.bin/s3rver" ]; then
		echo "$dir/node_modules/.bin/s3rver"
	else
		return 1
	fi
}

stop_s3rver() {
	if [ -n "$S3RVER_PID" ]; then
		kill "$S3RVER_PID" 2>/dev/null || true
		wait "$S3RVER_PID" 2>/dev/null || true
		S3RVER_PID=
	fi
}
CLEANUP_HOOKS+=(stop_s3rver)

# start_s3rver BUCKET... : starts the server with these buckets (kept in
# S3_BUCKETS for restarts); on a restart the port and data stay the same.
start_s3rver() {
	local bin args=() b i
	if ! bin=$(s3rver_bin); then
		fail "s3rver is installed" "run scripts/install-deps.sh test (npm package s3rver)"
		finish
	fi
	[ $# -gt 0 ] && S3_BUCKETS=("$@")
	for b in "${S3_BUCKETS[@]}"; do
		args+=(--configure-bucket "$b")
	done
	if [ -n "$S3_TLS_CERT" ]; then
		args+=(--key "$S3_TLS_KEY" --cert "$S3_TLS_CERT")
		S3_SCHEME=https
	fi
	mkdir -p "$S3_DATA"
	: >"$S3_LOG"
	NODE_OPTIONS=--openssl-legacy-provider "$bin" --directory "$S3_DATA" --address 127.0.0.1 \
		--port "${S3_PORT:-0}" "${args[@]}" >"$S3_LOG" 2>&1 &
	S3RVER_PID=$!
	# Node can take many seconds to start on a loaded machine.
	for i in $(seq 1 600); do
		if grep -q "listening on 127.0.0.1:" "$S3_LOG"; then
			S3_PORT=$(grep -o "listening on 127.0.0.1:[0-9]*" "$S3_LOG" | head -1 | cut -d: -f2)
			break
		fi
		if ! kill -0 "$S3RVER_PID" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	if [ -z "$S3_PORT" ] || ! kill -0 "$S3RVER_PID" 2>/dev/null; then
		fail "s3rver starts" "$(tail -5 "$S3_LOG")"
		finish
	fi
	export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
	export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
	export AWS_REGION=us-east-1
	export AWS_ENDPOINT_URL_S3=$S3_SCHEME://127.0.0.1:$S3_PORT
	unset AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_DEFAULT_REGION AWS_PROFILE
	unset CKPTCONV_S3_ADDRESSING_STYLE CKPTCONV_S3_MAX_KEYS
	# Keep the AWS CLI away from the user's configuration.
	export AWS_CONFIG_FILE=$TEST_TMP/aws-config AWS_SHARED_CREDENTIALS_FILE=$TEST_TMP/aws-credentials
	: >"$AWS_CONFIG_FILE"
	: >"$AWS_SHARED_CREDENTIALS_FILE"
}

# kill_s3rver: the server dies as in a crash.
kill_s3rver() {
	if [ -n "$S3RVER_PID" ]; then
		kill -9 "$S3RVER_PID" 2>/dev/null || true
		wait "$S3RVER_PID" 2>/dev/null || true
		S3RVER_PID=
	fi
}

# s3cli ARGS...: the AWS CLI against the test server.
s3cli() {
	/usr/bin/aws --endpoint-url "$S3_SCHEME://127.0.0.1:$S3_PORT" "$@"
}

# s3_upload DIR S3URL: a local directory's files under a prefix.
s3_upload() {
	s3cli s3 cp --recursive --only-show-errors "$1" "$2"
}

# s3_download S3URL DIR: a prefix's objects into a directory.
s3_download() {
	mkdir -p "$2" && s3cli s3 cp --recursive --only-show-errors "$1" "$2"
}

# s3_keys S3URL: the keys under a prefix, relative to it, one a line.
s3_keys() {
	local url=$1 bucket prefix
	bucket=${url#s3://}
	bucket=${bucket%%/*}
	prefix=${url#s3://$bucket}
	prefix=${prefix#/}
	s3cli s3api list-objects-v2 --bucket "$bucket" --prefix "$prefix" \
		--query 'Contents[].Key' --output text 2>/dev/null |
		tr '\t' '\n' | grep -v '^None$' | sed "s|^$prefix||" | sort
}

# no_secret_in NAME FILE...: the secret key shows in none of the files.
no_secret_in() {
	local name=$1
	shift
	if grep -l -F "$S3_SECRET_KEY" "$@" >/dev/null 2>&1; then
		fail "$name" "the secret key appears in: $(grep -l -F "$S3_SECRET_KEY" "$@" | tr '\n' ' ')"
		return 1
	fi
	pass "$name"
}

# start_s3_requests_log: starts a front on 127.0.0.1 that passes every
# request on to the test server unchanged and appends "METHOD PATH STATUS"
# to $S3_REQUESTS_LOG for each (s3rver's own log names no request); sets
# S3_FRONT to its URL, to be given to ckptconv as the endpoint.
S3_REQUESTS_LOG=$TEST_TMP/s3-requests.log
S3_FRONT=
S3_FRONT_PID=
start_s3_requests_log() {
	local port_file=$TEST_TMP/s3-front.port
	: >"$S3_REQUESTS_LOG"
	python3 - "127.0.0.1:$S3_PORT" "$S3_REQUESTS_LOG" "$port_file" <<'PYEOF' &
import http.client, http.server, sys, threading
upstream, log, port_file = sys.argv[1:4]
lock = threading.Lock()
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-connection"}

class Front(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn = http.client.HTTPConnection(upstream, timeout=60)
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        with lock, open(log, "a") as f:
            f.write("%s %s %d\n" % (self.command, self.path.split("?")[0], resp.status))
        # A HEAD answer keeps the object's Content-Length.
        head = self.command == "HEAD"
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and (head or k.lower() != "content-length"):
                self.send_header(k, v)
        if not head:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
server.daemon_threads = True
open(port_file, "w").write(str(server.server_address[1]))
server.serve_forever()
PYEOF
	S3_FRONT_PID=$!
	await_port_file "$port_file" "the requests log front"
	S3_FRONT=http://127.0.0.1:$(cat "$port_file")
}
stop_s3_requests_log() {
	if [ -n "$S3_FRONT_PID" ]; then
		kill "$S3_FRONT_PID" 2>/dev/null || true
		wait "$S3_FRONT_PID" 2>/dev/null || true
		S3_FRONT_PID=
	fi
}
CLEANUP_HOOKS+=(stop_s3_requests_log)
