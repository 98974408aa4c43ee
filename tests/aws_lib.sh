# SPDX-License-Identifier: MIT
#
# aws_lib.sh: the credential services' stand-ins for the credentials tests
# (sourced after lib.sh and s3_lib.sh, once start_s3rver has run).
# start_standins runs tests/aws_standins.py on 127.0.0.1: STS, the container
# credentials endpoint, IMDSv2, a port that never answers, a closed port,
# and a front for s3rver that checks every request's signature, session
# token and expiry against what the stand-ins issued.  ckptconv is pointed
# at that front (S3_FRONT); the AWS CLI keeps talking to s3rver directly.
#
# creds_run VAR=VALUE... -- CMD...: runs CMD (as lib.sh's run does) with no
# credentials in its environment but the assignments given, HOME and the
# shared files in the test's directory, instance metadata disabled and the
# front as the S3 endpoint, unless an assignment says otherwise.

# The system's Python when there is one (a pyenv shim costs half a second
# a call).
PY=${PY:-python3}
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
STANDINS_DIR=$TEST_TMP/standins
STANDINS_PID=
STS_URL= CONTAINER_URL= IMDS_URL= S3_FRONT= HANG_PORT= CLOSED_PORT=
CREDS_HOME=$TEST_TMP/home

stop_standins() {
	if [ -n "$STANDINS_PID" ]; then
		kill "$STANDINS_PID" 2>/dev/null || true
		wait "$STANDINS_PID" 2>/dev/null || true
		STANDINS_PID=
	fi
}
CLEANUP_HOOKS+=(stop_standins)

# standins_control JSON: the stand-ins' behaviour from now on (control.json).
standins_control() {
	printf '%s\n' "$1" >"$STANDINS_DIR/control.json.tmp" &&
		mv "$STANDINS_DIR/control.json.tmp" "$STANDINS_DIR/control.json"
}

start_standins() {
	local i port
	mkdir -p "$STANDINS_DIR" "$CREDS_HOME/.aws"
	: >"$STANDINS_DIR/events.jsonl"
	standins_control '{}'
	"$PY" "$TOP_SRCDIR/tests/aws_standins.py" "$STANDINS_DIR" "$S3_PORT" \
		>"$STANDINS_DIR/log" 2>&1 &
	STANDINS_PID=$!
	for i in $(seq 1 100); do
		[ -s "$STANDINS_DIR/ports.json" ] && break
		kill -0 "$STANDINS_PID" 2>/dev/null || break
		sleep 0.1
	done
	if [ ! -s "$STANDINS_DIR/ports.json" ]; then
		fail "the credential stand-ins start" "$(tail -5 "$STANDINS_DIR/log")"
		finish
	fi
	port() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
		"$STANDINS_DIR/ports.json" "$1"; }
	STS_URL=http://127.0.0.1:$(port sts)
	CONTAINER_URL=http://127.0.0.1:$(port container)/creds
	IMDS_URL=http://127.0.0.1:$(port imds)
	S3_FRONT=http://127.0.0.1:$(port s3)
	HANG_PORT=$(port hang)
	CLOSED_PORT=$(port closed)
}

# The variables creds_run clears before applying its assignments.
CREDS_VARIABLES=(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_ROLE_ARN
	AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_SESSION_NAME AWS_ENDPOINT_URL_STS AWS_ENDPOINT_URL
	AWS_PROFILE AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI
	AWS_CONTAINER_AUTHORIZATION_TOKEN AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
	AWS_EC2_METADATA_SERVICE_ENDPOINT)

# creds_env VAR=VALUE...: CREDS_ENV, the arguments of env(1) that make
# that environment (for creds_run, or lib.sh's expect_fail).
creds_env() {
	local v
	CREDS_ENV=()
	for v in "${CREDS_VARIABLES[@]}"; do
		CREDS_ENV+=(-u "$v")
	done
	CREDS_ENV+=(HOME="$CREDS_HOME" AWS_CONFIG_FILE="$CREDS_HOME/.aws/config"
		AWS_SHARED_CREDENTIALS_FILE="$CREDS_HOME/.aws/credentials"
		AWS_EC2_METADATA_DISABLED=true AWS_ENDPOINT_URL_S3="$S3_FRONT" AWS_REGION=us-east-1 "$@")
}

creds_run() {
	local assignments=()
	while [ $# -gt 0 ] && [ "$1" != "--" ]; do
		assignments+=("$1")
		shift
	done
	shift
	creds_env "${assignments[@]+"${assignments[@]}"}"
	run env "${CREDS_ENV[@]}" "$@"
}

# events_count FILTER: how many events of the stand-ins match FILTER, a
# Python expression over the event `e` (a dict).
events_count() {
	"$PY" - "$STANDINS_DIR/events.jsonl" "$1" <<'PYEOF'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(sum(1 for e in events if eval(sys.argv[2], {}, {"e": e})))
PYEOF
}

# events_mark: the number of events so far, for events_since.
events_mark() {
	wc -l <"$STANDINS_DIR/events.jsonl"
}

# events_since MARK FILTER: events after MARK that match FILTER.
events_since() {
	"$PY" - "$STANDINS_DIR/events.jsonl" "$1" "$2" <<'PYEOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()[int(sys.argv[2]):]
events = [json.loads(line) for line in lines if line.strip()]
print(sum(1 for e in events if eval(sys.argv[3], {}, {"e": e})))
PYEOF
}

# issued_secrets: every secret and token the stand-ins issued or accept
# (issued credentials' secrets and session tokens, web identity and container
# tokens, static secrets), one a line, for the no-leak checks.
issued_secrets() {
	"$PY" - "$STANDINS_DIR" <<'PYEOF'
import json, os, sys
d = sys.argv[1]
out = set()
for line in open(os.path.join(d, "events.jsonl")):
    e = json.loads(line)
    for field in ("secret", "token", "web_token"):
        if e.get(field):
            out.add(e[field])
ctl = json.load(open(os.path.join(d, "control.json")))
out.update(ctl.get("web_tokens", []))
if ctl.get("container_token"):
    out.add(ctl["container_token"])
for v in ctl.get("static", {}).values():
    out.add(v["secret"])
    if v.get("token"):
        out.add(v["token"])
print("\n".join(sorted(s for s in out if s)))
PYEOF
}

# no_credentials_in NAME FILE...: no secret or token the stand-ins know of
# appears in the files.
no_credentials_in() {
	local name=$1 found
	shift
	issued_secrets >"$TEST_TMP/known-secrets"
	found=$(grep -l -F -f "$TEST_TMP/known-secrets" "$@" 2>/dev/null | tr '\n' ' ')
	if [ -n "$found" ]; then
		fail "$name" "a secret or token appears in: $found"
		return 1
	fi
	pass "$name"
}
