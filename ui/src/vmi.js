// The VMI page: phase, IP, node, conditions, its events, and the serial console (xterm.js over
// KubeVirt's console WebSocket, bytes both ways).

import { Terminal } from '@xterm/xterm';
import { consoleSocket } from './api.js';
import { h, fillTable, $ } from './dom.js';
import { renderEvents, vmiIP, isReady } from './tables.js';

let term = null;
let ws = null;
let current = null; // {ns, name}

function setState(s) {
  $('console-state').textContent = s;
}

function connect() {
  if (ws) { ws.onclose = null; ws.close(); }
  if (!current) return;
  setState('connecting');
  const sock = consoleSocket(current.ns, current.name);
  ws = sock;
  sock.onopen = () => setState('connected');
  sock.onclose = () => { if (ws === sock) setState('disconnected'); };
  sock.onerror = () => setState('disconnected');
  sock.onmessage = (e) => {
    if (typeof e.data === 'string') term.write(e.data);
    else term.write(new Uint8Array(e.data));
  };
}

/** Opens the page of VMI `name` in `ns`. */
export function openVmi(ns, name) {
  current = { ns, name };
  $('overview').hidden = true;
  $('vmi-page').hidden = false;
  $('vmi-title').textContent = `VMI ${name}`;
  const box = $('console');
  box.setAttribute('aria-label', `Serial console of ${name}`);
  box.setAttribute('role', 'region');
  if (!term) {
    // screenReaderMode: xterm keeps an accessible copy of the rows and announces new output.
    term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 2000, rows: 24, screenReaderMode: true });
    // Tab belongs to the guest's shell; Shift+Tab leaves the terminal (no keyboard trap).
    term.attachCustomKeyEventHandler((e) => !(e.key === 'Tab' && e.shiftKey));
    term.open(box);
    const enc = new TextEncoder();
    term.onData((d) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d)); });
  }
  term.reset();
  connect();
  $('vmi-back').focus();
}

export function closeVmi() {
  current = null;
  if (ws) { ws.onclose = null; ws.close(); ws = null; }
  setState('disconnected');
  $('vmi-page').hidden = true;
  $('overview').hidden = false;
}

/** Re-renders the facts, conditions and events of the open VMI from the watched state. */
export function renderVmi(state) {
  if (!current) return;
  const v = state.vmi.get(current.name);
  const facts = v
    ? [['Phase', v.status?.phase || 'Pending'], ['IP', vmiIP(v) || '—'], ['Ready', isReady(v) ? 'True' : 'False'],
      ['Node', v.status?.nodeName || '—'], ['Namespace', current.ns]]
    : [['Phase', 'deleted']];
  $('vmi-facts').replaceChildren(...facts.flatMap(([k, val]) => [h('dt', {}, k), h('dd', {}, val)]));
  fillTable($('t-cond'), ['Type', 'Status', 'Reason', 'Message'],
    (v?.status?.conditions || []).map((c) => [c.type, c.status, c.reason || '', c.message || '']), 'No conditions');
  renderEvents($('t-vmievents'), state.events, 30, current.name);
}

export function setupVmi() {
  $('console-reconnect').addEventListener('click', connect);
  $('vmi-back').addEventListener('click', () => { location.hash = '#/'; });
}

export const currentVmi = () => current;
