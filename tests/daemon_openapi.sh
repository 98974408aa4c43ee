#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon_openapi.sh: docs/openapi.yaml passes a real OpenAPI linter
# (@redocly/cli, from $PATH or the npm tools directory that
# scripts/install-deps.sh test prepares) and documents every route the
# daemon serves.  A missing linter is a failure, not a skip.

. "$(dirname "$0")/lib.sh"

SPEC="$TOP_SRCDIR/docs/openapi.yaml"
NPM_BIN="${CKPTCONV_NPM_DIR:-/var/cache/ckptconv-test-npm}/node_modules/.bin"
REDOCLY=$(command -v redocly || true)
[ -z "$REDOCLY" ] && [ -x "$NPM_BIN/redocly" ] && REDOCLY="$NPM_BIN/redocly"

if [ -z "$REDOCLY" ]; then
	fail "OpenAPI linter available" "no redocly on PATH or in $NPM_BIN (run scripts/install-deps.sh test)"
	finish
fi
pass "OpenAPI linter available"

run "$REDOCLY" lint "$SPEC"
if [ "$RUN_RC" -eq 0 ] && grep -q "valid" "$TEST_TMP/run.out" "$TEST_TMP/run.err"; then
	pass "docs/openapi.yaml passes redocly lint"
else
	fail "docs/openapi.yaml passes redocly lint"
	show_run
	sed -n '1,40s/^/  /p' "$TEST_TMP/run.out"
fi

for route in /v1/jobs /v1/jobs/{id} /v1/jobs/{id}/tensors /v1/jobs/{id}/events /v1/version \
	/healthz /readyz /metrics / /ui /ui/{asset}; do
	if grep -q "^  $route:\$" "$SPEC"; then
		pass "route $route documented"
	else
		fail "route $route documented"
	fi
done
for status in 400 401 403 404 409 413 415 422 429 503; do
	if grep -q "^        '$status':\$" "$SPEC"; then
		pass "status $status documented"
	else
		fail "status $status documented"
	fi
done
finish
