// Diagnostic: what a V8 .heapsnapshot (daemon-heap.ts writes them) holds. Prints the reachable
// total; self and retained size by constructor (retained: dominator tree, counted once per
// constructor along a dominator path); the largest retainers with their dominator path; object
// shapes (constructor and property names) by self size; and the self size of strings, arrays
// and other non-objects by the property that first holds them. Plain JavaScript, no dependencies.
//
//   node --max-old-space-size=8000 test/bench/heap-summary.mjs FILE.heapsnapshot [rows=30]

import { readFileSync } from 'node:fs';

const file = process.argv[2];
const rows = Number(process.argv[3] ?? 30);
const snap = JSON.parse(readFileSync(file, 'utf8'));
const meta = snap.snapshot.meta;
const NODE_FIELDS = meta.node_fields.length;
const EDGE_FIELDS = meta.edge_fields.length;
const nodeTypes = meta.node_types[0];
const edgeTypes = meta.edge_types[0];
const N_TYPE = meta.node_fields.indexOf('type');
const N_NAME = meta.node_fields.indexOf('name');
const N_SIZE = meta.node_fields.indexOf('self_size');
const N_EDGES = meta.node_fields.indexOf('edge_count');
const E_TYPE = meta.edge_fields.indexOf('type');
const E_NAME = meta.edge_fields.indexOf('name_or_index');
const E_TO = meta.edge_fields.indexOf('to_node');
const { nodes, edges, strings } = snap;
const count = nodes.length / NODE_FIELDS;
const WEAK = edgeTypes.indexOf('weak');
const SHORTCUT = edgeTypes.indexOf('shortcut');
const MB = (bytes) => (bytes / 2 ** 20).toFixed(1);

const firstEdge = new Uint32Array(count + 1);
for (let i = 0, e = 0; i < count; i++) {
  firstEdge[i] = e;
  e += nodes[i * NODE_FIELDS + N_EDGES] * EDGE_FIELDS;
  firstEdge[i + 1] = e;
}
const typeOf = (v) => nodeTypes[nodes[v * NODE_FIELDS + N_TYPE]];
const nameOf = (v) => strings[nodes[v * NODE_FIELDS + N_NAME]];
const sizeOf = (v) => nodes[v * NODE_FIELDS + N_SIZE];
const strong = (e) => edges[e + E_TYPE] !== WEAK && edges[e + E_TYPE] !== SHORTCUT;
const target = (e) => edges[e + E_TO] / NODE_FIELDS;

function classOf(v) {
  const t = typeOf(v);
  if (t === 'object' || t === 'native') return nameOf(v);
  if (t.endsWith('string')) return `(${t})`;
  if (t === 'hidden' || t === 'code' || t === 'array') return `(${t}) ${nameOf(v).slice(0, 40)}`;
  return `(${t})`;
}

// Depth-first postorder from the root (node 0), strong edges only.
const post = new Int32Array(count).fill(-1);
const order = new Int32Array(count);
let reached = 0;
{
  const cursor = new Uint32Array(count);
  const seen = new Uint8Array(count);
  const stack = [0];
  seen[0] = 1;
  cursor[0] = firstEdge[0];
  while (stack.length > 0) {
    const v = stack[stack.length - 1];
    if (cursor[v] < firstEdge[v + 1]) {
      const e = cursor[v];
      cursor[v] += EDGE_FIELDS;
      if (!strong(e)) continue;
      const w = target(e);
      if (!seen[w]) {
        seen[w] = 1;
        cursor[w] = firstEdge[w];
        stack.push(w);
      }
    } else {
      stack.pop();
      post[v] = reached;
      order[reached++] = v;
    }
  }
}

// Predecessors (CSR), then dominators by Cooper, Harvey and Kennedy's iteration over postorder numbers.
const predStart = new Uint32Array(count + 1);
for (let v = 0; v < count; v++)
  if (post[v] >= 0)
    for (let e = firstEdge[v]; e < firstEdge[v + 1]; e += EDGE_FIELDS)
      if (strong(e)) predStart[target(e) + 1]++;
for (let i = 0; i < count; i++) predStart[i + 1] += predStart[i];
const preds = new Uint32Array(predStart[count]);
{
  const fill = predStart.slice();
  for (let v = 0; v < count; v++)
    if (post[v] >= 0)
      for (let e = firstEdge[v]; e < firstEdge[v + 1]; e += EDGE_FIELDS)
        if (strong(e)) preds[fill[target(e)]++] = v;
}
const root = post[0];
const idom = new Int32Array(reached).fill(-1);
idom[root] = root;
for (let changed = true; changed; ) {
  changed = false;
  for (let k = reached - 2; k >= 0; k--) {
    const v = order[k];
    let dom = -1;
    for (let p = predStart[v]; p < predStart[v + 1]; p++) {
      let a = post[preds[p]];
      if (a < 0 || idom[a] < 0) continue;
      if (dom < 0) {
        dom = a;
        continue;
      }
      let b = dom;
      while (a !== b) {
        while (a < b) a = idom[a];
        while (b < a) b = idom[b];
      }
      dom = a;
    }
    if (dom >= 0 && idom[k] !== dom) {
      idom[k] = dom;
      changed = true;
    }
  }
}
const retained = new Float64Array(reached);
let total = 0;
for (let k = 0; k < reached; k++) {
  retained[k] = sizeOf(order[k]);
  total += retained[k];
}
for (let k = 0; k < reached - 1; k++) retained[idom[k]] += retained[k];
console.log(`${count} nodes, ${reached} reachable, ${MB(total)} MB`);

const byClass = new Map();
for (let k = 0; k < reached; k++) {
  const v = order[k];
  const c = classOf(v);
  const row = byClass.get(c) ?? { n: 0, self: 0, retained: 0 };
  row.n++;
  row.self += sizeOf(v);
  let a = idom[k];
  let nested = false;
  for (let hops = 0; a !== root && hops < 30; hops++, a = idom[a]) {
    if (classOf(order[a]) === c) {
      nested = true;
      break;
    }
  }
  if (!nested) row.retained += retained[k];
  byClass.set(c, row);
}
console.log('\n== by constructor: self MB, retained MB, count ==');
for (const [c, r] of [...byClass].sort((a, b) => b[1].self - a[1].self).slice(0, rows))
  console.log(`${MB(r.self).padStart(7)} ${MB(r.retained).padStart(7)} ${String(r.n).padStart(9)}  ${c}`);

function edgeName(from, to) {
  for (let e = firstEdge[from]; e < firstEdge[from + 1]; e += EDGE_FIELDS) {
    if (target(e) !== to) continue;
    const t = edgeTypes[edges[e + E_TYPE]];
    const name = edges[e + E_NAME];
    return t === 'element' || t === 'hidden' ? `[${name}]` : String(strings[name]);
  }
  return '?';
}
function dominatorPath(k) {
  const parts = [];
  for (let x = k, hops = 0; x !== root && hops < 8; hops++, x = idom[x])
    parts.unshift(`${classOf(order[x]).slice(0, 30)} (.${edgeName(order[idom[x]], order[x])})`);
  return parts.join(' / ');
}
console.log('\n== largest retainers (>= 2 MB): retained MB, dominator path ==');
const large = [];
for (let k = 0; k < reached; k++) if (k !== root && retained[k] >= 2 * 2 ** 20) large.push(k);
for (const k of large.sort((a, b) => retained[b] - retained[a]).slice(0, rows))
  console.log(`${MB(retained[k]).padStart(7)}  ${dominatorPath(k)}`);

const shapes = new Map();
function shapeOf(v) {
  let s = shapes.get(v);
  if (s !== undefined) return s;
  if (typeOf(v) !== 'object') s = classOf(v);
  else {
    const names = [];
    for (let e = firstEdge[v]; e < firstEdge[v + 1]; e += EDGE_FIELDS)
      if (edgeTypes[edges[e + E_TYPE]] === 'property') names.push(strings[edges[e + E_NAME]]);
    s = `${nameOf(v)}{${names.slice(0, 8).join(',')}}`; // Smi-valued fields have no edge
  }
  shapes.set(v, s);
  return s;
}
const byShape = new Map();
const byHolder = new Map();
const add = (map, key, v) => {
  const row = map.get(key) ?? { n: 0, self: 0 };
  row.n++;
  row.self += sizeOf(v);
  map.set(key, row);
};
for (let k = 0; k < reached; k++) {
  const v = order[k];
  const t = typeOf(v);
  if (t === 'object') add(byShape, shapeOf(v), v);
  else if (t !== 'code' && t !== 'closure' && predStart[v] < predStart[v + 1]) {
    const holder = preds[predStart[v]];
    add(byHolder, `${t} <- ${shapeOf(holder).slice(0, 70)} .${edgeName(holder, v)}`, v);
  }
}
const table = (title, map) => {
  console.log(`\n== ${title}: self MB, count, bytes each ==`);
  for (const [c, r] of [...map].sort((a, b) => b[1].self - a[1].self).slice(0, rows))
    console.log(
      `${MB(r.self).padStart(7)} ${String(r.n).padStart(9)} ${String(Math.round(r.self / r.n)).padStart(6)}  ${c.slice(0, 150)}`,
    );
};
table('objects by shape', byShape);
table('non-objects by their first holder', byHolder);
