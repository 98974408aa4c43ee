// SPDX-License-Identifier: MIT
//
// The ckptconv jobs page: lists the daemon's jobs, follows the active ones
// through their Server-Sent Events (/v1/jobs/{id}/events, read with fetch so
// that the token travels in the Authorization header, never in a URL),
// shows one job with its tensors, cancels jobs and submits new ones.
// Every value from the API is put in the page as text (textContent), never
// parsed as HTML: tensor names and labels come from users.
'use strict';

(() => {
  const TOKEN_KEY = 'ckptconv-token';
  const LIST_INTERVAL_MS = 3000;   // list refresh; SSE carries progress in between
  const TENSORS_INTERVAL_MS = 1000;
  const MAX_STREAMS = 4;           // leaves connections for requests (6 per origin)
  const PAGE_SIZE = 50;
  const LIST_STEP = 50;
  const ACTIVE = new Set(['queued', 'running']);

  const $ = (id) => document.getElementById(id);

  // ---- DOM building: text only ----

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else if (key.startsWith('data-')) node.setAttribute(key, String(value));
      else if (key === 'href' || key === 'title' || key === 'value' || key === 'max') node.setAttribute(key, String(value));
      else throw new Error(`el: unexpected property ${key}`);
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // ---- formatting ----

  function unitFor(bytes) {
    if (bytes >= 1e9) return [1e9, 'GB'];
    if (bytes >= 1e6) return [1e6, 'MB'];
    return [1e3, 'KB'];
  }

  function formatBytes(bytes) {
    const [size, name] = unitFor(bytes);
    return `${(bytes / size).toFixed(2)} ${name}`;
  }

  function formatRate(bytesPerSecond) {
    if (!bytesPerSecond) return '';
    const [size, name] = unitFor(bytesPerSecond);
    return `${(bytesPerSecond / size).toFixed(2)} ${name}/s`;
  }

  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined || seconds < 0) return '';
    const s = Math.round(seconds);
    const two = (n) => String(n).padStart(2, '0');
    if (s >= 3600) return `${Math.floor(s / 3600)}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)}`;
    return `${two(Math.floor(s / 60))}:${two(s % 60)}`;
  }

  function formatAge(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return '';
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return `${Math.floor(s)}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor(s / 60) % 60}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
  }

  // A long path shortened from the left: its last components say the most.
  function shortPath(p, max = 40) {
    if (!p || p.length <= max) return p || '';
    return `\u2026${p.slice(p.length - max + 1)}`;
  }

  function percentOf(job) {
    const p = job.progress || {};
    return typeof p.percent === 'number' ? p.percent : 0;
  }

  // ---- the API ----

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field;
    }
  }

  let token = sessionStorage.getItem(TOKEN_KEY);

  function headers(extra) {
    const h = Object.assign({ Accept: 'application/json' }, extra || {});
    if (token) h.Authorization = `Bearer ${token}`;
    return h;
  }

  async function api(method, path, body, extraHeaders) {
    const init = { method, headers: headers(extraHeaders), cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      setConnection(false);
      throw new ApiError(0, 'unreachable', `the service cannot be reached (${e.message})`);
    }
    setConnection(true);
    if (resp.status === 204) return null;
    let json = null;
    try {
      json = await resp.json();
    } catch (e) {
      json = null;
    }
    if (!resp.ok) {
      const err = (json && json.error) || {};
      if (resp.status === 401) needToken(Boolean(token));
      throw new ApiError(resp.status, err.code || `http_${resp.status}`,
        err.message || `HTTP ${resp.status}`, err.field);
    }
    return json;
  }

  function errorText(e) {
    if (e instanceof ApiError) return `${e.code}: ${e.message}${e.field ? ` (field ${e.field})` : ''}`;
    return String(e && e.message ? e.message : e);
  }

  function setConnection(ok) {
    const c = $('conn');
    c.textContent = ok ? 'live' : 'offline';
    c.className = ok ? 'conn ok' : 'conn bad';
  }

  // ---- event streams ----
  //
  // One stream per followed job, shared by the list and the detail view;
  // at most MAX_STREAMS at once.

  const streams = new Map(); // id -> {controller}

  function parseEvent(block) {
    let event = 'message';
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length === 0) return null;
    try {
      return { event, data: JSON.parse(data.join('\n')) };
    } catch (e) {
      return null;
    }
  }

  async function runStream(id, controller) {
    try {
      const resp = await fetch(`/v1/jobs/${encodeURIComponent(id)}/events`, {
        headers: headers({ Accept: 'text/event-stream' }), signal: controller.signal,
        cache: 'no-store', credentials: 'omit',
      });
      if (!resp.ok || !resp.body) {
        if (resp.status === 401) needToken(Boolean(token));
        return;
      }
      setConnection(true);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let m;
        while ((m = /\r?\n\r?\n/.exec(buffer))) {
          const block = buffer.slice(0, m.index);
          buffer = buffer.slice(m.index + m[0].length);
          const ev = parseEvent(block);
          if (ev) onStreamEvent(id, ev);
        }
      }
    } catch (e) {
      if (e.name !== 'AbortError') setConnection(false);
    } finally {
      if (streams.get(id) && streams.get(id).controller === controller) streams.delete(id);
      scheduleList(200);
    }
  }

  function follow(id) {
    if (streams.has(id)) return;
    const controller = new AbortController();
    streams.set(id, { controller });
    runStream(id, controller);
  }

  function unfollow(id) {
    const s = streams.get(id);
    if (!s) return;
    streams.delete(id);
    s.controller.abort();
  }

  // The jobs worth following: the open one first, then running, then the
  // oldest queued ones.
  function syncStreams() {
    const wanted = [];
    if (current.view === 'job' && current.job && ACTIVE.has(current.job.state)) wanted.push(current.job.id);
    const active = [...jobs.values()].filter((j) => ACTIVE.has(j.state));
    active.sort((a, b) => (a.state === b.state ? a.created_at.localeCompare(b.created_at)
      : (a.state === 'running' ? -1 : 1)));
    for (const j of active) if (!wanted.includes(j.id)) wanted.push(j.id);
    const keep = new Set(wanted.slice(0, MAX_STREAMS));
    for (const id of [...streams.keys()]) if (!keep.has(id)) unfollow(id);
    for (const id of keep) follow(id);
  }

  function onStreamEvent(id, ev) {
    let job = jobs.get(id) || (current.job && current.job.id === id ? current.job : null);
    if (ev.event === 'progress') {
      if (!job) return;
      job = Object.assign({}, job, { state: 'running', progress: ev.data });
    } else if (ev.event === 'state') {
      job = ev.data;
    } else if (ev.event === 'shutdown') {
      // The service is stopping: the job stays queued for its next start.
      if (!job) return;
      job = Object.assign({}, job, { state: ev.data.state });
    } else {
      return;
    }
    if (jobs.has(id)) jobs.set(id, job);
    if (current.job && current.job.id === id) current.job = job;
    renderJobRow(job);
    if (current.view === 'job' && current.job && current.job.id === id) {
      renderJob(job);
      if (ev.event === 'state') loadTensors();
    }
  }

  // ---- state and routing ----

  const jobs = new Map(); // id -> job, in list order
  const current = { view: null, job: null, tensorsOffset: 0, tensorsTotal: 0 };
  let listLimit = LIST_STEP;
  let listTimer = null;
  let tensorsTimer = null;
  let tokenReturn = null;

  function route() {
    const hash = location.hash || '#/';
    const m = /^#\/jobs\/([0-9a-f]{16})$/.exec(hash);
    if (hash === '#/new') return { view: 'new' };
    if (m) return { view: 'job', id: m[1] };
    return { view: 'jobs' };
  }

  function show(view) {
    for (const name of ['token', 'jobs', 'job', 'new']) $(`${name}-view`).hidden = name !== view;
    $('nav-jobs').classList.toggle('current', view === 'jobs');
    $('nav-new').classList.toggle('current', view === 'new');
    current.view = view;
  }

  function navigate() {
    const r = route();
    if (current.view === 'token' && !token) return;
    clearTimeout(tensorsTimer);
    if (r.view === 'job') {
      if (!current.job || current.job.id !== r.id) {
        current.job = null;
        current.tensorsOffset = 0;
        $('tensors-filter').value = '';
        clear($('tensors-body'));
        clear($('job-summary'));
        clear($('job-outcome'));
        $('job-id').textContent = r.id;
      }
      show('job');
      loadJob(r.id);
    } else if (r.view === 'new') {
      show('new');
    } else {
      show('jobs');
    }
    scheduleList(0);
  }

  function needToken(refused) {
    if (current.view !== 'token') tokenReturn = location.hash;
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $('forget-token').hidden = true;
    for (const id of [...streams.keys()]) unfollow(id);
    $('token-error').textContent = refused ? 'The service refused this token.' : '';
    show('token');
    $('token-input').focus();
  }

  // ---- the jobs list ----

  function scheduleList(delay) {
    clearTimeout(listTimer);
    listTimer = setTimeout(refreshList, delay);
  }

  async function refreshList() {
    clearTimeout(listTimer);
    if (current.view === 'token') return;
    const state = $('jobs-filter').value;
    const query = new URLSearchParams({ limit: String(listLimit) });
    if (state) query.set('state', state);
    try {
      const page = await api('GET', `/v1/jobs?${query}`);
      $('jobs-error').textContent = '';
      jobs.clear();
      for (const j of page.jobs) jobs.set(j.id, j);
      renderJobs(page);
      syncStreams();
    } catch (e) {
      if (e.status !== 401) $('jobs-error').textContent = errorText(e);
    }
    listTimer = setTimeout(refreshList, LIST_INTERVAL_MS);
  }

  function stateBadge(state, cancelRequested) {
    return el('span', { class: `state s-${state}`, 'data-state': state },
      cancelRequested && ACTIVE.has(state) ? `${state} (cancelling)` : state);
  }

  function labelChips(labels) {
    const span = el('span', { class: 'labels' });
    for (const [k, v] of Object.entries(labels || {}))
      span.append(el('span', { class: 'label', title: `${k}=${v}` }, `${k}=${v}`));
    return span;
  }

  function jobRow(job) {
    const p = job.progress || {};
    const percent = percentOf(job);
    const running = job.state === 'running';
    const tr = el('tr', { 'data-job': job.id, 'data-state': job.state },
      el('td', {}, el('a', { href: `#/jobs/${encodeURIComponent(job.id)}`, class: 'mono' }, job.id)),
      el('td', {}, stateBadge(job.state, job.cancel_requested),
        job.error && job.state === 'failed' ? el('div', { class: 'code', title: job.error.message }, job.error.code) : null),
      el('td', { class: 'paths' },
        el('div', { class: 'mono src', title: job.source || '' }, shortPath(job.source) || '(from the manifest)'),
        el('div', { class: 'mono dst', title: job.destination }, '\u2192 ', shortPath(job.destination))),
      el('td', { class: 'progress-cell' },
        el('progress', { max: '100', value: String(percent) }),
        el('span', { class: 'pct' }, `${percent.toFixed(1)}%`)),
      el('td', { class: 'num rate' }, running ? formatRate(p.bytes_per_second) : ''),
      el('td', { class: 'num eta' }, running ? formatDuration(p.eta_seconds) : ''),
      el('td', { class: 'num age', title: job.created_at }, formatAge(job.created_at)),
      el('td', { class: 'labels-cell' }, labelChips(job.labels)));
    return tr;
  }

  function renderJobRow(job) {
    const old = document.querySelector(`#jobs-body tr[data-job="${CSS.escape(job.id)}"]`);
    if (old) old.replaceWith(jobRow(job));
  }

  function renderJobs(page) {
    const body = $('jobs-body');
    clear(body);
    for (const job of jobs.values()) body.append(jobRow(job));
    $('jobs-empty').hidden = jobs.size > 0;
    $('jobs-more').hidden = !page.next_cursor || listLimit >= 1000;
    $('jobs-count').textContent = `${jobs.size} job${jobs.size === 1 ? '' : 's'} shown`;
  }

  // ---- one job ----

  async function loadJob(id) {
    try {
      const job = await api('GET', `/v1/jobs/${encodeURIComponent(id)}`);
      if (route().id !== id) return;
      current.job = job;
      $('job-error').textContent = '';
      renderJob(job);
      loadTensors();
      syncStreams();
    } catch (e) {
      if (e.status !== 401) $('job-error').textContent = errorText(e);
    }
  }

  function summaryItem(dl, term, ...values) {
    dl.append(el('dt', {}, term), el('dd', {}, ...values));
  }

  function renderJob(job) {
    const p = job.progress || {};
    $('job-id').textContent = job.id;
    const state = $('job-state');
    state.textContent = job.cancel_requested && ACTIVE.has(job.state) ? `${job.state} (cancelling)` : job.state;
    state.className = `state s-${job.state}`;
    state.setAttribute('data-state', job.state);
    $('job-cancel').hidden = !ACTIVE.has(job.state) || job.cancel_requested;
    $('job-progress').value = percentOf(job);
    const parts = [`${percentOf(job).toFixed(1)}%`,
      `${p.tensors_done || 0}/${p.tensors_total || 0} tensors`,
      `${formatBytes(p.bytes_done || 0)} of ${formatBytes(p.bytes_total || 0)}`];
    if (job.state === 'running') {
      if (p.bytes_per_second) parts.push(formatRate(p.bytes_per_second));
      if (p.eta_seconds !== null && p.eta_seconds !== undefined) parts.push(`ETA ${formatDuration(p.eta_seconds)}`);
    }
    $('job-progress-text').textContent = parts.join(' \u00b7 ');

    const dl = $('job-summary');
    clear(dl);
    summaryItem(dl, 'Source', el('span', { class: 'mono' }, job.source || '(from the manifest)'));
    summaryItem(dl, 'Destination', el('span', { class: 'mono' }, job.destination));
    summaryItem(dl, 'Layout', job.to || '');
    summaryItem(dl, 'Labels', labelChips(job.labels));
    summaryItem(dl, 'Created', job.created_at, ` (${formatAge(job.created_at)} ago)`);
    if (job.started_at) summaryItem(dl, 'Started', job.started_at);
    if (job.finished_at) summaryItem(dl, 'Finished', job.finished_at);
    if (job.restarts) summaryItem(dl, 'Restarts', String(job.restarts));
    if (job.credentials_source) summaryItem(dl, 'Credentials from', job.credentials_source);
    summaryItem(dl, 'Options', el('code', { class: 'options' }, JSON.stringify(job.options)));
    const inFlight = p.in_flight || [];
    if (job.state === 'running' && inFlight.length) {
      const list = el('ul', { class: 'inflight-list' });
      for (const name of inFlight) list.append(el('li', { class: 'mono' }, name));
      summaryItem(dl, 'Writing now', list);
    }

    const out = $('job-outcome');
    clear(out);
    if (job.error) {
      out.append(el('div', { class: 'outcome error-box', 'data-code': job.error.code },
        el('strong', {}, job.error.code), ': ', job.error.message,
        job.error.tensor ? el('div', { class: 'mono' }, `tensor ${job.error.tensor}`) : null));
    } else if (job.result) {
      const r = job.result;
      const box = el('div', { class: 'outcome ok-box' },
        el('strong', {}, 'Converted'),
        ` ${r.tensors} tensors, ${formatBytes(r.bytes)} in ${r.files.length} file${r.files.length === 1 ? '' : 's'}`);
      const files = el('ul', { class: 'files' });
      for (const f of r.files) files.append(el('li', { class: 'mono' }, f));
      box.append(files);
      for (const w of r.warnings || []) box.append(el('div', { class: 'warning' }, `warning: ${w}`));
      out.append(box);
    }
  }

  async function loadTensors() {
    clearTimeout(tensorsTimer);
    const job = current.job;
    if (current.view !== 'job' || !job) return;
    const state = $('tensors-filter').value;
    const query = new URLSearchParams({ offset: String(current.tensorsOffset), limit: String(PAGE_SIZE) });
    if (state) query.set('state', state);
    try {
      const page = await api('GET', `/v1/jobs/${encodeURIComponent(job.id)}/tensors?${query}`);
      if (!current.job || current.job.id !== job.id) return;
      if (page.total > 0 && current.tensorsOffset >= page.total) {
        current.tensorsOffset = Math.floor((page.total - 1) / PAGE_SIZE) * PAGE_SIZE;
        return loadTensors();
      }
      current.tensorsTotal = page.total;
      renderTensors(page);
    } catch (e) {
      if (e.status !== 401) $('job-error').textContent = errorText(e);
    }
    if (current.job && ACTIVE.has(current.job.state))
      tensorsTimer = setTimeout(loadTensors, TENSORS_INTERVAL_MS);
  }

  function renderTensors(page) {
    const inFlight = new Set(((current.job && current.job.progress) || {}).in_flight || []);
    const body = $('tensors-body');
    clear(body);
    page.tensors.forEach((t, i) => {
      const flying = t.state === 'running' || inFlight.has(t.name);
      const tr = el('tr', { class: flying ? 'inflight' : undefined, 'data-state': t.state, 'data-tensor': t.name },
        el('td', { class: 'num' }, String(page.offset + i + 1)),
        el('td', { class: 'mono name', title: (t.sources || []).join('\n') }, t.name),
        el('td', {}, el('span', { class: `tstate t-${t.state}` }, t.state)),
        el('td', { class: 'mono' }, t.dtype),
        el('td', { class: 'mono' }, `[${(t.shape || []).join(', ')}]`),
        el('td', { class: 'num' }, formatBytes(t.bytes)),
        el('td', { class: 'mono' }, t.file));
      body.append(tr);
    });
    const first = page.total ? page.offset + 1 : 0;
    const last = page.offset + page.tensors.length;
    $('tensors-page').textContent = `${first}\u2013${last} of ${page.total}`;
    $('tensors-prev').disabled = page.offset === 0;
    $('tensors-next').disabled = last >= page.total;
  }

  async function cancelJob() {
    const job = current.job;
    if (!job || !window.confirm(`Cancel job ${job.id}? Its unfinished output is removed.`)) return;
    $('job-cancel').disabled = true;
    try {
      const after = await api('DELETE', `/v1/jobs/${encodeURIComponent(job.id)}`);
      if (after) {
        current.job = after;
        renderJob(after);
        renderJobRow(after);
      }
      $('job-error').textContent = '';
    } catch (e) {
      $('job-error').textContent = errorText(e);
    } finally {
      $('job-cancel').disabled = false;
      scheduleList(0);
    }
  }

  // ---- a new job ----

  function idempotencyKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return `ui-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
  }

  function sizeValue(text) {
    const t = text.trim();
    return /^[0-9]+$/.test(t) ? Number(t) : t;
  }

  function jobRequest(form) {
    const v = (name) => form.elements[name].value.trim();
    const request = { source: v('source'), destination: v('destination'), to: v('to'), options: {}, labels: {} };
    const o = request.options;
    if (request.to === 'native') o.dtype = v('dtype');
    if (v('max_shard_size')) o.max_shard_size = sizeValue(v('max_shard_size'));
    if (v('exclude')) o.exclude = v('exclude');
    if (v('max_bytes_per_second')) o.max_bytes_per_second = sizeValue(v('max_bytes_per_second'));
    if (v('ep_size') || v('ep_rank')) o.expert_parallel = { size: Number(v('ep_size')), rank: Number(v('ep_rank')) };
    if (form.elements.overwrite.checked) o.overwrite = true;
    if (form.elements.dry_run.checked) o.dry_run = true;
    for (const line of form.elements.labels.value.split('\n')) {
      if (!line.trim()) continue;
      const eq = line.indexOf('=');
      if (eq <= 0) throw new Error(`label '${line.trim()}' is not NAME=VALUE`);
      request.labels[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
    }
    return request;
  }

  async function submitJob(event) {
    event.preventDefault();
    const form = event.target;
    const button = form.querySelector('button[type=submit]');
    $('new-error').textContent = '';
    let request;
    try {
      request = jobRequest(form);
    } catch (e) {
      $('new-error').textContent = e.message;
      return;
    }
    button.disabled = true;
    try {
      const job = await api('POST', '/v1/jobs', request, { 'Idempotency-Key': idempotencyKey() });
      form.reset();
      location.hash = `#/jobs/${job.id}`;
    } catch (e) {
      $('new-error').textContent = errorText(e);
    } finally {
      button.disabled = false;
    }
  }

  // ---- start ----

  async function start() {
    $('token-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const input = $('token-input');
      token = input.value.trim();
      input.value = '';
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token-error').textContent = '';
      try {
        await whoami();
        $('forget-token').hidden = false;
        current.view = null;
        if (location.hash !== tokenReturn && tokenReturn !== null) location.hash = tokenReturn;
        else navigate();
      } catch (e) {
        if (e.status !== 401) $('token-error').textContent = errorText(e);
      }
    });
    $('forget-token').addEventListener('click', () => needToken(false));
    $('jobs-filter').addEventListener('change', () => { listLimit = LIST_STEP; scheduleList(0); });
    $('jobs-more').addEventListener('click', () => { listLimit = Math.min(1000, listLimit + LIST_STEP); scheduleList(0); });
    $('tensors-filter').addEventListener('change', () => { current.tensorsOffset = 0; loadTensors(); });
    $('tensors-prev').addEventListener('click', () => {
      current.tensorsOffset = Math.max(0, current.tensorsOffset - PAGE_SIZE);
      loadTensors();
    });
    $('tensors-next').addEventListener('click', () => {
      if (current.tensorsOffset + PAGE_SIZE < current.tensorsTotal) current.tensorsOffset += PAGE_SIZE;
      loadTensors();
    });
    $('job-cancel').addEventListener('click', cancelJob);
    $('new-form').addEventListener('submit', submitJob);
    $('new-to').addEventListener('change', () => { $('new-dtype').disabled = $('new-to').value !== 'native'; });
    window.addEventListener('hashchange', navigate);
    setInterval(() => {
      for (const cell of document.querySelectorAll('#jobs-body td.age')) {
        cell.textContent = formatAge(cell.getAttribute('title'));
      }
    }, 1000);
    try {
      await whoami();
      $('forget-token').hidden = !token;
      navigate();
    } catch (e) {
      if (e.status !== 401) {
        $('conn').textContent = errorText(e);
        navigate();
      }
    }
  }

  async function whoami() {
    const v = await api('GET', '/v1/version');
    $('service').textContent = `${v.name} ${v.version}`;
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
