// corral's web console: namespace selection, the watches behind every list, routing between
// the overview and a VMI's page, scale and delete, and the token prompt for listeners that
// need one. Everything on screen follows watch events; only metrics are polled (charts.js).

import { call, listWatch, needsToken, setToken, token, ApiError } from './api.js';
import { PATHS } from './kinds.js';
import { $, h } from './dom.js';
import { renderVmirs, renderVmis, renderHpas, renderServices, renderEvents } from './tables.js';
import { setupCreate } from './create.js';
import { openVmi, closeVmi, renderVmi, setupVmi, currentVmi } from './vmi.js';
import { startCharts, sampleHpa } from './charts.js';

const state = { vmirs: new Map(), vmi: new Map(), hpa: new Map(), svc: new Map(), events: new Map() };
const namespaces = new Set(['default']);
let watches = null;

const ns = () => $('ns').value || 'default';
const say = (m) => { $('status').textContent = m; };

const actions = {
  async scale(name, replicas) {
    try {
      await call('PATCH', `${PATHS.vmirs(ns())}/${encodeURIComponent(name)}/scale`,
        JSON.stringify({ spec: { replicas } }), 'application/merge-patch+json');
      say(`scaled ${name} to ${replicas}`);
    } catch (e) { say(`scale ${name}: ${e.message}`); }
  },
  async remove(kind, name) {
    if (!window.confirm(`Delete ${kind} ${name}?`)) return;
    try {
      await call('DELETE', `${PATHS[kind](ns())}/${encodeURIComponent(name)}`);
      say(`deleted ${kind} ${name}`);
    } catch (e) { say(`delete ${name}: ${e.message}`); }
  },
};

const renderers = {
  vmirs: () => renderVmirs(state, actions),
  vmi: () => { renderVmis(state, actions); renderVmi(state); },
  hpa: () => renderHpas(state, actions),
  svc: () => renderServices(state, actions),
  events: () => { renderEvents($('t-events'), state.events); renderVmi(state); },
};

function renderNamespaces() {
  const sel = $('ns');
  const cur = sel.value || new URLSearchParams(location.search).get('namespace') || 'default';
  sel.replaceChildren(...[...namespaces].sort().map((n) => h('option', { value: n }, n)));
  sel.value = namespaces.has(cur) ? cur : 'default';
}

function authFailed() {
  setToken(null);
  watches?.abort();
  if (!$('login').open) $('login').showModal();
}

function startWatches() {
  watches?.abort();
  watches = new AbortController();
  const { signal } = watches;
  for (const kind of Object.keys(renderers)) {
    state[kind] = new Map();
    renderers[kind]();
    listWatch(PATHS[kind](ns()), (map, err) => {
      if (err) { authFailed(); return; }
      state[kind] = map;
      renderers[kind]();
      if (kind === 'hpa') sampleHpa(state);
    }, signal);
  }
  // Namespaces: those of every set and VMI, watched across namespaces.
  for (const kind of ['vmirs', 'vmi']) {
    listWatch(PATHS[kind](''), (map) => {
      if (!map) return;
      let added = false;
      for (const o of map.values()) {
        const n = o.metadata.namespace;
        if (n && !namespaces.has(n)) { namespaces.add(n); added = true; }
      }
      if (added) renderNamespaces();
    }, signal, (o) => `${o.metadata.namespace}/${o.metadata.name}`);
  }
  startCharts(ns, state, signal);
}

function route() {
  const m = /^#\/vmi\/([^/]+)\/([^/]+)$/.exec(location.hash);
  if (m) {
    const [vns, name] = [decodeURIComponent(m[1]), decodeURIComponent(m[2])];
    if (vns !== ns()) { namespaces.add(vns); renderNamespaces(); $('ns').value = vns; startWatches(); }
    const c = currentVmi();
    if (!c || c.ns !== vns || c.name !== name) openVmi(vns, name);
    renderVmi(state);
    document.title = `${name} · corral`;
  } else if (currentVmi()) {
    const { name } = currentVmi();
    closeVmi();
    document.title = 'corral';
    // Back where the user left: the VMI's link, else the table.
    ($(`open-vmi-${name}`) || $('h-vmi')).focus();
  }
}

async function boot() {
  if (!token() && (await needsToken())) { authFailed(); return; }
  try {
    await call('GET', '/version');
  } catch (e) {
    if (e instanceof ApiError && e.code === 401) { authFailed(); return; }
    say(`the API does not answer: ${e.message}`);
  }
  startWatches();
  route();
}

function start() {
  renderNamespaces();
  $('ns').addEventListener('change', () => { location.hash = '#/'; startWatches(); });
  setupCreate(ns, say);
  setupVmi();
  // Without a token there is nothing to show: Escape does not dismiss the sign-in.
  $('login').addEventListener('cancel', (e) => e.preventDefault());
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    setToken($('login-token').value.trim());
    $('login').close();
    boot();
  });
  window.addEventListener('hashchange', route);
  // Ages in the tables move on between events.
  setInterval(() => { if (!document.hidden) for (const r of Object.values(renderers)) r(); }, 10000);
  boot();
}

let started = false;
document.addEventListener('DOMContentLoaded', () => { if (!started) { started = true; start(); } });
