#!/bin/bash
# SPDX-License-Identifier: MIT
#
# s3_credentials.sh: where `ckptconv convert` gets its object store
# credentials, against stand-ins on 127.0.0.1 (tests/aws_standins.py) in
# front of s3rver that check every request's signature, session token and
# expiry.  Each source of the chain used alone (environment keys with and
# without a session token, web identity through STS, the shared files'
# credentials and config profiles, the container endpoint with a token file
# or a token, IMDSv2), then all of them at once, dropped one by one
# (precedence); then the failures, each an s3_credentials error naming the
# source, with nothing written: keys and tokens that hold a control
# character (from each source), STS, container and instance metadata
# errors (a service's echo of the token scrubbed), malformed answers,
# expired credentials, timeouts, a closed port,
# a container host that is not allowed, a profile that does not exist,
# nothing configured.  No secret or token appears in any output.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
. "$(dirname "$0")/aws_lib.sh"

need_binary
start_s3rver src-bkt
start_standins
G=$GOLDEN_DIR/tiny
SRC=s3://src-bkt/tiny/hf/
s3_upload "$G/hf" "$SRC" || fail "upload the golden HF checkpoint"

ROLE_ARN=arn:aws:iam::123456789012:role/ckptconv
WEB_TOKEN=jwt-pod-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
CTR_TOKEN=ctr-auth-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
ENV_SECRET=env-secret-$RANDOM$RANDOM
ENV_TOKEN=env-session-$RANDOM$RANDOM
FILE_SECRET=file-secret-$RANDOM$RANDOM
CFG_SECRET=cfg-secret-$RANDOM$RANDOM
CFG_TOKEN=cfg-session-$RANDOM$RANDOM
DEFAULT_SECRET=default-secret-$RANDOM$RANDOM
CONTROL=$(
	cat <<EOF
{"role_arn": "$ROLE_ARN", "web_tokens": ["$WEB_TOKEN"], "container_token": "$CTR_TOKEN",
 "static": {"AKIDENVSTATIC": {"secret": "$ENV_SECRET", "token": null},
            "ASIAENVTEMP": {"secret": "$ENV_SECRET", "token": "$ENV_TOKEN"},
            "AKIDFILEPROFILE": {"secret": "$FILE_SECRET", "token": null},
            "ASIACFGPROFILE": {"secret": "$CFG_SECRET", "token": "$CFG_TOKEN"},
            "AKIDDEFAULT": {"secret": "$DEFAULT_SECRET", "token": null}}}
EOF
)
standins_control "$CONTROL"
printf '%s\n' "$WEB_TOKEN" >"$CREDS_HOME/web-token"
printf '%s' "$CTR_TOKEN" >"$CREDS_HOME/container-token"
cat >"$CREDS_HOME/.aws/credentials" <<EOF
# profiles of the credentials file have no "profile " prefix
[ci]
aws_access_key_id = AKIDFILEPROFILE
aws_secret_access_key = $FILE_SECRET ; a comment
[spare]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = $DEFAULT_SECRET
EOF
cat >"$CREDS_HOME/.aws/config" <<EOF
[default]
region = us-east-1
[profile cfg]
aws_access_key_id = ASIACFGPROFILE
aws_secret_access_key = $CFG_SECRET
aws_session_token = $CFG_TOKEN
s3 =
  max_concurrent_requests = 4
[profile regiononly]
region = eu-west-1
EOF

ENV_KEYS=(AWS_ACCESS_KEY_ID=AKIDENVSTATIC AWS_SECRET_ACCESS_KEY="$ENV_SECRET")
WEB=(AWS_ROLE_ARN="$ROLE_ARN" AWS_WEB_IDENTITY_TOKEN_FILE="$CREDS_HOME/web-token"
	AWS_ROLE_SESSION_NAME=ckptconv-test AWS_ENDPOINT_URL_STS="$STS_URL")
PROFILE=(AWS_PROFILE=ci)
CTR=(AWS_CONTAINER_CREDENTIALS_FULL_URI="$CONTAINER_URL"
	AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$CREDS_HOME/container-token")
IMDS=(AWS_EC2_METADATA_DISABLED=false AWS_EC2_METADATA_SERVICE_ENDPOINT="$IMDS_URL")
OUTPUTS=()
N=0

# uses NAME SOURCE KEY_PREFIX VAR=VALUE...: a conversion from the object
# store with these variables succeeds; its --json result names SOURCE and
# every request the front saw was signed with a key starting KEY_PREFIX,
# none refused.
uses() {
	local name=$1 source=$2 prefix=$3 mark out got
	shift 3
	N=$((N + 1))
	out=$TEST_TMP/out-$N
	mark=$(events_mark)
	creds_run "$@" -- "$CKPTCONV" convert --json --to native "$SRC" "$out"
	cp "$TEST_TMP/run.out" "$TEST_TMP/uses-$N.out"
	cp "$TEST_TMP/run.err" "$TEST_TMP/uses-$N.err"
	OUTPUTS+=("$TEST_TMP/uses-$N.out" "$TEST_TMP/uses-$N.err")
	if [ "$RUN_RC" -ne 0 ]; then
		fail "$name: the conversion succeeds" "$@"
		show_run
		return 1
	fi
	# the source --json names; the front's requests since the mark: how many,
	# how many refused or signed by another key
	got=$("$PY" - "$TEST_TMP/run.out" "$STANDINS_DIR/events.jsonl" "$mark" "$prefix" <<'PYEOF'
import json, sys
source = json.load(open(sys.argv[1])).get("credentials_source")
lines = open(sys.argv[2]).read().splitlines()[int(sys.argv[3]):]
s3 = [e for e in map(json.loads, lines) if e["event"] == "s3"]
odd = [e for e in s3 if e["verdict"] != "ok" or not e["key"].startswith(sys.argv[4])]
print(source, len(s3) >= 3, len(odd))
PYEOF
	)
	assert_eq "$name: --json says credentials_source $source; the front saw the requests, all signed by $prefix..., none refused" \
		"$source True 0" "$got"
}

# refused NAME FRAGMENT VAR=VALUE...: the conversion fails with
# s3_credentials, its message holds FRAGMENT, nothing is written.
refused() {
	local name=$1 fragment=$2 out
	shift 2
	N=$((N + 1))
	out=$TEST_TMP/out-$N
	creds_env "$@"
	expect_fail "$name" s3_credentials "$fragment" env "${CREDS_ENV[@]}" \
		"$CKPTCONV" convert --to native "$SRC" "$out"
	cp "$TEST_TMP/run.err" "$TEST_TMP/refused-$N.err"
	OUTPUTS+=("$TEST_TMP/refused-$N.err")
	expect_empty "$name: nothing written" "$out"
}

# ---- each source alone ----

uses "environment" environment AKIDENVSTATIC "${ENV_KEYS[@]}" &&
	expect_ok "environment: output equals golden native" "$CKPTCONV" verify "$G/native" \
		"$TEST_TMP/out-$N"
uses "environment with a session token" environment ASIAENVTEMP AWS_ACCESS_KEY_ID=ASIAENVTEMP \
	AWS_SECRET_ACCESS_KEY="$ENV_SECRET" AWS_SESSION_TOKEN="$ENV_TOKEN"
mark=$(events_mark)
uses "web identity" web_identity ASIASTS "${WEB[@]}" &&
	expect_ok "web identity: output equals golden native" "$CKPTCONV" verify "$G/native" \
		"$TEST_TMP/out-$N"
assert_eq "web identity: one AssumeRoleWithWebIdentity, with the token file's token and the session name" \
	1 "$(events_since "$mark" "e['event'] == 'issue' and e['web_token'] == '$WEB_TOKEN' and e['session_name'] == 'ckptconv-test'")"
mark=$(events_mark)
uses "web identity through AWS_ENDPOINT_URL, default session name" web_identity ASIASTS \
	AWS_ROLE_ARN="$ROLE_ARN" AWS_WEB_IDENTITY_TOKEN_FILE="$CREDS_HOME/web-token" \
	AWS_ENDPOINT_URL="$STS_URL"
assert_eq "web identity: the default session name is ckptconv-<time>" 1 \
	"$(events_since "$mark" "e['event'] == 'issue' and e['session_name'].startswith('ckptconv-')")"
uses "shared credentials file, AWS_PROFILE" shared_files AKIDFILEPROFILE "${PROFILE[@]}"
uses "shared config file's [profile cfg] with a session token" shared_files ASIACFGPROFILE \
	AWS_PROFILE=cfg
printf '[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = %s\n' \
	"$DEFAULT_SECRET" >>"$CREDS_HOME/.aws/credentials"
uses "shared files' default profile" shared_files AKIDDEFAULT
# the default profile stays for the rest only where a test names it
sed -i '/^\[default\]$/,$d' "$CREDS_HOME/.aws/credentials"
uses "container endpoint, token file" container ASIACTR "${CTR[@]}"
uses "container endpoint, AWS_CONTAINER_AUTHORIZATION_TOKEN" container ASIACTR \
	AWS_CONTAINER_CREDENTIALS_FULL_URI="$CONTAINER_URL" AWS_CONTAINER_AUTHORIZATION_TOKEN="$CTR_TOKEN"
uses "instance metadata (IMDSv2)" instance_metadata ASIAIMDS "${IMDS[@]}"
uses "a profile without credentials lets the chain go on" instance_metadata ASIAIMDS \
	AWS_PROFILE=regiononly "${IMDS[@]}"

# ---- precedence: all at once, then dropped one by one ----

uses "all sources: the environment wins" environment AKIDENVSTATIC \
	"${ENV_KEYS[@]}" "${WEB[@]}" "${PROFILE[@]}" "${CTR[@]}" "${IMDS[@]}"
uses "no environment: web identity wins" web_identity ASIASTS \
	"${WEB[@]}" "${PROFILE[@]}" "${CTR[@]}" "${IMDS[@]}"
uses "nor web identity: the shared files win" shared_files AKIDFILEPROFILE \
	"${PROFILE[@]}" "${CTR[@]}" "${IMDS[@]}"
uses "nor a profile: the container endpoint wins" container ASIACTR "${CTR[@]}" "${IMDS[@]}"

# ---- failures ----

standins_control "${CONTROL%\}}, \"sts\": \"error\"}"
refused "STS refuses the role" "web identity (STS at $STS_URL): AssumeRoleWithWebIdentity answered HTTP 403 AccessDenied (Not authorized" \
	"${WEB[@]}"
standins_control "$CONTROL"
printf 'jwt-not-this-one\n' >"$TEST_TMP/wrong-token"
refused "STS refuses the web identity token" "web identity (STS at $STS_URL): AssumeRoleWithWebIdentity answered HTTP 400 InvalidIdentityToken (The web identity token is not valid)" \
	"${WEB[@]}" AWS_WEB_IDENTITY_TOKEN_FILE="$TEST_TMP/wrong-token"
refused "the token file is missing" "web identity (STS at $STS_URL): cannot read the token file $TEST_TMP/missing-token" \
	"${WEB[@]}" AWS_WEB_IDENTITY_TOKEN_FILE="$TEST_TMP/missing-token"
standins_control "${CONTROL%\}}, \"sts\": \"malformed\"}"
refused "STS answers malformed XML" "web identity (STS at $STS_URL): the answer is not an AssumeRoleWithWebIdentityResponse" "${WEB[@]}"
standins_control "${CONTROL%\}}, \"sts\": \"unavailable\"}"
refused "STS answers 500" "web identity (STS at $STS_URL): AssumeRoleWithWebIdentity answered HTTP 500" "${WEB[@]}"
standins_control "${CONTROL%\}}, \"sts\": \"expired\"}"
refused "STS answers credentials already expired" "web_identity: the credentials answered expired at" "${WEB[@]}"
standins_control "$CONTROL"
T0=$(date +%s.%N)
refused "STS does not answer" "web identity (STS at http://127.0.0.1:$HANG_PORT): no answer to POST http://127.0.0.1:$HANG_PORT/ within 5.0 s" \
	"${WEB[@]}" AWS_ENDPOINT_URL_STS="http://127.0.0.1:$HANG_PORT"
echo "  (STS timeout: gave up after $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s)"
refused "STS port closed" "web identity (STS at http://127.0.0.1:$CLOSED_PORT): POST http://127.0.0.1:$CLOSED_PORT/ failed" \
	"${WEB[@]}" AWS_ENDPOINT_URL_STS="http://127.0.0.1:$CLOSED_PORT"

refused "the container endpoint refuses the token" "container credentials ($CONTAINER_URL): GET answered HTTP 401 InvalidToken (Invalid authorization token)" \
	"${CTR[@]}" AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$TEST_TMP/wrong-token"
standins_control "${CONTROL%\}}, \"container\": \"malformed\"}"
refused "the container endpoint answers malformed JSON" "container credentials ($CONTAINER_URL): the answer is not a JSON object" \
	"${CTR[@]}"
standins_control "${CONTROL%\}}, \"container\": \"expired\"}"
refused "the container endpoint answers expired credentials" "container: the credentials answered expired at" \
	"${CTR[@]}"
standins_control "${CONTROL%\}}, \"container\": \"hang\"}"
refused "the container endpoint does not answer" "container credentials ($CONTAINER_URL): no answer to GET $CONTAINER_URL within 5.0 s" \
	"${CTR[@]}"
standins_control "${CONTROL%\}}, \"container\": \"error\"}"
refused "the container endpoint refuses the role" "container credentials ($CONTAINER_URL): GET answered HTTP 403 AccessDenied (no role for this pod)" \
	"${CTR[@]}"
standins_control "$CONTROL"
refused "a container host that is not allowed over http" "names host 192.0.2.10 over http; only loopback" \
	AWS_CONTAINER_CREDENTIALS_FULL_URI=http://192.0.2.10/creds

# ---- keys and tokens that would forge a header: refused by every source ----

printf 'ctr\r\nX-Injected: 1' >"$TEST_TMP/crlf-token"
CR_TOKEN=$(printf 'tok\r\nX-Injected: yes')
refused "a session token with CR LF in the environment" "environment: the session token is malformed: byte 4 is a control character (0x0d), not printable ASCII" \
	AWS_ACCESS_KEY_ID=ASIAENVTEMP AWS_SECRET_ACCESS_KEY="$ENV_SECRET" AWS_SESSION_TOKEN="$CR_TOKEN"
refused "an access key id with CR LF in the environment" "environment: the access key id is malformed: byte 7 is a control character (0x0d), not printable ASCII" \
	AWS_ACCESS_KEY_ID="$(printf 'AKIDEN\r\nX-Injected: yes')" AWS_SECRET_ACCESS_KEY="$ENV_SECRET"
refused "a secret key outside ASCII in the environment" "environment: the secret access key is malformed: byte 1 is outside ASCII (0xc3), not printable ASCII" \
	AWS_ACCESS_KEY_ID=AKIDENVSTATIC AWS_SECRET_ACCESS_KEY="$(printf '\303\251t\303\251')"
cat >"$TEST_TMP/continued-credentials" <<EOF
[ci]
aws_access_key_id = AKIDFILEPROFILE
aws_secret_access_key = $FILE_SECRET
aws_session_token = tok
  X-Injected: yes
EOF
refused "a session token continued over two lines in the shared files" "shared_files: the session token is malformed: byte 4 is a control character (0x0a), not printable ASCII" \
	AWS_PROFILE=ci AWS_SHARED_CREDENTIALS_FILE="$TEST_TMP/continued-credentials"
# The services' session tokens: "tok-" and 16 hex digits, then CR LF (STS's
# XML makes the CR LF one LF).
standins_control "${CONTROL%\}}, \"sts\": \"crlf\", \"container\": \"crlf\", \"imds\": \"crlf\"}"
refused "STS answers a session token with CR LF" "web_identity: the session token is malformed: byte 21 is a control character (0x0a), not printable ASCII" \
	"${WEB[@]}"
refused "the container endpoint answers a Token with CR LF" "container: the session token is malformed: byte 21 is a control character (0x0d), not printable ASCII" \
	"${CTR[@]}"
refused "instance metadata answers a Token with CR LF" "instance_metadata: the session token is malformed: byte 21 is a control character (0x0d), not printable ASCII" \
	"${IMDS[@]}"
standins_control "$CONTROL"
refused "a container authorization token with CR LF" "container credentials ($CONTAINER_URL): the authorization token is malformed: byte 4 is a control character (0x0d), not printable ASCII" \
	"${CTR[@]}" AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$TEST_TMP/crlf-token"

# ---- a service that echoes the token it was sent ----

stars() { printf '%*s' "${#1}" '' | tr ' ' '*'; }
standins_control "${CONTROL%\}}, \"sts\": \"echo\", \"container\": \"echo\"}"
refused "STS echoes the web identity token" "web identity (STS at $STS_URL): AssumeRoleWithWebIdentity answered HTTP 400 InvalidParameterValue (Request WebIdentityToken=$(stars "$WEB_TOKEN")?X-Forged: 1)" \
	"${WEB[@]}"
refused "the container endpoint echoes the authorization token" "container credentials ($CONTAINER_URL): GET answered HTTP 401 InvalidToken (Invalid token $(stars "$CTR_TOKEN")??X-Forged: 1)" \
	"${CTR[@]}"
standins_control "$CONTROL"

standins_control "${CONTROL%\}}, \"imds\": \"no_role\"}"
refused "instance metadata: no role attached" "instance metadata ($IMDS_URL): no IAM role is attached" \
	"${IMDS[@]}"
standins_control "${CONTROL%\}}, \"imds\": \"malformed\"}"
refused "instance metadata answers malformed credentials" "instance metadata ($IMDS_URL): the answer lacks a string" \
	"${IMDS[@]}"
standins_control "${CONTROL%\}}, \"imds\": \"error\"}"
refused "instance metadata answers an error Code" "instance metadata ($IMDS_URL): the answer's Code is AssumeRoleUnauthorizedAccess (the role cannot be assumed)" \
	"${IMDS[@]}"
standins_control "$CONTROL"
# Not on EC2: a port that accepts and never answers, and a closed one.
T0=$(date +%s.%N)
refused "instance metadata does not answer" "and instance metadata (http://127.0.0.1:$HANG_PORT): no answer to PUT http://127.0.0.1:$HANG_PORT/latest/api/token within 1.0 s" \
	AWS_EC2_METADATA_DISABLED=false AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:$HANG_PORT"
echo "  (instance metadata that never answers: gave up after $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s)"
# One try of 1 s (AWS_METADATA_SERVICE_TIMEOUT, ..._NUM_ATTEMPTS defaults):
# the message ends there, without "(every attempt)".
assert_eq "instance metadata that never answers: one try of 1 s, then given up" "within 1.0 s" \
	"$(error_line "$TEST_TMP/run.err" | grep -o 'within [0-9.]* s.*$')"
refused "instance metadata port closed" "instance metadata (http://127.0.0.1:$CLOSED_PORT): PUT http://127.0.0.1:$CLOSED_PORT/latest/api/token failed" \
	AWS_EC2_METADATA_DISABLED=false AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:$CLOSED_PORT"

# A FIFO as any of the files is refused by its type at once (nothing
# writes to it: opening it for reading must not wait for a writer).
mkfifo "$TEST_TMP/fifo"
refused "a FIFO as the web identity token file" "web identity (STS at $STS_URL): the token file $TEST_TMP/fifo is not a regular file" \
	"${WEB[@]}" AWS_WEB_IDENTITY_TOKEN_FILE="$TEST_TMP/fifo"
refused "a FIFO as the container authorization token file" "container credentials ($CONTAINER_URL): the token file $TEST_TMP/fifo is not a regular file" \
	"${CTR[@]}" AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$TEST_TMP/fifo"
refused "a FIFO as the shared credentials file" "shared files: $TEST_TMP/fifo is not a regular file" \
	AWS_SHARED_CREDENTIALS_FILE="$TEST_TMP/fifo"
refused "a FIFO as the shared config file" "shared files: $TEST_TMP/fifo is not a regular file" \
	AWS_CONFIG_FILE="$TEST_TMP/fifo"

refused "a profile that does not exist" "shared files: profile 'nosuch' (AWS_PROFILE) is in neither $CREDS_HOME/.aws/config nor $CREDS_HOME/.aws/credentials" \
	AWS_PROFILE=nosuch "${CTR[@]}"
refused "nothing configured" "no credentials: none in the environment (AWS_ACCESS_KEY_ID)"
refused "environment keys in part" "environment: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not" \
	AWS_ACCESS_KEY_ID=AKIDENVSTATIC "${WEB[@]}"

# The front refuses what the stand-ins did not issue, so the checks above
# mean something: a key it does not know is refused with the server's words.
creds_env AWS_ACCESS_KEY_ID=AKIDUNKNOWN AWS_SECRET_ACCESS_KEY="$ENV_SECRET"
expect_fail "the front refuses an unknown key" s3_access_denied "InvalidAccessKeyId" \
	env "${CREDS_ENV[@]}" "$CKPTCONV" convert --to native "$SRC" "$TEST_TMP/unknown"
cp "$TEST_TMP/run.err" "$TEST_TMP/unknown.err"
OUTPUTS+=("$TEST_TMP/unknown.err")
creds_env AWS_ACCESS_KEY_ID=AKIDENVSTATIC AWS_SECRET_ACCESS_KEY=wrong-secret
expect_fail "the front refuses a wrong secret" s3_access_denied "SignatureDoesNotMatch" \
	env "${CREDS_ENV[@]}" "$CKPTCONV" convert --to native "$SRC" "$TEST_TMP/wrongsecret"

no_credentials_in "no secret or token in any output" "${OUTPUTS[@]}"

finish
