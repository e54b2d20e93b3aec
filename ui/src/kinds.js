// The kinds the page shows and creates: their collection paths.

export const KINDS = {
  VirtualMachineInstanceReplicaSet: { group: 'kubevirt.io', versions: ['v1'], plural: 'virtualmachineinstancereplicasets' },
  VirtualMachineInstance: { group: 'kubevirt.io', versions: ['v1'], plural: 'virtualmachineinstances' },
  HorizontalPodAutoscaler: { group: 'autoscaling', versions: ['v1', 'v2'], plural: 'horizontalpodautoscalers' },
  Service: { group: '', versions: ['v1'], plural: 'services' },
};

/** Collection path of `plural` in group/version and namespace `ns` (all namespaces if empty). */
export function collection(group, version, plural, ns) {
  const base = group ? `/apis/${group}/${version}` : `/api/${version}`;
  return ns ? `${base}/namespaces/${encodeURIComponent(ns)}/${plural}` : `${base}/${plural}`;
}

/** Collection path for a manifest's apiVersion and kind, or an Error naming what is unknown. */
export function collectionFor(apiVersion, kind, ns) {
  const k = KINDS[kind];
  if (!k) return new Error(`kind ${JSON.stringify(kind)} is not one the console creates (${Object.keys(KINDS).join(', ')})`);
  const [group, version] = apiVersion?.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  if (group !== k.group || !k.versions.includes(version)) {
    return new Error(`apiVersion ${JSON.stringify(apiVersion)} does not serve ${kind} (${k.versions.map((v) => (k.group ? `${k.group}/${v}` : v)).join(', ')})`);
  }
  return collection(group, version, k.plural, ns);
}

export const PATHS = {
  vmirs: (ns) => collection('kubevirt.io', 'v1', 'virtualmachineinstancereplicasets', ns),
  vmi: (ns) => collection('kubevirt.io', 'v1', 'virtualmachineinstances', ns),
  hpa: (ns) => collection('autoscaling', 'v1', 'horizontalpodautoscalers', ns),
  svc: (ns) => collection('', 'v1', 'services', ns),
  events: (ns) => collection('', 'v1', 'events', ns),
  podMetrics: (ns) => collection('metrics.k8s.io', 'v1beta1', 'pods', ns),
};
