// Building DOM nodes from data without innerHTML: every server-provided string is text.

/** `h('td', {class: 'x', onclick: f}, 'text', child)`: an element with attributes and children. */
export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Replaces a table's content with a header row and `rows` (arrays of cells: text or nodes). */
export function fillTable(table, columns, rows, empty = 'None') {
  // A watch event re-renders the table: keep what the user is typing and where focus is.
  const active = document.activeElement;
  // Every control in a row has an id made from the row's object (see tables.js).
  const keep = active && table.contains(active) && active.id ? { id: active.id, value: active.value } : null;
  const body = rows.length
    ? rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c))))
    : [h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, empty))];
  table.replaceChildren(
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, body),
  );
  if (keep) {
    const e = document.getElementById(keep.id);
    if (e) {
      if (keep.value !== undefined && 'value' in e) e.value = keep.value;
      e.focus();
    }
  }
}

export const $ = (id) => document.getElementById(id);
