// attache's diagnostics page. Reads the JSON under /debug/ and follows changes by polling
// /debug/summary. Every text from the server goes into the page as a text node, never as markup.
'use strict';

const POLL_MS = 2000;
const PAGE_SIZE = 100;

const state = {
  generation: null,
  envoysKey: null,
  version: null,
  lists: {
    routes: { q: '', offset: 0, total: 0, asked: 0 },
    clusters: { q: '', offset: 0, total: 0, asked: 0 },
  },
  refreshing: false,
};

const byId = (id) => document.getElementById(id);

// el('td', {class: 'x'}, 'text', otherNode): an element with attributes and children.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { cache: 'no-store' });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function ago(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many || one + 's'}`;
}

function renderSummary(s) {
  const status = byId('status');
  const problems = s.counts.errors > 0;
  status.textContent = !s.ready
    ? 'Not ready: no configuration served yet'
    : problems
      ? `Serving, with ${plural(s.counts.errors, 'error')} (objects left out)`
      : 'Serving';
  status.className = `pill ${!s.ready ? 'bad' : problems ? 'warn' : 'good'}`;
  const facts = byId('facts');
  const changed = s.changed_at_unix_ms
    ? el('time', { datetime: new Date(s.changed_at_unix_ms).toISOString(), title: new Date(s.changed_at_unix_ms).toString() },
      ago(s.now_unix_ms - s.changed_at_unix_ms))
    : 'never';
  const rows = [
    ['Version', el('code', { id: 'version' }, s.version || 'none')],
    ['Changed', changed],
    ['Source', s.source],
    ['Objects', s.objects],
    ['Envoys', s.envoys.length],
  ];
  facts.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  byId('nav-diagnostics').textContent = s.counts.errors + s.counts.warnings > 0
    ? `(${plural(s.counts.errors, "error")}, ${plural(s.counts.warnings, "warning")})` : '';
  byId('nav-routes').textContent = `(${s.routes})`;
  byId('nav-clusters').textContent = `(${s.clusters})`;
}

async function loadEnvoys() {
  const [envoys, snapshot] = await Promise.all([getJSON('/debug/envoys'), getJSON('/debug/summary')]);
  const body = byId('envoys-body');
  if (envoys.length === 0) {
    body.replaceChildren(el('p', { class: 'empty' }, 'No Envoy is connected. Envoys connect to the ADS address (--ads-listen); with serve --envoy, attache starts one.'));
    return;
  }
  const cards = envoys.map(({ stream, status }) => {
    const types = Object.entries(status.types);
    const nacks = types.filter(([, t]) => t.last_nack);
    const rows = types.map(([type, t]) => {
      const synced = t.acked_version !== null && t.acked_version === t.sent_version;
      return el('tr', {},
        el('th', { scope: 'row' }, type),
        el('td', {}, el('code', {}, t.sent_version || '–')),
        el('td', {}, el('code', {}, t.acked_version || '–')),
        el('td', { class: t.last_nack ? 'bad' : synced ? 'good' : 'warn' },
          t.last_nack ? 'rejected' : synced ? 'in sync' : 'waiting'));
    });
    return el('article', { class: 'envoy', 'data-node': status.node_id },
      el('h3', {}, status.node_id, ' ', el('small', {}, `${status.protocol} stream ${stream} from ${status.peer}`)),
      ...nacks.map(([type, t]) => el('p', { class: 'problem', role: 'alert' },
        el('strong', {}, `Envoy rejected ${type} version ${t.last_nack.version}: `), t.last_nack.message,
        ' It keeps serving the previous configuration.')),
      el('table', { class: 'compact' },
        el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Type'), el('th', { scope: 'col' }, 'Sent'),
          el('th', { scope: 'col' }, 'ACKed'), el('th', { scope: 'col' }, 'State'))),
        el('tbody', {}, rows)));
  });
  body.replaceChildren(el('p', { class: 'note' },
    `Configuration version ${snapshot.version || 'none'}; per-type versions are what each xDS type last carried.`), ...cards);
}

function sourceBlock(lines, target) {
  if (!Array.isArray(lines) || lines.length === 0) return null;
  return el('pre', { class: 'source' }, lines.map((l) => {
    const text = `${String(l.line).padStart(5)}  ${l.text}\n`;
    return l.line === target ? el('mark', {}, text) : text;
  }));
}

async function loadDiagnostics() {
  const data = await getJSON('/debug/diagnostics?context=2');
  const body = byId('diagnostics-body');
  if (data.diagnostics.length === 0) {
    body.replaceChildren(el('p', { class: 'empty good' }, 'No problems: every object was used as written.'));
    return;
  }
  const groups = new Map();
  for (const d of data.diagnostics) {
    const key = d.object ? `${d.object.kind} ${d.object.namespace}/${d.object.name}` : (d.origin ? d.origin.file : 'configuration');
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(d);
  }
  const order = { error: 0, warning: 1, notice: 2 };
  const sorted = [...groups.entries()].sort(([ak, a], [bk, b]) => {
    const sa = Math.min(...a.map((d) => order[d.severity]));
    const sb = Math.min(...b.map((d) => order[d.severity]));
    return sa - sb || ak.localeCompare(bk);
  });
  const c = data.counts;
  body.replaceChildren(
    el('p', { class: 'note' }, `${plural(c.errors, 'error')}, ${plural(c.warnings, 'warning')}, ${plural(c.notices, 'notice')}. Errors leave the object or field out; the rest of the configuration is served.`),
    ...sorted.map(([key, list]) => {
      const worst = list.reduce((w, d) => (order[d.severity] < order[w] ? d.severity : w), 'notice');
      return el('details', { class: `group ${worst}`, open: worst !== 'notice' },
        el('summary', {}, el('span', { class: `badge ${worst}` }, worst), ' ', key, ' ', el('small', {}, `(${list.length})`)),
        el('ul', {}, list.map((d) => {
          const where = d.origin ? `${d.origin.file}:${d.origin.line}:${d.origin.column}` : '';
          return el('li', { class: `diagnostic ${d.severity}` },
            el('p', {},
              el('span', { class: `badge ${d.severity}` }, d.severity), ' ',
              where ? el('code', { class: 'origin' }, where) : null, ' ',
              d.path ? el('code', { class: 'path' }, d.path) : null, ' ',
              d.message),
            d.hint ? el('p', { class: 'hint' }, 'Hint: ', d.hint) : null,
            sourceBlock(d.source, d.origin ? d.origin.line : 0),
            el('p', { class: 'code' }, d.code));
        })));
    }));
}

function matchText(r) {
  const kinds = { prefix: 'prefix', exact: 'exact path', regex: 'regex' };
  return [
    el('code', {}, r.path), ' ', el('small', {}, kinds[r.path_kind] || r.path_kind),
    ...r.headers.map((h) => [el('br'), el('small', {}, 'header '), el('code', {}, h)]),
    ...r.query.map((q) => [el('br'), el('small', {}, 'query '), el('code', {}, q)]),
  ];
}

function sourceCell(source) {
  if (!source) return el('td', {}, '–');
  return el('td', {}, source.object, el('br'), el('code', { class: 'origin' }, source.origin));
}

const renderers = {
  routes: (r) => el('tr', {},
    el('td', {}, r.host),
    el('td', {}, matchText(r)),
    el('td', { class: 'num' }, `${r.weight}%`),
    el('td', {}, el('code', {}, r.target)),
    sourceCell(r.source),
    el('td', {}, el('code', {}, r.table))),
  clusters: (c) => el('tr', {},
    el('td', {}, el('code', {}, c.name)),
    el('td', {}, `${c.host}:${c.port}`, el('br'), el('small', {}, `${c.discovery}${c.tls ? ', TLS' : ''}`)),
    el('td', {}, c.used_by.map((u, i) => [i ? el('br') : null, u])),
    el('td', {}, c.endpoints
      ? [`${c.endpoints.service}:${c.endpoints.port}: `, c.endpoints.addresses.length
        ? el('code', {}, c.endpoints.addresses.join(' ')) : el('span', { class: 'warn' }, 'no ready endpoint')]
      : el('small', {}, 'by address'))),
};

async function loadList(name) {
  const list = state.lists[name];
  // Only the latest request's answer is shown (typing asks again before an answer arrives).
  const asked = ++list.asked;
  const q = encodeURIComponent(list.q);
  const data = await getJSON(`/debug/${name}?q=${q}&offset=${list.offset}&limit=${PAGE_SIZE}`);
  if (asked !== list.asked) return;
  list.total = data.total;
  if (data.total > 0 && list.offset >= data.total) {
    list.offset = Math.floor((data.total - 1) / PAGE_SIZE) * PAGE_SIZE;
    return loadList(name);
  }
  const rows = data.items.map(renderers[name]);
  if (rows.length === 0) {
    rows.push(el('tr', {}, el('td', { colspan: 6, class: 'empty' }, list.q ? `Nothing matches “${list.q}”.` : 'None.')));
  }
  byId(`${name}-rows`).replaceChildren(...rows);
  byId(`${name}-range`).textContent = data.total === 0 ? '0 of 0'
    : `${list.offset + 1}–${list.offset + data.items.length} of ${data.total}`;
  const pager = document.querySelector(`.pager[data-list="${name}"]`);
  pager.querySelector('[data-step="-1"]').disabled = list.offset === 0;
  pager.querySelector('[data-step="1"]').disabled = list.offset + PAGE_SIZE >= data.total;
}

async function loadRules() {
  const rules = await getJSON('/debug/rules');
  byId('rules-rows').replaceChildren(...rules.map((r) => el('tr', {},
    el('td', {}, el('code', {}, r.id), r.patch ? el('small', {}, ' patch') : null),
    el('td', {}, r.pack),
    el('td', {}, r.kind),
    el('td', {}, el('code', {}, r.emits)),
    el('td', {}, el('code', {}, r.template)),
    el('td', {}, r.when ? el('code', {}, r.when) : '–'))));
}

function showError(e) {
  const p = byId('load-error');
  p.textContent = `Cannot reach attache: ${e.message}. Retrying every ${POLL_MS / 1000} s.`;
  p.hidden = false;
  const status = byId('status');
  status.textContent = 'Disconnected';
  status.className = 'pill bad';
}

async function refresh(force) {
  const s = await getJSON('/debug/summary');
  byId('load-error').hidden = true;
  renderSummary(s);
  const envoysKey = JSON.stringify(s.envoys);
  const changed = force || s.generation !== state.generation;
  const work = [];
  if (changed) work.push(loadDiagnostics(), loadList('routes'), loadList('clusters'));
  if (changed || envoysKey !== state.envoysKey) work.push(loadEnvoys());
  await Promise.all(work);
  state.generation = s.generation;
  state.envoysKey = envoysKey;
  // For scripts, tests and the benchmark: what the page shows, and when it first showed it
  // (milliseconds since the navigation started).
  if (window.attacheReadyMs === undefined) window.attacheReadyMs = performance.now();
  document.body.dataset.version = s.version || '';
  document.body.dataset.generation = s.generation;
  document.body.dataset.ready = 'true';
}

function wireLists() {
  for (const form of document.querySelectorAll('form.filter')) {
    const name = form.dataset.list;
    const input = form.querySelector('input');
    let timer = null;
    form.addEventListener('submit', (e) => e.preventDefault());
    input.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        state.lists[name].q = input.value.trim();
        state.lists[name].offset = 0;
        loadList(name).catch(showError);
      }, 150);
    });
  }
  for (const pager of document.querySelectorAll('.pager')) {
    const name = pager.dataset.list;
    pager.addEventListener('click', (e) => {
      const step = Number(e.target.dataset && e.target.dataset.step);
      if (!step) return;
      const list = state.lists[name];
      list.offset = Math.max(0, list.offset + step * PAGE_SIZE);
      loadList(name).catch(showError);
    });
  }
}

wireLists();
loadRules().catch(showError);
state.refreshing = true;
refresh(true).catch(showError).finally(() => { state.refreshing = false; });
// One refresh at a time: a slow answer is not overtaken by the next poll's.
setInterval(() => {
  if (state.refreshing) return;
  state.refreshing = true;
  refresh(false).catch(showError).finally(() => { state.refreshing = false; });
}, POLL_MS);
