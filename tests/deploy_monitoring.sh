#!/bin/bash
# SPDX-License-Identifier: MIT
#
# deploy_monitoring.sh: docker/kubernetes/monitoring against the real
# daemon.  A daemon runs a job that succeeds and one that fails and answers
# an error, so that every series has samples; its /metrics passes
# `promtool check metrics`; tests/monitoring_check.js then checks the
# dashboard, the PrometheusRule and the ServiceMonitor, and that every
# metric and label their PromQL names is in that scrape; `promtool check
# rules` accepts the alerts and `promtool test rules`
# (tests/monitoring_rules_test.yaml) shows each firing when it should and
# not otherwise.  Copies with one thing broken prove the checks catch it.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.sh"
need_binary

MON="$TOP_SRCDIR/docker/kubernetes/monitoring"
SERVICE="$TOP_SRCDIR/docker/kubernetes/service.yaml"
CHECKER="$TOP_SRCDIR/tests/monitoring_check.js"
export CKPTCONV_NPM_DIR=${CKPTCONV_NPM_DIR:-/var/cache/ckptconv-test-npm}

for tool in node promtool; do
	if ! command -v "$tool" >/dev/null; then
		fail "$tool is installed (scripts/install-deps.sh test)"
		finish
	fi
done

# ---- a live scrape with every series present ----

expect_ok "fixture" "$CKPTCONV" fixture --preset tiny "$DATA/src"
daemon_start --max-queued 7
submit "a job that succeeds" "$DATA/src" "$DATA/out" native
expect_job "it succeeds" "$JOB" succeeded 60
mkdir -p "$DATA/occupied" && echo keep >"$DATA/occupied/notes.txt"
submit "a job that fails" "$DATA/src" "$DATA/occupied" native
expect_job "it fails" "$JOB" failed 60
api GET /v1/jobs/0123456789abcdef
expect_error "an error answer" 404 job_not_found
api GET /
api GET /metrics
cp "$BODY" "$TEST_TMP/metrics.txt"
assert_eq "GET /metrics" 200 "$STATUS"
for series in 'ckptconv_job_failures_total{code="destination_not_empty"} 1' \
	'ckptconv_api_errors_total{code="job_not_found"} 1' 'ckptconv_queue_capacity 7' \
	'ckptconv_job_stall_seconds 0.000' \
	'ckptconv_http_request_duration_seconds_count{route="/ui"} 1' \
	'ckptconv_http_request_duration_seconds_count{route="/v1/jobs/{id}"}'; do
	if grep -qF "$series" "$TEST_TMP/metrics.txt"; then
		pass "/metrics has $series"
	else
		fail "/metrics has $series" "$(grep -F "${series%% *}" "$TEST_TMP/metrics.txt" | head -3)"
	fi
done
if out=$(promtool check metrics <"$TEST_TMP/metrics.txt" 2>&1); then
	pass "promtool check metrics: the exposition is clean"
else
	fail "promtool check metrics: the exposition is clean" "$out"
fi

# The stall gauge: a job throttled to 1 KB/s waits seconds between its
# pieces, converting nothing meanwhile; once it is gone the gauge is 0.
submit "a job throttled to 1 KB/s" "$DATA/src" "$DATA/out-stall" native '{"max_bytes_per_second": 1000}'
STALL_JOB=$JOB
STALL_MAX=0
for i in $(seq 60); do
	stall=$(curl -s "$BASE/metrics" | sed -n 's/^ckptconv_job_stall_seconds //p')
	STALL_MAX=$("$PY" -c 'import sys; print(max(float(sys.argv[1]), float(sys.argv[2] or 0)))' "$STALL_MAX" "$stall")
	"$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 2 else 1)' "$STALL_MAX" && break
	sleep 0.5
done
"$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 2 else 1)' "$STALL_MAX" &&
	pass "ckptconv_job_stall_seconds rises while the running job converts nothing ($STALL_MAX s)" ||
	fail "ckptconv_job_stall_seconds rises while the running job converts nothing" "largest seen: $STALL_MAX"
api DELETE "/v1/jobs/$STALL_JOB"
expect_job "the throttled job is cancelled" "$STALL_JOB" cancelled 30
assert_eq "with no job running the gauge is 0" 0.000 \
	"$(curl -s "$BASE/metrics" | sed -n 's/^ckptconv_job_stall_seconds //p')"
api GET /healthz
assert_eq "the daemon is healthy" 200 "$STATUS"
daemon_stop

# ---- the monitoring files ----

# monitor_check NAME DIR: the checker accepts DIR; the rule file it writes
# passes promtool check rules and the alert unit tests.
if out=$(node "$CHECKER" "$MON" "$SERVICE" "$TEST_TMP/metrics.txt" "$TEST_TMP/ckptconv-rules.yaml" 2>&1); then
	pass "dashboard, rules and ServiceMonitor: $(tail -n 1 <<<"$out")"
else
	fail "dashboard, rules and ServiceMonitor" "$out"
fi
if out=$(promtool check rules "$TEST_TMP/ckptconv-rules.yaml" 2>&1); then
	pass "promtool check rules: $(grep -o '[0-9]* rules found' <<<"$out")"
else
	fail "promtool check rules" "$out"
fi
cp "$TOP_SRCDIR/tests/monitoring_rules_test.yaml" "$TEST_TMP/"
if out=$(cd "$TEST_TMP" && promtool test rules monitoring_rules_test.yaml 2>&1); then
	pass "promtool test rules: every alert fires when it should, and only then"
else
	fail "promtool test rules" "$out"
fi
ALERTS=$(grep -c '^ *- alert: ' "$MON/prometheusrule.yaml")
TESTED=$(grep -o 'alertname: [A-Za-z]*' "$TEST_TMP/monitoring_rules_test.yaml" | sort -u | wc -l)
assert_eq "the unit tests cover every alert" "$ALERTS" "$TESTED"

# mutant NAME FILE SED_EXPRESSION EXPECTED_FINDING: a copy with FILE
# edited must be rejected with the finding.
mutant() {
	local name=$1 file=$2 expr=$3 expected=$4 dir=$TEST_TMP/mutant-$1 out
	cp -r "$MON" "$dir"
	sed -i -e "$expr" "$dir/$file"
	if cmp -s "$MON/$file" "$dir/$file"; then
		fail "$name: the edit '$expr' changed nothing in $file"
		return
	fi
	if out=$(node "$CHECKER" "$dir" "$SERVICE" "$TEST_TMP/metrics.txt" "$dir/rules.yaml" 2>&1); then
		fail "$name: the checker accepted it"
	elif grep -qF -- "$expected" <<<"$out"; then
		pass "$name: rejected"
	else
		fail "$name: rejected without the finding '$expected'" "$out"
	fi
}

mutant metric-typo ckptconv-dashboard.json 's/ckptconv_queue_capacity/ckptconv_queue_capacty/' \
	'metric ckptconv_queue_capacty is not exposed by /metrics'
mutant label-typo ckptconv-dashboard.json 's/sum by (state) (ckptconv_jobs{/sum by (status) (ckptconv_jobs{/' \
	'label status is on none of ckptconv_jobs'
mutant empty-query ckptconv-dashboard.json '0,/"expr": ".*",$/s//"expr": "",/' 'empty query'
mutant bad-promql ckptconv-dashboard.json 's/sum(rate(ckptconv_tensors_converted_total/sum(rate(ckptconv_tensors_converted_total)/' \
	'syntax error'
mutant no-datasource ckptconv-dashboard.json '0,/"uid": "${datasource}"/s//"uid": "prometheus"/' \
	'not on the ${datasource} variable'
mutant rule-metric prometheusrule.yaml 's/ckptconv_job_stall_seconds > 600/ckptconv_job_stalled_seconds > 600/' \
	'metric ckptconv_job_stalled_seconds is not exposed by /metrics'
mutant no-severity prometheusrule.yaml '0,/severity: critical/s//severity: page/' 'severity is not critical or warning'
mutant no-latency-panel ckptconv-dashboard.json 's/ckptconv_http_request_duration_seconds_bucket/ckptconv_http_request_duration_seconds_count/g' \
	'no panel on HTTP latency (ckptconv_http_request_duration_seconds_bucket)'
mutant no-state-panel ckptconv-dashboard.json 's/sum by (state) (ckptconv_jobs{/sum(ckptconv_jobs{/' \
	'no panel on jobs by state (ckptconv_jobs by state)'
mutant no-readiness-alert prometheusrule.yaml 's/ckptconv_ready == 0/up == 0/' \
	'no alert on daemon not ready (ckptconv_ready)'
mutant wrong-selector servicemonitor.yaml 's|app.kubernetes.io/name: ckptconv|app.kubernetes.io/name: converter|' \
	'does not select the Service'
mutant wrong-port servicemonitor.yaml 's/port: http/port: metrics/' 'endpoint port metrics is not a port of the Service'

# A broken alert expression that still parses must fail promtool's own tests.
cp "$TEST_TMP/ckptconv-rules.yaml" "$TEST_TMP/broken-rules.yaml"
sed -i 's/ckptconv_job_stall_seconds > 600/ckptconv_job_stall_seconds > 6000/' "$TEST_TMP/broken-rules.yaml"
sed 's/ckptconv-rules.yaml/broken-rules.yaml/' "$TEST_TMP/monitoring_rules_test.yaml" >"$TEST_TMP/broken_test.yaml"
if (cd "$TEST_TMP" && promtool test rules broken_test.yaml >/dev/null 2>&1); then
	fail "promtool test rules catches a stall alert that waits 100 minutes"
else
	pass "promtool test rules catches a stall alert that waits 100 minutes"
fi

finish
