// The overview's tables, one renderer per kind, from the watched objects.

import { h, fillTable, $ } from './dom.js';
import { age } from './quantity.js';

const byName = (m) => [...m.values()].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));

export function isReady(vmi) {
  return (vmi.status?.conditions || []).some((c) => c.type === 'Ready' && c.status === 'True');
}

export function vmiIP(vmi) {
  return vmi.status?.interfaces?.[0]?.ipAddress || '';
}

/** Replica sets, with a scale control and a delete button per row. */
export function renderVmirs(state, actions) {
  fillTable($('t-vmirs'), ['Name', 'Desired', 'Current', 'Ready', 'Age', 'Scale', ''],
    byName(state.vmirs).map((rs) => {
      const name = rs.metadata.name;
      const input = h('input', {
        id: `scale-${name}`, type: 'number', min: 0, max: 100, value: rs.spec?.replicas ?? 1,
        'aria-label': `Replicas for ${name}`, class: 'num',
      });
      const form = h('form', {
        class: 'inline',
        onsubmit: (e) => { e.preventDefault(); actions.scale(name, Number(input.value)); },
      }, input, h('button', { id: `scale-go-${name}`, type: 'submit', 'aria-label': `Scale ${name}` }, 'Scale'));
      return [name, rs.spec?.replicas ?? 1, rs.status?.replicas ?? 0, rs.status?.readyReplicas ?? 0,
        age(rs.metadata.creationTimestamp), form,
        h('button', { id: `del-vmirs-${name}`, type: 'button', 'aria-label': `Delete replica set ${name}`, onclick: () => actions.remove('vmirs', name) }, 'Delete')];
    }), 'No replica sets');
}

/** VMIs; the name opens the VMI's page. */
export function renderVmis(state, actions) {
  fillTable($('t-vmi'), ['Name', 'Phase', 'IP', 'Ready', 'Node', 'Age', ''],
    byName(state.vmi).map((v) => {
      const name = v.metadata.name;
      return [
        h('a', { id: `open-vmi-${name}`, href: `#/vmi/${encodeURIComponent(v.metadata.namespace)}/${encodeURIComponent(name)}` }, name),
        v.status?.phase || 'Pending', vmiIP(v), isReady(v) ? 'True' : 'False', v.status?.nodeName || '',
        age(v.metadata.creationTimestamp),
        h('button', { id: `del-vmi-${name}`, type: 'button', 'aria-label': `Delete VMI ${name}`, onclick: () => actions.remove('vmi', name) }, 'Delete'),
      ];
    }), 'No virtual machine instances');
}

export function hpaTargets(a) {
  const target = a.spec?.targetCPUUtilizationPercentage ?? 80;
  const cur = a.status?.currentCPUUtilizationPercentage;
  return `${cur === undefined || cur === null ? '<unknown>' : `${cur}%`}/${target}%`;
}

export function renderHpas(state, actions) {
  fillTable($('t-hpa'), ['Name', 'Reference', 'Targets', 'Min', 'Max', 'Replicas', 'Age', ''],
    byName(state.hpa).map((a) => {
      const ref = a.spec?.scaleTargetRef || {};
      return [a.metadata.name, `${ref.kind}/${ref.name}`, hpaTargets(a), a.spec?.minReplicas ?? 1,
        a.spec?.maxReplicas, a.status?.currentReplicas ?? 0, age(a.metadata.creationTimestamp),
        h('button', { id: `del-hpa-${a.metadata.name}`, type: 'button', 'aria-label': `Delete HPA ${a.metadata.name}`, onclick: () => actions.remove('hpa', a.metadata.name) }, 'Delete')];
    }), 'No autoscalers');
}

export function renderServices(state, actions) {
  fillTable($('t-svc'), ['Name', 'Type', 'Cluster IP', 'Ports', 'Selector', 'Age', ''],
    byName(state.svc).map((s) => {
      const ports = (s.spec?.ports || [])
        .map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol || 'TCP'}`).join(',');
      const sel = Object.entries(s.spec?.selector || {}).map(([k, v]) => `${k}=${v}`).join(',');
      return [s.metadata.name, s.spec?.type || 'ClusterIP', s.spec?.clusterIP || '', ports, sel,
        age(s.metadata.creationTimestamp),
        h('button', { id: `del-svc-${s.metadata.name}`, type: 'button', 'aria-label': `Delete service ${s.metadata.name}`, onclick: () => actions.remove('svc', s.metadata.name) }, 'Delete')];
    }), 'No services');
}

function eventTime(e) {
  return e.lastTimestamp || e.eventTime || e.firstTimestamp || e.metadata?.creationTimestamp || '';
}

/** The newest events first (at most `max`), optionally only those about one object. */
export function renderEvents(table, events, max = 50, object = null) {
  const list = [...events.values()]
    .filter((e) => !object || e.involvedObject?.name === object)
    .sort((a, b) => Date.parse(eventTime(b) || 0) - Date.parse(eventTime(a) || 0))
    .slice(0, max);
  fillTable(table, ['Last seen', 'Type', 'Reason', 'Object', 'Message'],
    list.map((e) => [age(eventTime(e)), e.type || '', e.reason || '',
      `${(e.involvedObject?.kind || '').toLowerCase()}/${e.involvedObject?.name || ''}`, e.message || '']),
    'No events');
}
