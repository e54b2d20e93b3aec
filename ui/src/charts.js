// Charts (uPlot): CPU per VMI from metrics.k8s.io (polled every 5 s while the page is visible:
// metrics have no watch), and the first HPA's current vs target utilization and replicas,
// sampled from its watch events. Ten minutes of history.

import uPlot from 'uplot';
import { call } from './api.js';
import { PATHS } from './kinds.js';
import { millicores } from './quantity.js';
import { $, h } from './dom.js';

const WINDOW_S = 600;
const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4d7c0f', '#be185d'];

const cpu = { t: [], series: new Map() }; // name -> array aligned with t (null where absent)
const hpa = { t: [], cur: [], target: [], replicas: [], name: '' };
let cpuPlot = null;
let hpaPlot = null;

function width(el) {
  return Math.max(260, el.clientWidth - 8);
}

function trim(t, arrays) {
  const cut = Date.now() / 1000 - WINDOW_S;
  let n = 0;
  while (n < t.length && t[n] < cut) n++;
  if (n) { t.splice(0, n); for (const a of arrays) a.splice(0, n); }
}

/** Replaces a chart with a line of text (no data yet, or none to show). */
function empty(el, plot, text) {
  plot?.destroy();
  el.replaceChildren(h('p', { class: 'empty' }, text));
  return null;
}

function drawCpu(note) {
  const el = $('c-cpu');
  const names = [...cpu.series.keys()].sort();
  if (!names.length) { cpuPlot = empty(el, cpuPlot, note || 'No running VMIs to measure yet'); return; }
  const data = [cpu.t, ...names.map((n) => cpu.series.get(n))];
  const key = names.join('|');
  if (!cpuPlot || cpuPlot.key !== key) {
    cpuPlot?.destroy();
    el.replaceChildren();
    cpuPlot = new uPlot({
      width: width(el), height: 220,
      scales: { y: { range: (u, min, max) => [0, Math.max(100, max * 1.1)] } },
      axes: [{}, { label: 'millicores', size: 60 }],
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false }))],
    }, data, el);
    cpuPlot.key = key;
  } else cpuPlot.setData(data);
}

function drawHpa() {
  const el = $('c-hpa');
  const data = [hpa.t, hpa.cur, hpa.target, hpa.replicas];
  if (!hpaPlot || hpaPlot.key !== hpa.name) {
    hpaPlot?.destroy();
    el.replaceChildren();
    hpaPlot = new uPlot({
      width: width(el), height: 220,
      scales: { pct: { range: (u, min, max) => [0, Math.max(100, max * 1.1)] }, n: { range: (u, min, max) => [0, Math.max(3, max + 1)] } },
      axes: [{}, { scale: 'pct', label: '% of request', size: 60 }, { scale: 'n', side: 1, label: 'replicas', grid: { show: false } }],
      series: [{},
        { label: `${hpa.name} current %`, scale: 'pct', stroke: '#dc2626', width: 2 },
        { label: 'target %', scale: 'pct', stroke: '#6b7280', dash: [6, 4], width: 1.5 },
        { label: 'replicas', scale: 'n', stroke: '#2563eb', width: 2, paths: uPlot.paths.stepped({ align: 1 }) }],
    }, data, el);
    hpaPlot.key = hpa.name;
  } else hpaPlot.setData(data);
}

async function sampleCpu(ns, signal) {
  let list;
  try {
    list = await call('GET', PATHS.podMetrics(ns));
  } catch (e) {
    if (!signal.aborted && !cpu.series.size) drawCpu(`No metrics: ${e.message}`);
    return;
  }
  if (signal.aborted) return; // the namespace changed meanwhile
  const now = Date.now() / 1000;
  cpu.t.push(now);
  const seen = new Set();
  for (const item of list?.items || []) {
    const name = item.metadata?.name;
    if (!name) continue;
    const m = (item.containers || []).reduce((s, c) => s + millicores(c.usage?.cpu), 0);
    if (!cpu.series.has(name)) cpu.series.set(name, new Array(cpu.t.length - 1).fill(null));
    cpu.series.get(name).push(Math.round(m));
    seen.add(name);
  }
  for (const [name, arr] of cpu.series) if (!seen.has(name)) arr.push(null);
  trim(cpu.t, [...cpu.series.values()]);
  for (const [name, arr] of cpu.series) if (arr.every((v) => v === null)) cpu.series.delete(name);
  drawCpu();
}

/** Records the HPA's state now (called on its watch events and every 5 s to draw steps). */
export function sampleHpa(state) {
  const a = [...state.hpa.values()].sort((x, y) => x.metadata.name.localeCompare(y.metadata.name))[0];
  if (!a) {
    if (hpa.name || !$('c-hpa').firstChild) {
      Object.assign(hpa, { t: [], cur: [], target: [], replicas: [], name: '' });
      hpaPlot = empty($('c-hpa'), hpaPlot, 'No autoscaler in this namespace');
    }
    return;
  }
  if (hpa.name !== a.metadata.name) Object.assign(hpa, { t: [], cur: [], target: [], replicas: [], name: a.metadata.name });
  hpa.t.push(Date.now() / 1000);
  hpa.cur.push(a.status?.currentCPUUtilizationPercentage ?? null);
  hpa.target.push(a.spec?.targetCPUUtilizationPercentage ?? 80);
  hpa.replicas.push(a.status?.currentReplicas ?? null);
  trim(hpa.t, [hpa.cur, hpa.target, hpa.replicas]);
  drawHpa();
}

/** Starts sampling for namespace `ns()` until `signal` aborts. */
export function startCharts(ns, state, signal) {
  cpu.t = []; cpu.series = new Map();
  const tick = () => {
    if (document.hidden) return;
    sampleCpu(ns(), signal);
    sampleHpa(state);
  };
  tick();
  const id = setInterval(tick, 5000);
  signal.addEventListener('abort', () => clearInterval(id), { once: true });
  if (!resizing) {
    resizing = true;
    window.addEventListener('resize', () => {
      cpuPlot?.setSize({ width: width($('c-cpu')), height: 220 });
      hpaPlot?.setSize({ width: width($('c-hpa')), height: 220 });
    });
  }
}

let resizing = false;
