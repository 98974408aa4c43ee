// SPDX-License-Identifier: MIT
//
// monitoring_check: checks docker/kubernetes/monitoring against a live
// scrape of the daemon's /metrics.  The Grafana dashboard must parse, its
// panels be placed and each carry a non-empty query on the dashboard's data
// source; the PrometheusRule must be a monitoring.coreos.com/v1 object
// whose alerts have an expression, a severity and a summary; the
// ServiceMonitor must select the Service of docker/kubernetes/service.yaml
// on its named port at /metrics.  Every PromQL expression (panels, template
// variables, alerts) is parsed with Prometheus's own grammar
// (@prometheus-io/lezer-promql), and every metric it names must be exposed
// in the scrape, with every label it matches or groups by.  Writes the
// rules as a plain Prometheus rule file for promtool.  Prints one line per
// finding and exits 1 if there is any.
//
// usage: node tests/monitoring_check.js MONITORING_DIR SERVICE_YAML METRICS_FILE RULES_OUT
'use strict';

const fs = require('fs');
const path = require('path');
const { npmDir, npmRequire, Findings } = require('./checklib.js');

let YAML, promql;
try {
  YAML = npmRequire('yaml');
  promql = npmRequire('@prometheus-io/lezer-promql');
} catch (e) {
  console.error(`monitoring_check: cannot load yaml and @prometheus-io/lezer-promql from ${npmDir}/node_modules ` +
    `(run scripts/install-deps.sh test): ${e.message}`);
  process.exit(1);
}

// Series Prometheus makes itself for every target, and the labels it
// attaches to every scraped sample (target labels of a ServiceMonitor).
const PROMETHEUS_SERIES = new Set(['up']);
const TARGET_LABELS = new Set(['job', 'instance', 'namespace', 'pod', 'service', 'endpoint', 'container']);
// Values Grafana puts in place of its variables before a query is sent.
const GRAFANA_VARIABLES = { __rate_interval: '5m', __interval: '1m', __range: '1h', instance: '.*' };

const [dir, serviceFile, metricsFile, rulesOut] = process.argv.slice(2);
if (!rulesOut) {
  console.error('usage: node tests/monitoring_check.js MONITORING_DIR SERVICE_YAML METRICS_FILE RULES_OUT');
  process.exit(2);
}

const findings = new Findings();
const { check } = findings;

// ---- the scrape: metric name -> label names ----

function parseExposition(text) {
  const metrics = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s/.exec(line);
    if (!m) continue;
    const labels = metrics.get(m[1]) || new Set();
    for (const pair of (m[3] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) labels.add(pair[1]);
    metrics.set(m[1], labels);
  }
  return metrics;
}

// ---- PromQL ----

function substituteGrafana(expr) {
  return expr.replace(/\$\{?([a-zA-Z_]+)\}?/g, (all, name) => {
    if (name in GRAFANA_VARIABLES) return GRAFANA_VARIABLES[name];
    return all;
  });
}

// The metrics an expression selects and the labels it names, or a syntax
// error.  label_values(metric, label) (a Grafana variable query) counts as
// a selector of metric and a use of label.
function analyse(exprText) {
  const expr = substituteGrafana(exprText);
  const lv = /^\s*label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$/.exec(expr);
  if (lv) return { error: null, metrics: new Set([lv[1]]), labels: new Set([lv[2]]), grouping: new Set() };
  const tree = promql.parser.parse(expr);
  const metrics = new Set();
  const labels = new Set();
  const grouping = new Set(); // the labels of by (...)
  let error = null;
  tree.iterate({
    enter: (node) => {
      if (node.type.isError && !error) error = `syntax error at ${node.from}: '${expr.slice(Math.max(0, node.from - 10), node.to + 10)}'`;
      if (node.name === 'Identifier' && node.node.parent && node.node.parent.name === 'VectorSelector')
        metrics.add(expr.slice(node.from, node.to));
      if (node.name === 'LabelName') labels.add(expr.slice(node.from, node.to));
      const modifier = node.node.parent && node.node.parent.name === 'GroupingLabels' && node.node.parent.parent;
      if (node.name === 'LabelName' && modifier && modifier.firstChild && modifier.firstChild.name === 'By')
        grouping.add(expr.slice(node.from, node.to));
    },
  });
  if (!expr.trim()) error = 'empty expression';
  return { error, metrics, labels, grouping };
}

const exposed = parseExposition(fs.readFileSync(metricsFile, 'utf8'));
check(exposed.size > 0, metricsFile, 'no samples in the scrape');
const referenced = new Set();

// What the dashboard's queries and the alerts select: [{where, metrics,
// labels}], for the coverage the operators need (NEEDED_PANELS, NEEDED_ALERTS).
const uses = { dashboard: [], alerts: [] };

function checkExpr(where, exprText, kind) {
  if (!check(typeof exprText === 'string' && exprText.trim() !== '', where, 'empty query')) return;
  const { error, metrics, labels, grouping } = analyse(exprText);
  if (!check(!error, where, `${error} in ${exprText}`)) return;
  if (kind) uses[kind].push({ where, metrics, grouping });
  check(metrics.size > 0, where, `selects no metric: ${exprText}`);
  const known = new Set(TARGET_LABELS);
  known.add('le');
  for (const m of metrics) {
    referenced.add(m);
    if (PROMETHEUS_SERIES.has(m)) continue;
    if (check(exposed.has(m), where, `metric ${m} is not exposed by /metrics`))
      for (const l of exposed.get(m)) known.add(l);
  }
  for (const l of labels)
    check(known.has(l), where, `label ${l} is on none of ${[...metrics].join(', ')}`);
}

// ---- the dashboard ----

function checkDashboard(file) {
  let dash;
  try {
    dash = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    check(false, file, `not JSON: ${e.message}`);
    return;
  }
  const name = path.basename(file);
  check(typeof dash.title === 'string' && dash.title !== '', name, 'no title');
  check(typeof dash.uid === 'string' && /^[a-zA-Z0-9_-]{1,40}$/.test(dash.uid), name, 'no valid uid');
  const variables = new Map(((dash.templating || {}).list || []).map((v) => [v.name, v]));
  check(variables.has('datasource') && variables.get('datasource').type === 'datasource' &&
    variables.get('datasource').query === 'prometheus', name, 'no Prometheus data source variable "datasource"');
  for (const v of variables.values()) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query || {}).query;
    checkExpr(`${name} variable ${v.name}`, q);
  }
  const panels = dash.panels || [];
  check(panels.length > 0, name, 'no panels');
  const ids = new Set();
  let queries = 0;
  for (const p of panels) {
    const where = `${name} panel ${p.id} "${p.title}"`;
    check(!ids.has(p.id), where, 'duplicate panel id');
    ids.add(p.id);
    const g = p.gridPos || {};
    check(['x', 'y', 'w', 'h'].every((k) => Number.isInteger(g[k])) && g.x + g.w <= 24, where, 'no valid gridPos');
    check(typeof p.title === 'string' && p.title !== '', where, 'no title');
    if (p.type === 'row') continue;
    check(p.datasource && p.datasource.uid === '${datasource}', where, 'not on the ${datasource} variable');
    const targets = p.targets || [];
    check(targets.length > 0, where, 'no queries');
    for (const t of targets) {
      queries++;
      check(!t.datasource || t.datasource.uid === '${datasource}', `${where} query ${t.refId}`, 'not on the ${datasource} variable');
      checkExpr(`${where} query ${t.refId}`, t.expr, 'dashboard');
      for (const ref of (t.expr || '').matchAll(/\$\{?([a-zA-Z_]+)/g))
        check(ref[1] in GRAFANA_VARIABLES || variables.has(ref[1]), `${where} query ${t.refId}`, `unknown variable $${ref[1]}`);
    }
  }
  return queries;
}

// ---- the Prometheus Operator objects ----

function loadYaml(file) {
  try {
    return YAML.parse(fs.readFileSync(file, 'utf8'), { uniqueKeys: true });
  } catch (e) {
    check(false, path.basename(file), `not YAML: ${e.message}`);
    return null;
  }
}

function checkRules(file) {
  const rule = loadYaml(file);
  const name = path.basename(file);
  if (!rule) return 0;
  check(rule.apiVersion === 'monitoring.coreos.com/v1' && rule.kind === 'PrometheusRule', name,
    'not a monitoring.coreos.com/v1 PrometheusRule');
  const groups = (rule.spec || {}).groups || [];
  check(groups.length > 0, name, 'no rule groups');
  let alerts = 0;
  const names = new Set();
  for (const g of groups) {
    for (const r of g.rules || []) {
      const where = `${name} ${r.alert || r.record || '?'}`;
      if (!check(typeof r.alert === 'string', where, 'not an alerting rule')) continue;
      alerts++;
      check(!names.has(r.alert), where, 'duplicate alert name');
      names.add(r.alert);
      check(['critical', 'warning'].includes((r.labels || {}).severity), where, 'severity is not critical or warning');
      check(typeof (r.annotations || {}).summary === 'string' && typeof r.annotations.description === 'string',
        where, 'no summary and description');
      checkExpr(where, r.expr, 'alerts');
    }
  }
  fs.writeFileSync(rulesOut, YAML.stringify({ groups }));
  return alerts;
}

function checkServiceMonitor(file) {
  const sm = loadYaml(file);
  const service = loadYaml(serviceFile);
  const name = path.basename(file);
  if (!sm || !service) return;
  check(sm.apiVersion === 'monitoring.coreos.com/v1' && sm.kind === 'ServiceMonitor', name,
    'not a monitoring.coreos.com/v1 ServiceMonitor');
  const match = ((sm.spec || {}).selector || {}).matchLabels || {};
  const labels = (service.metadata || {}).labels || {};
  check(Object.keys(match).length > 0 && Object.entries(match).every(([k, v]) => labels[k] === v), name,
    `selector ${JSON.stringify(match)} does not select the Service's labels ${JSON.stringify(labels)}`);
  const ports = ((service.spec || {}).ports || []).map((p) => p.name);
  const endpoints = (sm.spec || {}).endpoints || [];
  check(endpoints.length > 0, name, 'no endpoints');
  for (const e of endpoints) {
    check(ports.includes(e.port), name, `endpoint port ${e.port} is not a port of the Service (${ports.join(', ')})`);
    check(e.path === '/metrics', name, `endpoint path ${e.path} is not /metrics`);
  }
  check(service.metadata.name === 'ckptconv', name,
    `the scrape job is the Service's name ${service.metadata.name}, the rules expect ckptconv`);
}

const queries = checkDashboard(path.join(dir, 'ckptconv-dashboard.json'));
const alerts = checkRules(path.join(dir, 'prometheusrule.yaml'));

// What an operator must find: panels for jobs by state, bytes/s, queue
// depth, job durations, errors by code and HTTP latency; alerts for jobs
// failing, a queue that grows, a job with no progress and a daemon that is
// not ready.  [what, metric one of, label grouped by (by ...) or null]
const NEEDED_PANELS = [
  ['jobs by state', ['ckptconv_jobs'], 'state'],
  ['bytes per second', ['ckptconv_bytes_converted_total'], null],
  ['queue depth', ['ckptconv_queue_length'], null],
  ['job durations', ['ckptconv_job_duration_seconds_bucket'], null],
  ['errors by code', ['ckptconv_job_failures_total', 'ckptconv_api_errors_total'], 'code'],
  ['HTTP latency', ['ckptconv_http_request_duration_seconds_bucket'], null],
];
const NEEDED_ALERTS = [
  ['jobs failing', ['ckptconv_job_duration_seconds_count', 'ckptconv_job_failures_total'], null],
  ['queue growing', ['ckptconv_queue_length'], null],
  ['a job with no progress', ['ckptconv_job_stall_seconds'], null],
  ['daemon not ready', ['ckptconv_ready'], null],
];
for (const [kind, needed, file] of [['dashboard', NEEDED_PANELS, 'ckptconv-dashboard.json'],
  ['alerts', NEEDED_ALERTS, 'prometheusrule.yaml']]) {
  for (const [what, names, label] of needed)
    check(uses[kind].some((u) => names.some((n) => u.metrics.has(n)) && (!label || u.grouping.has(label))),
      file, `no ${kind === 'dashboard' ? 'panel' : 'alert'} on ${what} (${names.join(' or ')}${label ? ` by ${label}` : ''})`);
}
checkServiceMonitor(path.join(dir, 'servicemonitor.yaml'));

for (const f of findings.list) console.log(f);
if (findings.list.length) {
  console.log(`${findings.list.length} finding(s) in ${findings.checks} checks`);
  process.exit(1);
}
console.log(`${findings.checks} checks passed: ${queries} dashboard queries and ${alerts} alerts over ` +
  `${referenced.size} metrics (${[...referenced].sort().join(', ')})`);
