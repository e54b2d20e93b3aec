// The create dialog: pasted or uploaded YAML/JSON (several documents with ---), parsed here for
// syntax errors and sent to the server document by document; the server's validation causes
// are shown at the line of the field they name.

import { parseAllDocuments, isMap, isSeq, isPair } from 'yaml';
import { call, ApiError } from './api.js';
import { collectionFor } from './kinds.js';
import { h, $ } from './dom.js';

/** 1-based line of character offset `off` in `text`. */
function lineOf(text, off) {
  let n = 1;
  for (let i = 0; i < off && i < text.length; i++) if (text.charCodeAt(i) === 10) n++;
  return n;
}

/** "spec.template.spec.domain.devices.disks[0].name" → ["spec", ..., "disks", 0, "name"]. */
export function splitPath(field) {
  const out = [];
  for (const part of field.split('.')) {
    const m = /^([^[\]]*)((?:\[\d+\])*)$/.exec(part);
    if (!m) { out.push(part); continue; }
    if (m[1]) out.push(m[1]);
    for (const i of m[2].matchAll(/\[(\d+)\]/g)) out.push(Number(i[1]));
  }
  return out;
}

/** Offset of the deepest node of `doc` along `path` (a key's own position for map entries). */
export function offsetOf(doc, path) {
  let node = doc.contents;
  let off = node?.range?.[0] ?? 0;
  for (const seg of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && String(p.key?.value ?? p.key) === String(seg));
      if (!pair) break;
      off = pair.key?.range?.[0] ?? off;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number' && node.items[seg]) {
      node = node.items[seg];
      off = node?.range?.[0] ?? off;
    } else break;
  }
  return off;
}

function showErrors(list) {
  const box = $('create-errors');
  box.replaceChildren(...list.map((e) => h('p', { class: 'error' }, e.line ? `line ${e.line}: ${e.message}` : e.message)));
  const lines = new Set(list.map((e) => e.line).filter(Boolean));
  const text = $('create-text').value;
  const n = text.split('\n').length;
  $('create-gutter').replaceChildren(...Array.from({ length: n }, (_, i) =>
    h('span', { class: lines.has(i + 1) ? 'bad' : '' }, String(i + 1))));
  if (lines.size) scrollToLine(Math.min(...lines));
}

/** Scrolls the text (and the gutter with it) so that `line` shows near the top. */
function scrollToLine(line) {
  const ta = $('create-text');
  const lh = parseFloat(getComputedStyle(ta).lineHeight) || 17;
  ta.scrollTop = Math.max(0, (line - 3) * lh);
  $('create-gutter').scrollTop = ta.scrollTop;
}

function gutter() {
  showErrors([]);
}

/** "Flow sequence ... at line 7, column 3:\n\n  ports: [1\n  ^" → "column 3: Flow sequence ...". */
function syntaxMessage(e) {
  const first = e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
  const col = e.linePos?.[0]?.col;
  return col ? `column ${col}: ${first}` : first;
}

/**
 * Creates every document, pushing a message per created one to `done`; throws after showing
 * errors. Nothing is sent unless every document parses and names a kind the console creates.
 */
async function createAll(text, ns, done) {
  const docs = parseAllDocuments(text);
  const syntax = [];
  for (const d of Array.isArray(docs) ? docs : [docs]) {
    for (const e of d.errors) syntax.push({ line: e.linePos?.[0]?.line, message: syntaxMessage(e) });
  }
  if (syntax.length) { showErrors(syntax); throw new Error('syntax'); }
  const plan = [];
  const bad = [];
  for (const doc of docs) {
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue;
    const docLine = lineOf(text, doc.contents?.range?.[0] ?? 0);
    if (typeof obj !== 'object' || Array.isArray(obj)) {
      bad.push({ line: docLine, message: 'a document must be an object with apiVersion and kind' });
      continue;
    }
    const path = collectionFor(obj.apiVersion, obj.kind, obj.metadata?.namespace || ns);
    if (path instanceof Error) bad.push({ line: lineOf(text, offsetOf(doc, ['kind'])), message: path.message });
    else plan.push({ doc, obj, path, docLine });
  }
  if (bad.length) { showErrors(bad); throw new Error('shape'); }
  for (const { doc, obj, path, docLine } of plan) {
    try {
      const created = await call('POST', `${path}?fieldValidation=Strict`, JSON.stringify(obj), 'application/json');
      done.push(`created ${obj.kind.toLowerCase()} ${created?.metadata?.name || obj.metadata?.name}`);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      const st = e.status || {};
      const causes = [...(st.details?.causes || [])];
      // Strict decoding names unknown fields only in its message, as Kubernetes does.
      if (!causes.length) {
        for (const m of (st.message || '').matchAll(/unknown field "([^"]+)"/g)) causes.push({ field: m[1], message: 'unknown field' });
      }
      const list = [{ line: null, message: `${obj.kind} ${obj.metadata?.name || ''}: ${st.message || e.message}` }];
      for (const c of causes) {
        const line = c.field ? lineOf(text, offsetOf(doc, splitPath(c.field))) : docLine;
        list.push({ line, message: `${c.field ? `${c.field}: ` : ''}${c.message || c.reason}` });
      }
      if (!causes.length) list[0].line = docLine;
      showErrors(list);
      throw e;
    }
  }
  return done;
}

/** Wires the dialog; `ns()` is the selected namespace, `say(msg)` the status line. */
export function setupCreate(ns, say) {
  const dlg = $('create');
  $('create-open').addEventListener('click', () => { gutter(); dlg.showModal(); $('create-text').focus(); });
  $('create-cancel').addEventListener('click', () => dlg.close());
  $('create-text').addEventListener('input', gutter);
  $('create-text').addEventListener('scroll', () => { $('create-gutter').scrollTop = $('create-text').scrollTop; });
  $('create-file').addEventListener('change', async (e) => {
    const f = e.target.files?.[0];
    if (f) { $('create-text').value = await f.text(); gutter(); }
  });
  $('create-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const btn = $('create-submit');
    btn.disabled = true;
    const done = [];
    try {
      await createAll($('create-text').value, ns(), done);
      dlg.close();
      say(done.join('; ') || 'nothing to create');
    } catch (err) {
      // Documents before the failing one were created: say so, they will not be rolled back.
      if (done.length) say(`${done.join('; ')}; then stopped at an error`);
      if (!(err instanceof ApiError) && !['syntax', 'shape'].includes(err.message) && !$('create-errors').children.length) {
        showErrors([{ line: null, message: err.message }]);
      }
    } finally {
      btn.disabled = false;
    }
  });
}
