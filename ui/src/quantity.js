// Kubernetes CPU quantities ("250m", "1", "123456n", "1500u") in millicores.

export function millicores(q) {
  if (q === undefined || q === null) return 0;
  const s = String(q).trim();
  const m = /^([0-9.]+)([numk]?)$/.exec(s);
  if (!m) return 0;
  const v = parseFloat(m[1]);
  switch (m[2]) {
    case 'n': return v / 1e6;
    case 'u': return v / 1e3;
    case 'm': return v;
    case 'k': return v * 1e6;
    default: return v * 1000;
  }
}

/** "45s", "3m", "2h5m", "3d": the age of an RFC 3339 timestamp, as kubectl prints it. */
export function age(ts) {
  if (!ts) return '';
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${m % 60}m`;
  return `${Math.floor(h / 24)}d`;
}
