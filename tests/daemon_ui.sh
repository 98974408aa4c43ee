#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_ui.sh: the jobs page.  Over HTTP: / and /ui/ serve the page without
# a token (the API calls it makes need one) with a Content-Security-Policy
# that allows the daemon's own origin only, the assets have their content
# types and ETags (If-None-Match answers 304), other methods and unknown
# assets are refused.  In a real browser (tests/ui_check.js: headless
# Chromium through playwright-core) against a daemon running a throttled
# job: the token prompt, the live list, a label holding markup shown as
# text, the submit form, paged and filtered tensors with the in-flight ones
# highlighted, cancel, and a queued job followed to succeeded.  The daemon
# stays healthy throughout.
#
# The browser's screenshot of the jobs list is written to
# $CKPTCONV_UI_SCREENSHOT when set (docs/ui.png is made this way:
# CKPTCONV_UI_SCREENSHOT=$PWD/docs/ui.png make -C build check TESTS=tests/daemon_ui.sh),
# else to the test's temporary directory.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

CSP="default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
MARKUP_LABEL='<script>window.__xss=1</script><img src=x onerror=window.__xss=2>'
SHOT=${CKPTCONV_UI_SCREENSHOT:-$TEST_TMP/ui.png}

TOKEN_FILE="$TEST_TMP/token"
printf 'ui-test-%s\n' "$RANDOM$RANDOM" >"$TOKEN_FILE"
expect_ok "fixture (4 layers: more tensors than one page)" \
	"$CKPTCONV" fixture --preset tiny --layers 4 "$DATA/src"
daemon_start --max-running 1 --token-file "$TOKEN_FILE"

# ---- the page over HTTP ----

TOKEN=
api GET /
assert_eq "GET / without a token: 200 HTML" "200 text/html;charset=utf-8" "$STATUS $(header Content-Type)"
grep -q '<script src="/ui/app.js" defer></script>' "$BODY" && pass "the page loads its script from the daemon" ||
	fail "the page loads its script from the daemon"
NOT_IN_PAGE='<script>|<style|[[:space:]](style|on[a-z]+)=|https?://'
if grep -qiE "$NOT_IN_PAGE" "$BODY"; then
	fail "the page has no inline script or style and no outside resource" "$(grep -iE "$NOT_IN_PAGE" "$BODY" | head -3)"
else
	pass "the page has no inline script or style and no outside resource"
fi
assert_eq "Content-Security-Policy: the daemon's origin only" "$CSP" \
	"$(grep -i '^Content-Security-Policy:' "$HEADERS" | cut -d' ' -f2- | tr -d '\r')"
assert_eq "nosniff, no referrer, no framing" "nosniff no-referrer DENY" \
	"$(header X-Content-Type-Options) $(header Referrer-Policy) $(header X-Frame-Options)"
cp "$BODY" "$TEST_TMP/index.html"
api GET /ui/
cmp -s "$BODY" "$TEST_TMP/index.html" && pass "/ui/ is the same page" || fail "/ui/ is the same page"

for asset in app.js:text/javascript app.css:text/css favicon.svg:image/svg+xml; do
	name=${asset%%:*}
	type=${asset#*:}
	api GET "/ui/$name"
	if [ "$STATUS" = 200 ] && [[ "$(header Content-Type)" == "$type"* ]] &&
		cmp -s "$BODY" "$TOP_SRCDIR/src/ui/$name"; then
		pass "/ui/$name: 200 $type, the source file's bytes"
	else
		fail "/ui/$name: 200 $type, the source file's bytes" "status $STATUS, $(header Content-Type)"
	fi
done
# Every value reaches the page as text: the script never has a string
# parsed as HTML or run as code.
HTML_SINKS='innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment|DOMParser|srcdoc|eval\(|new Function'
if grep -nE "$HTML_SINKS" "$TOP_SRCDIR/src/ui/app.js" >"$TEST_TMP/sinks"; then
	fail "app.js puts values in the page as text only (no HTML parsing, no eval)" "$(head -3 "$TEST_TMP/sinks")"
else
	pass "app.js puts values in the page as text only (no HTML parsing, no eval)"
fi
api GET /ui/app.js
ETAG=$(header ETag)
assert_eq "assets revalidate (no-cache) by a strong ETag" "no-cache yes" \
	"$(header Cache-Control) $([[ "$ETAG" =~ ^\"[0-9a-f]{16}\"$ ]] && echo yes || echo "no: $ETAG")"
rm -f "$BODY"
api GET /ui/app.js -H "If-None-Match: \"0000000000000000\", $ETAG"
assert_eq "If-None-Match with its ETag: 304, no body" "304 no body" "$STATUS $([ -s "$BODY" ] && echo body || echo no body)"
api GET /ui/app.js -H 'If-None-Match: "0000000000000000"'
assert_eq "another ETag: 200" 200 "$STATUS"
api HEAD /ui/app.css -I
assert_eq "HEAD: 200" 200 "$STATUS"
api POST / -H 'Content-Type: application/json' --data '{}'
expect_error "POST /" 405 method_not_allowed
assert_eq "405 names GET in Allow" GET "$(header Allow)"
api GET /ui/missing.js
expect_error "an unknown asset" 404 not_found
api GET /v1/jobs
expect_error "the API still needs the token" 401 unauthorized

# ---- jobs for the browser to see ----

TOKEN=$(cat "$TOKEN_FILE")
submit "a job that succeeds" "$DATA/src" "$DATA/out-ok" native
expect_job "it succeeds" "$JOB" succeeded 60
mkdir -p "$DATA/occupied" && echo keep >"$DATA/occupied/notes.txt"
submit "a job whose destination is occupied" "$DATA/src" "$DATA/occupied" native
expect_job "it fails" "$JOB" failed 60
post_job "{\"source\": \"$DATA/src\", \"destination\": \"$DATA/out-slow\", \"to\": \"native\",
	\"options\": {\"max_bytes_per_second\": \"4KB\"},
	\"labels\": {\"team\": \"nlp\", \"note\": $("$PY" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$MARKUP_LABEL")}}"
if [ "$STATUS" = 201 ]; then
	SLOW=$(jget id)
	pass "a throttled job with a label holding markup: 201"
else
	fail "a throttled job with a label holding markup: 201" "$STATUS $(head -c 300 "$BODY")"
	finish
fi
wait_progress "$SLOW" && pass "the throttled job is running" || fail "the throttled job is running"

# ---- the browser ----

if ! command -v node >/dev/null || [ ! -x "${CKPTCONV_CHROMIUM:-/usr/bin/chromium}" ]; then
	fail "node and chromium are installed (scripts/install-deps.sh test)"
	finish
fi
export CKPTCONV_NPM_DIR=${CKPTCONV_NPM_DIR:-/var/cache/ckptconv-test-npm}
rm -f "$SHOT"
timeout 115 node "$TOP_SRCDIR/tests/ui_check.js" "$BASE" "$TOKEN_FILE" "$DATA" "$SLOW" \
	"$MARKUP_LABEL" "$SHOT" >"$TEST_TMP/ui.out" 2>&1
UI_RC=$?
while IFS= read -r line; do
	case "$line" in
	"ok: "*) pass "browser: ${line#ok: }" ;;
	"FAIL: "*) fail "browser: ${line#FAIL: }" ;;
	esac
done <"$TEST_TMP/ui.out"
if [ "$UI_RC" -ne 0 ] && ! grep -q '^FAIL: ' "$TEST_TMP/ui.out"; then
	fail "browser checks ran to the end (exit $UI_RC)" "$(tail -5 "$TEST_TMP/ui.out")"
fi
if [ "$(head -c 8 "$SHOT" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
	pass "a screenshot of the jobs list was written ($(stat -c %s "$SHOT") bytes)"
else
	fail "a screenshot of the jobs list was written to $SHOT"
fi

# ---- what the browser did, seen from the API ----

expect_job "the cancelled job is cancelled" "$SLOW" cancelled 5
api GET "/v1/jobs/$SLOW"
assert_eq "its error says why" cancelled "$(jget error.code)"
no_finished_output "it left no finished or temporary output" "$DATA/out-slow"
api GET "/v1/jobs?label=team:ui"
FORM_JOB=$(jget jobs.0.id)
assert_eq "the form's job carries its labels" "1 <b>bold</b>" "$(jget jobs.#) $(jget jobs.0.labels.note)"
assert_eq "the form's options reached the API" 96KB "$(jget jobs.0.options.max_bytes_per_second)"
expect_job "the form's job succeeded" "$FORM_JOB" succeeded 5
expect_ok "its output equals the CLI's" "$CKPTCONV" verify "$DATA/out-ok" "$DATA/out-form"
api GET /healthz
assert_eq "the daemon is healthy" 200 "$STATUS"

daemon_stop
assert_eq "clean exit" 0 "$DAEMON_RC"
finish
