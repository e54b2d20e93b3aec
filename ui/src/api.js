// The API client: fetch with the bearer token (when the listener needs one), list-then-watch
// loops over newline-delimited watch streams, and the console WebSocket's URL and subprotocols.

const TOKEN_KEY = 'corral.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const h = { Accept: 'application/json', ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/** A failed call: the server's Status (if any) and the HTTP code. */
export class ApiError extends Error {
  constructor(code, status) {
    super(status?.message || `HTTP ${code}`);
    this.code = code;
    this.status = status;
  }
}

/** One request; resolves to the parsed JSON body, throws ApiError on a non-2xx answer. */
export async function call(method, path, body, contentType) {
  const init = { method, headers: headers(contentType ? { 'Content-Type': contentType } : {}) };
  if (body !== undefined) init.body = body;
  const r = await fetch(path, init);
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!r.ok) throw new ApiError(r.status, json && json.kind === 'Status' ? json : { message: text || r.statusText });
  return json;
}

/** Whether the API answers without a token (`corral proxy`, the unix socket) or needs one. */
export async function needsToken() {
  const r = await fetch('/version', { headers: headers() });
  return r.status === 401;
}

function sleep(ms, signal) {
  return new Promise((res) => {
    const t = setTimeout(res, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); res(); }, { once: true });
  });
}

/** WebSocket subprotocols: `first`, plus the token (Kubernetes' convention) when there is one. */
function protocols(first) {
  const list = [first];
  const t = token();
  if (t) {
    const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(t)))
      .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    list.push(`base64url.bearer.authorization.k8s.io.${b64}`);
  }
  return list;
}

function wsURL(path) {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}${path}`;
}

/**
 * Keeps `onChange(map)` up to date with the objects of a collection: LIST, then WATCH from its
 * resourceVersion over a WebSocket (one message per event; browsers allow only six HTTP
 * connections per host, which long-lived watch responses would use up); on a 410, an error or
 * the stream's end, list again (backoff 1 s growing to 10 s while it keeps failing). `map` is
 * key -> object. Stop with `signal`.
 */
export async function listWatch(path, onChange, signal, keyOf = (o) => o.metadata.name) {
  let backoff = 1000;
  while (!signal.aborted) {
    try {
      const list = await call('GET', path);
      if (signal.aborted) return; // a list that answered after the namespace changed
      const map = new Map();
      for (const o of list.items || []) map.set(keyOf(o), o);
      onChange(map);
      const rv = list.metadata?.resourceVersion || '';
      const sep = path.includes('?') ? '&' : '?';
      const url = wsURL(`${path}${sep}watch=true&allowWatchBookmarks=true&resourceVersion=${encodeURIComponent(rv)}`);
      await new Promise((resolve, reject) => {
        const ws = new WebSocket(url, protocols('binary.k8s.io'));
        ws.binaryType = 'arraybuffer';
        const dec = new TextDecoder();
        const stop = () => ws.close();
        signal.addEventListener('abort', stop, { once: true });
        ws.onopen = () => { backoff = 1000; };
        ws.onmessage = (m) => {
          if (signal.aborted) return;
          try {
            const ev = JSON.parse(typeof m.data === 'string' ? m.data : dec.decode(m.data));
            if (ev.type === 'ERROR') { ws.close(); reject(new ApiError(ev.object?.code || 500, ev.object)); return; }
            if (ev.type === 'BOOKMARK') return;
            const k = keyOf(ev.object);
            if (ev.type === 'DELETED') map.delete(k); else map.set(k, ev.object);
            onChange(map);
          } catch (e) { ws.close(); reject(e); }
        };
        ws.onerror = () => reject(new Error('watch connection failed'));
        ws.onclose = () => { signal.removeEventListener('abort', stop); resolve(); };
      });
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.code === 401) { onChange(null, e); return; }
    }
    if (signal.aborted) return;
    await sleep(backoff, signal);
    backoff = Math.min(backoff * 2, 10000);
  }
}

/** The console WebSocket of a VMI, with the token as a subprotocol when there is one. */
export function consoleSocket(ns, name) {
  const ws = new WebSocket(wsURL(`/apis/subresources.kubevirt.io/v1/namespaces/${encodeURIComponent(ns)}/virtualmachineinstances/${encodeURIComponent(name)}/console`),
    protocols('plain.kubevirt.io'));
  ws.binaryType = 'arraybuffer';
  return ws;
}
