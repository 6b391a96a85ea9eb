// Draws a pipeline's graph as SVG: tasks in layers by their longest path from
// a root (over `after` and `map`), ordered in each layer by the mean position
// of their upstream tasks, edges as curves from left to right.
const NS = 'http://www.w3.org/2000/svg';
const W = 180, H = 46, GX = 60, GY = 22, PAD = 12;

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

export function layout(tasks) {
  const byName = new Map(tasks.map(t => [t.name, t]));
  const ups = t => [...new Set([...(t.after || []), ...(t.map ? [t.map] : [])])]
    .filter(n => byName.has(n));
  const layer = new Map();
  const depth = t => {
    if (layer.has(t.name)) return layer.get(t.name);
    layer.set(t.name, 0); // a guard: the scheduler refuses cycles anyway
    const d = Math.max(-1, ...ups(t).map(u => depth(byName.get(u)))) + 1;
    layer.set(t.name, d);
    return d;
  };
  tasks.forEach(depth);
  const layers = [];
  for (const t of tasks) (layers[layer.get(t.name)] ||= []).push(t);
  const pos = new Map();
  layers.forEach((col, i) => {
    if (i > 0) {
      const key = t => { const u = ups(t).map(n => pos.get(n).row); return u.length ?
        u.reduce((a, b) => a + b, 0) / u.length : 0; };
      col.sort((a, b) => key(a) - key(b));
    }
    col.forEach((t, row) => pos.set(t.name, { col: i, row }));
  });
  const rows = Math.max(1, ...layers.map(c => c.length));
  for (const [, p] of pos) {
    const n = layers[p.col].length;
    p.x = PAD + p.col * (W + GX);
    p.y = PAD + (p.row + (rows - n) / 2) * (H + GY);
  }
  return { pos, ups, width: PAD * 2 + 4 + layers.length * (W + GX) - GX,
           height: PAD * 2 + 4 + rows * (H + GY) - GY };
}

// states: name -> { state, label } (label: the text under the name).
export function drawDag(tasks, states, selected, onSelect) {
  const { pos, ups, width, height } = layout(tasks);
  const svg = el('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'group',
                          'aria-label': 'Task graph' });
  for (const t of tasks) {
    const p = pos.get(t.name);
    for (const u of ups(t)) {
      const q = pos.get(u);
      const x1 = q.x + W, y1 = q.y + H / 2, x2 = p.x, y2 = p.y + H / 2, mx = (x1 + x2) / 2;
      svg.append(el('path', { class: 'edge', d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`,
                              'stroke-dasharray': t.map === u ? '5 3' : '' }));
    }
  }
  for (const t of tasks) {
    const p = pos.get(t.name);
    const s = states.get(t.name) || { state: 'pending', label: 'pending' };
    const g = el('g', { class: `node n-${s.state}${selected === t.name ? ' sel' : ''}`,
                        transform: `translate(${p.x},${p.y})`, tabindex: '0', role: 'button',
                        'data-task': t.name, 'data-state': s.state,
                        'aria-label': `${t.name}: ${s.label}` });
    // A mapped task is one node drawn as a stack, its label the counts by state.
    if (t.map) g.append(el('rect', { x: 4, y: 4, width: W, height: H, rx: 6, class: 'stack' }));
    g.append(el('rect', { width: W, height: H, rx: 6 }));
    const name = t.name.length > 24 ? t.name.slice(0, 23) + '…' : t.name;
    g.append(el('text', { x: 10, y: 18 }, name));
    g.append(el('text', { x: 10, y: 36, class: 'sub' }, s.label));
    g.append(el('title', {}, `${t.name} (pool ${t.pool})${t.map ? ', mapped over ' + t.map : ''}`));
    g.addEventListener('click', () => onSelect(t.name));
    g.addEventListener('keydown', e => {
      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onSelect(t.name); }
    });
    svg.append(g);
  }
  return svg;
}
