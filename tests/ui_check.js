// SPDX-License-Identifier: MIT
//
// ui_check: drives the daemon's jobs page in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core) the way an operator would:
// asks for the token, lists the jobs, renders a label holding markup as
// text, submits a job with the form, pages and filters a job's tensors with
// the in-flight ones highlighted, cancels a running job, and follows a
// queued job through running to succeeded, live.  Prints "ok: ..." or
// "FAIL: ..." per check (tests/daemon_ui.sh counts them) and exits 1 on any
// failure.  Nothing but the daemon on 127.0.0.1 is contacted.
//
// usage: node tests/ui_check.js BASE TOKEN_FILE DATA_DIR RUNNING_JOB LABEL SCREENSHOT
//   RUNNING_JOB  a throttled job, running, whose label "note" is LABEL
//   SCREENSHOT   where to write a PNG of the jobs list while a job runs
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { npmRequire } = require('./checklib.js');
const CHROMIUM = process.env.CKPTCONV_CHROMIUM || '/usr/bin/chromium';
const OVERALL_TIMEOUT_MS = 100000;

const [base, tokenFile, dataDir, runningJob, markupLabel, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error('usage: node tests/ui_check.js BASE TOKEN_FILE DATA_DIR RUNNING_JOB LABEL SCREENSHOT');
  process.exit(2);
}
const token = fs.readFileSync(tokenFile, 'utf8').trim();

let failed = 0;
function ok(name) { console.log(`ok: ${name}`); }
function fail(name, detail) { failed++; console.log(`FAIL: ${name}${detail ? `: ${detail}` : ''}`); }
function check(cond, name, detail) { if (cond) ok(name); else fail(name, detail); return cond; }

// Polls fn() until it returns a truthy value; that value, or null after ms.
async function until(fn, ms, every = 100) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) return null;
    await new Promise((r) => setTimeout(r, every));
  }
}

async function main() {
  let chromium;
  try {
    ({ chromium } = npmRequire('playwright-core'));
  } catch (e) {
    fail('playwright-core loads', `${e.message} (scripts/install-deps.sh test)`);
    return;
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ckptconv-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 640 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    await run(context);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

async function run(context) {
  const requests = [];
  const consoleErrors = [];
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation',
      (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(20000);
  page.on('request', (r) => requests.push(r.url()));
  // The event streams the page opens: /v1/jobs/ID/events answered as SSE,
  // the token in the Authorization header.
  const streams = [];
  page.on('response', (r) => {
    const m = /\/v1\/jobs\/([0-9a-f]{16})\/events$/.exec(new URL(r.url()).pathname);
    if (m) streams.push(r.request().allHeaders().then((h) => ({ id: m[1], status: r.status(),
      type: r.headers()['content-type'] || '', auth: h.authorization === `Bearer ${token}` }), (e) => ({ id: m[1], error: e.message })));
  });
  page.on('console', (m) => {
    // The page's first API call is refused with 401 until it has the token.
    if (m.type() === 'error' && !/status of 401/.test(m.text())) consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  const cspViolations = async () => page.evaluate(() => window.__cspViolations.slice());

  // ---- the token ----
  await page.goto(`${base}/`);
  await page.waitForSelector('#token-view', { state: 'visible' });
  ok('the page asks for the token');
  await page.fill('#token-input', 'not-the-token');
  await page.click('#token-form button[type=submit]');
  await page.waitForFunction(() => /refused/.test(document.getElementById('token-error').textContent));
  ok('a wrong token is refused');
  await page.fill('#token-input', token);
  await page.click('#token-form button[type=submit]');
  await page.waitForSelector('#jobs-view', { state: 'visible' });
  ok('with the token the jobs list shows');

  // ---- the list ----
  const row = (id) => `#jobs-body tr[data-job="${id}"]`;
  await page.waitForSelector(row(runningJob));
  const runningState = await page.getAttribute(row(runningJob), 'data-state');
  check(runningState === 'running', 'the list shows the running job as running', `state ${runningState}`);
  const cells = await page.$$eval(`${row(runningJob)} td`, (tds) => tds.map((td) => td.textContent));
  check(/%/.test(cells[3]) && /\/s$/.test(cells[4].trim()) && /:/.test(cells[5]) && cells[6].trim() !== '',
    'its row has progress, speed, ETA and age', JSON.stringify(cells));
  const chips = await page.$$eval(`${row(runningJob)} .label`, (ls) => ls.map((l) => l.textContent));
  check(chips.includes(`note=${markupLabel}`), 'a label holding markup renders as its text', JSON.stringify(chips));
  const injected = await page.evaluate(() => ({
    flag: window.__xss === undefined ? null : window.__xss,
    elements: document.querySelectorAll('main script, main img, main b').length,
  }));
  check(injected.flag === null && injected.elements === 0, 'the label\'s markup is not run or parsed',
    JSON.stringify(injected));

  await page.reload();
  await page.waitForSelector(row(runningJob));
  check(await page.isHidden('#token-view'), 'after a reload the tab still has its token');

  // ---- the form ----
  await page.click('#nav-new');
  await page.waitForSelector('#new-view', { state: 'visible' });
  await page.fill('#new-source', path.join(dataDir, 'src'));
  await page.fill('#new-destination', path.join(dataDir, 'out-form'));
  await page.fill('#new-rate', '96KB');
  await page.fill('#new-labels', 'team=ui\nnote=<b>bold</b>');
  await page.click('#new-form button[type=submit]');
  await page.waitForFunction(() => /^#\/jobs\/[0-9a-f]{16}$/.test(location.hash));
  const formJob = (await page.evaluate(() => location.hash)).slice('#/jobs/'.length);
  await page.waitForSelector('#job-state[data-state]');
  const formState = await page.getAttribute('#job-state', 'data-state');
  check(formState === 'queued', 'the form submits a job, which waits queued behind the running one',
    `state ${formState}`);
  const formLabels = await page.$$eval('#job-summary .label', (ls) => ls.map((l) => l.textContent));
  check(formLabels.includes('note=<b>bold</b>') && formLabels.includes('team=ui'),
    'the job view shows its labels as text', JSON.stringify(formLabels));

  // ---- the running job's tensors ----
  await page.goto(`${base}/#/jobs/${runningJob}`);
  await page.waitForFunction(() => document.querySelectorAll('#tensors-body tr').length > 0);
  const pageText = async () => page.textContent('#tensors-page');
  const firstPage = await until(async () => (/^1\u201350 of (\d+)$/.exec(await pageText()) || null), 5000);
  const total = firstPage ? Number(firstPage[1]) : 0;
  check(firstPage && total > 50 && (await page.$$('#tensors-body tr')).length === 50,
    'the tensors come a page of 50 at a time', await pageText());
  await page.click('#tensors-next');
  const secondPage = await until(async () => (await pageText()) === `51\u2013${total} of ${total}`, 5000);
  check(secondPage && (await page.$$('#tensors-body tr')).length === total - 50, 'Next shows the rest',
    await pageText());
  await page.click('#tensors-prev');
  check(await until(async () => (await pageText()).startsWith('1\u201350 of'), 5000), 'Previous goes back');

  await page.selectOption('#tensors-filter', 'running');
  const inflight = await until(async () => {
    const rows = await page.$$eval('#tensors-body tr', (trs) => trs.map((tr) => [tr.dataset.state, tr.className]));
    return rows.length > 0 && rows.every(([s, c]) => s === 'running' && c === 'inflight') ? rows : null;
  }, 30000);
  check(inflight, 'filtered by state running, the in-flight tensors are highlighted');
  await page.selectOption('#tensors-filter', 'done');
  const doneRows = await until(async () => {
    const states = await page.$$eval('#tensors-body tr', (trs) => trs.map((tr) => tr.dataset.state));
    return states.length > 0 && states.every((s) => s === 'done') ? states : null;
  }, 5000);
  check(doneRows, 'filtered by state done, only done tensors show');

  // ---- cancel ----
  page.once('dialog', (d) => d.accept());
  await page.click('#job-cancel');
  const cancelled = await until(async () => (await page.getAttribute('#job-state', 'data-state')) === 'cancelled', 20000);
  check(cancelled, 'Cancel stops the running job; the view shows it cancelled');
  check(await page.isVisible('#job-outcome [data-code="cancelled"]'), 'the job view shows why it ended');
  check(await page.isHidden('#job-cancel'), 'a finished job has no cancel button');

  // ---- live state changes in the list ----
  await page.click('#nav-jobs');
  await page.waitForSelector(row(formJob));
  const seen = [];
  let shot = false;
  const finalState = await until(async () => {
    const s = await page.getAttribute(row(formJob), 'data-state').catch(() => null);
    if (s && seen[seen.length - 1] !== s) seen.push(s);
    if (s === 'running' && !shot) {
      const pct = await page.$eval(`${row(formJob)} progress`, (p) => p.value).catch(() => 0);
      if (pct >= 20) {
        await page.screenshot({ path: screenshot });
        shot = true;
      }
    }
    return s === 'succeeded' || s === 'failed' || s === 'cancelled' ? s : null;
  }, 45000, 50);
  check(finalState === 'succeeded' && seen.includes('running'),
    'the list follows the queued job live through running to succeeded', seen.join(' -> '));
  const opened = await Promise.all(streams);
  const sse = (id) => opened.some((x) => x.id === id && x.status === 200 &&
    x.type.startsWith('text/event-stream') && x.auth);
  check(sse(runningJob) && sse(formJob),
    'the running jobs are followed through their SSE streams (text/event-stream, token in the header)',
    JSON.stringify(opened));
  check((await page.getAttribute(row(runningJob), 'data-state')) === 'cancelled',
    'the list shows the cancelled job as cancelled');
  if (!shot) await page.screenshot({ path: screenshot });

  await page.click(`${row(formJob)} a`);
  await page.waitForSelector('#job-outcome .ok-box');
  ok('the finished job shows its result');

  // ---- what the page must never do ----
  const storage = await page.evaluate(() => ({
    session: sessionStorage.getItem('ckptconv-token'), local: localStorage.length,
  }));
  check(storage.session === token && storage.local === 0, 'the token lives in sessionStorage only');
  const leaked = requests.filter((u) => u.includes(encodeURIComponent(token)) || u.includes(token));
  check(leaked.length === 0, 'no request URL carries the token', leaked.join(' '));
  const foreign = requests.filter((u) => !u.startsWith(`${base}/`));
  check(foreign.length === 0, 'every request goes to the daemon', foreign.join(' '));
  const csp = await cspViolations();
  check(csp.length === 0, 'no Content-Security-Policy violation', csp.join('; '));
  check(consoleErrors.length === 0, 'no script error', consoleErrors.join('; '));
}

const timer = setTimeout(() => {
  fail('the browser checks finish in time', `${OVERALL_TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);
main().then(() => {
  clearTimeout(timer);
  process.exit(failed ? 1 : 0);
}, (e) => {
  fail('the browser checks run', e.stack || String(e));
  process.exit(1);
});
