// The Trellis web view: a router on the address (every view can be
// bookmarked) and one function per view. No framework: the DOM is built with
// h(), which sets text, never HTML, so nothing from the API is parsed as markup.
import { ApiError, get, getText, post, setToken, streamEvents, token } from '/ui/api.js';
import { drawDag } from '/ui/dag.js';

const FINAL = ['succeeded', 'failed', 'cancelled'];
const RUN_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const main = document.getElementById('main');
let view = null; // { timers: [], abort: AbortController } of the view on screen

export function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...nodes(kids));
  return e;
}

// Children as nodes: nested arrays flattened, null, undefined and false left
// out (views write `cond ? x : null`), anything else as text.
const nodes = kids => kids.flat(Infinity).filter(k => k !== null && k !== undefined && k !== false)
  .map(k => k instanceof Node ? k : String(k));
const put = (el, ...kids) => el.replaceChildren(...nodes(kids));

const stateTag = s => h('span', { class: `state st-${s}` }, s || '?');
const link = (href, text) => h('a', { href }, text);
const when = t => t ? new Date(t).toLocaleString() : '';
const json = v => typeof v === 'string' ? v : JSON.stringify(v, null, 2);
const num = (v, d = 0) => v === undefined || v === null ? '' : Number(v).toFixed(d);
function dur(a, b) {
  if (!a) return '';
  const s = ((b ? new Date(b) : new Date()) - new Date(a)) / 1000;
  return s < 60 ? s.toFixed(1) + ' s' : s < 3600 ? (s / 60).toFixed(1) + ' min' :
    (s / 3600).toFixed(1) + ' h';
}
function table(cols, rows, rowAttrs) {
  return h('table', {}, h('thead', {}, h('tr', {}, cols.map(c => h('th', {}, c)))),
    h('tbody', {}, rows.map((r, i) => h('tr', rowAttrs ? rowAttrs(i) : {},
      r.map(c => h('td', {}, c))))));
}
const enc = encodeURIComponent;

function every(ms, fn) { view.timers.push(setInterval(fn, ms)); }

function showError(e) {
  if (e instanceof ApiError && e.status === 401) return askToken();
  if (e && e.name === 'AbortError') return;
  console.error('trellis ui:', e); // for the browser test and the developer tools
  put(main, h('h1', {}, 'Something went wrong'),
    h('p', { class: 'banner', role: 'alert' }, e instanceof ApiError ?
      `${e.code}: ${e.message}` : String(e && e.message || e)));
}

function askToken() {
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', size: 40,
                             'aria-label': 'API token' });
  put(main, h('h1', {}, 'API token'),
    h('p', {}, 'This scheduler needs a token (the one `trellis` uses). It is kept in this ' +
      'tab only (sessionStorage) and sent as a bearer header.'),
    h('form', { class: 'inline', onsubmit: e => { e.preventDefault(); setToken(input.value.trim());
      route(); } }, input, h('button', { type: 'submit' }, 'Use token')));
  input.focus();
}

// ---------------------------------------------------------------- runs list
async function runsView(q) {
  const state = q.get('state') || '', pipeline = q.get('pipeline') || '';
  const auto = q.get('refresh') !== 'off';
  const pipes = await get('/v1/pipelines', view.abort.signal);
  const names = [...new Set(pipes.pipelines.map(p => p.name))].sort();
  const setQ = (k, v) => { if (v) q.set(k, v); else q.delete(k);
    history.replaceState(null, '', '/ui/runs' + (q.toString() ? '?' + q : '')); route(); };
  const body = h('div', { id: 'runs' });
  put(main, h('h1', {}, 'Runs'),
    h('div', { class: 'filters' },
      h('label', {}, 'State ', h('select', { id: 'f-state', onchange: e => setQ('state', e.target.value) },
        h('option', { value: '' }, 'any'),
        RUN_STATES.map(s => h('option', { value: s, selected: s === state }, s)))),
      h('label', {}, 'Pipeline ', h('select', { id: 'f-pipeline',
        onchange: e => setQ('pipeline', e.target.value) }, h('option', { value: '' }, 'any'),
        names.map(n => h('option', { value: n, selected: n === pipeline }, n)))),
      h('label', {}, h('input', { type: 'checkbox', checked: auto,
        onchange: e => setQ('refresh', e.target.checked ? '' : 'off') }), ' auto-refresh')),
    body);
  const load = async () => {
    const d = await get('/v1/runs?limit=200' + (state ? '&state=' + enc(state) : ''),
                        view.abort.signal);
    const runs = d.runs.filter(r => !pipeline || r.pipeline === pipeline);
    put(body, runs.length === 0 ? h('p', { class: 'muted' }, 'No runs.') :
      table(['Run', 'Pipeline', 'State', 'Tasks', 'Created', 'Duration', 'Tokens', 'Cost'],
        runs.map(r => {
          const t = r.tasks || {}, u = r.usage || {};
          return [link('/ui/runs/' + enc(r.run_id), r.run_id),
            `${r.pipeline}${r.version ? '@' + r.version : ''}`, stateTag(r.state),
            t.total !== undefined ? `${t.succeeded || 0}/${t.total}` : '',
            when(r.created_at), dur(r.started_at, r.finished_at),
            u.calls ? (u.prompt_tokens + u.completion_tokens) : '',
            u.cost ? u.cost.toFixed(6) : ''];
        })));
  };
  await load();
  if (auto) every(2000, () => load().catch(showError));
}

// ---------------------------------------------------------------- a run
function nodeStates(graph, tasks) {
  const by = new Map();
  for (const t of tasks) (by.get(t.name) || by.set(t.name, []).get(t.name)).push(t);
  const out = new Map();
  const order = ['failed', 'running', 'dispatched', 'retry_wait', 'ready', 'pending',
                 'cancelled', 'skipped', 'succeeded'];
  for (const g of graph.tasks) {
    const inst = by.get(g.name) || [];
    const counts = {};
    for (const i of inst) counts[i.state] = (counts[i.state] || 0) + 1;
    const state = order.find(s => counts[s]) || 'pending';
    let label = state;
    if (g.map && inst.length && !(inst.length === 1 && inst[0].index === 0))
      label = Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(', ');
    out.set(g.name, { state, label, counts });
  }
  return out;
}

async function runView(id, q) {
  const sig = view.abort.signal;
  const base = '/v1/runs/' + enc(id);
  const tasksOf = async () => (await get(base + '/tasks', sig)).tasks;
  let [run, graph, tasks] = await Promise.all([get(base, sig), get(base + '/graph', sig),
                                               tasksOf()]);
  let selected = q.get('task');
  let selIndex = q.get('index') !== null ? Number(q.get('index')) : null;
  const live = h('span', { class: 'live', id: 'live' }, '');
  const head = h('div', {});
  const dagBox = h('div', { class: 'dag', id: 'dag' });
  const taskBox = h('div', { id: 'tasks' });
  const detail = h('div', { class: 'panel', id: 'detail' },
    h('p', { class: 'muted' }, 'Select a task in the graph or the table.'));
  const streams = new Map(); // "task/index" -> text streamed by llm events
  const liveLogs = new Map(); // "task/index" -> lines received since the last fetch

  put(main, h('h1', {}, 'Run ', h('span', { class: 'mono' }, id), ' ', live), head,
    h('h2', {}, 'Graph'), dagBox, h('div', { class: 'cols' },
      h('div', {}, h('h2', {}, 'Tasks'), taskBox), h('div', {}, h('h2', {}, 'Task'), detail)));

  const select = (name, index) => {
    selected = name;
    selIndex = index === undefined ? null : index;
    const p = new URLSearchParams({ task: name });
    if (selIndex !== null) p.set('index', selIndex);
    history.replaceState(null, '', `/ui/runs/${enc(id)}?${p}`);
    drawAll();
    showDetail().catch(showError);
  };
  const drawHead = () => {
    const t = run.tasks || {}, u = run.usage || {};
    put(head, h('dl', { class: 'facts' },
      h('dt', {}, 'State'), h('dd', { id: 'run-state' }, stateTag(run.state)),
      h('dt', {}, 'Pipeline'), h('dd', {}, link('/ui/pipelines/' + enc(run.pipeline),
        run.pipeline), run.version ? '@' + run.version : ''),
      h('dt', {}, 'Created'), h('dd', {}, when(run.created_at)),
      h('dt', {}, 'Duration'), h('dd', {}, dur(run.started_at, run.finished_at)),
      h('dt', {}, 'Tasks'), h('dd', {}, Object.entries(t).filter(([k, v]) => k !== 'total' && v)
        .map(([k, v]) => `${v} ${k}`).join(', ') + ` (of ${t.total})`),
      h('dt', {}, 'LLM usage'), h('dd', {}, u.calls ? `${u.calls} calls, ${u.prompt_tokens} + ` +
        `${u.completion_tokens} tokens, cost ${num(u.cost, 6)}` : 'none'),
      run.error ? [h('dt', {}, 'Error'), h('dd', { class: 'error' }, run.error)] : null),
      run.output !== null && run.output !== undefined ?
        h('details', {}, h('summary', {}, 'Output'), h('pre', {}, json(run.output))) : null);
  };
  const drawAll = () => {
    put(dagBox, drawDag(graph.tasks, nodeStates(graph, tasks), selected,
                                   n => select(n)));
    put(taskBox, table(['Task', 'State', 'Attempts', 'Worker', 'Duration'],
      tasks.map(t => [t.name + (t.index ? ` [${t.index}]` : ''), stateTag(t.state),
        t.attempts, h('span', { class: 'mono' }, t.worker || ''),
        dur(t.started_at, t.finished_at)]),
      i => ({ class: 'click' + (tasks[i].name === selected &&
        (selIndex === null || selIndex === tasks[i].index) ? ' sel' : ''),
        'data-task': tasks[i].name, onclick: () => select(tasks[i].name, tasks[i].index) })));
  };
  const showDetail = async () => {
    if (!selected) return;
    const inst = tasks.filter(t => t.name === selected);
    const cur = inst.find(t => selIndex === null || t.index === selIndex) || inst[0];
    if (!cur) return;
    const logs = await get(`${base}/logs?task=${enc(selected)}`, sig);
    const key = `${cur.name}/${cur.index}`;
    const entry = (logs.logs || []).find(l => l.index === cur.index);
    liveLogs.delete(key);
    const lines = entry ? entry.lines : [];
    const usage = cur.usage || [];
    const tok = usage.reduce((a, c) => [a[0] + (c.prompt_tokens || 0),
      a[1] + (c.completion_tokens || 0), a[2] + (c.cost || 0)], [0, 0, 0]);
    put(detail,
      h('h3', {}, cur.name, cur.index ? ` [${cur.index}]` : '', ' ', stateTag(cur.state)),
      inst.length > 1 ? h('p', {}, 'Instances: ', inst.map(t => h('button', { class: 'link',
        onclick: () => select(t.name, t.index) }, `[${t.index}] `))) : null,
      h('dl', { class: 'facts' },
        h('dt', {}, 'Attempts'), h('dd', {}, String(cur.attempts)),
        h('dt', {}, 'Worker'), h('dd', { class: 'mono' }, cur.worker || ''),
        h('dt', {}, 'Started'), h('dd', {}, when(cur.started_at)),
        h('dt', {}, 'Finished'), h('dd', {}, when(cur.finished_at)),
        h('dt', {}, 'Cached'), h('dd', {}, cur.cached ? 'yes' : 'no'),
        cur.waiting ? [h('dt', {}, 'Waiting'), h('dd', {}, cur.waiting)] : null),
      cur.error ? [h('h4', {}, 'Error and traceback'),
        h('pre', { class: 'error', id: 'task-error' }, cur.error)] : null,
      cur.output !== null && cur.output !== undefined ?
        [h('h4', {}, 'Output'), h('pre', { id: 'task-output' }, json(cur.output))] : null,
      h('h4', {}, `Logs${entry && entry.dropped ? ` (${entry.dropped} older lines dropped)` : ''}`),
      h('pre', { id: 'logs' }, lines.join('\n')),
      h('h4', {}, 'LLM calls'),
      usage.length === 0 ? h('p', { class: 'muted' }, 'None.') :
        table(['Model', 'Prompt tok', 'Completion tok', 'Cost', 'Latency ms', 'Cached'],
          usage.map(c => [`${c.provider}/${c.model}`, c.prompt_tokens, c.completion_tokens,
            num(c.cost, 6), num(c.latency_ms, 1), c.cached ? 'yes' : 'no'])
            .concat([[h('b', {}, 'total'), tok[0], tok[1], num(tok[2], 6), '', '']])),
      streams.has(key) ? [h('h4', {}, 'Streaming'), h('pre', { id: 'stream' },
        streams.get(key))] : null);
  };
  const refresh = async () => {
    [run, tasks] = await Promise.all([get(base, sig), tasksOf()]);
    drawHead();
    drawAll();
    if (selected) await showDetail();
  };
  drawHead();
  drawAll();
  if (selected) await showDetail();
  if (FINAL.includes(run.state)) return;

  // Live: the run's events; a task event redraws its node at once and
  // refetches the details (outputs, usage) at most once a second.
  let pending = null;
  const soon = () => { pending ||= setTimeout(() => { pending = null;
    refresh().catch(showError); }, 1000); };
  view.timers.push({ clear: () => clearTimeout(pending) });
  const onEvent = (type, d) => {
    if (type === 'task' && d) {
      const t = tasks.find(x => x.name === d.name && x.index === d.index);
      if (t) { t.state = d.state; t.attempts = d.attempt ?? t.attempts;
               t.worker = d.worker ?? t.worker; }
      else tasks.push({ name: d.name, index: d.index, state: d.state, attempts: d.attempt,
                        worker: d.worker });
      drawAll();
      soon();
    } else if (type === 'log' && d) {
      const key = `${d.task}/${d.index}`;
      if (d.task === selected) {
        const pre = document.getElementById('logs');
        if (pre) pre.textContent += (pre.textContent ? '\n' : '') + d.line;
      }
      liveLogs.set(key, (liveLogs.get(key) || 0) + 1);
    } else if (type === 'llm' && d) {
      const key = `${d.task}/${d.index}`;
      streams.set(key, (streams.get(key) || '') + (d.delta || ''));
      const pre = document.getElementById('stream');
      if (pre && d.task === selected) pre.textContent = streams.get(key);
    } else if (type === 'run' && d) {
      run.state = d.state;
      drawHead();
      if (FINAL.includes(d.state)) soon();
    }
  };
  live.textContent = '● live';
  live.dataset.mode = 'events';
  const how = await streamEvents(base + '/events', onEvent, sig).catch(e => {
    if (e.name !== 'AbortError') throw e;
    return 'aborted';
  });
  if (how === 'aborted') return;
  if (how === 'end') {
    live.textContent = '';
    delete live.dataset.mode;
    await refresh();
    return;
  }
  // No events route (an older scheduler): poll the tasks every second.
  live.textContent = '● polling';
  live.dataset.mode = 'polling';
  every(1000, () => {
    if (FINAL.includes(run.state)) { live.textContent = ''; return; }
    refresh().catch(showError);
  });
}

// ---------------------------------------------------------------- workers
async function workersView() {
  const load = async () => {
    const d = await get('/v1/workers', view.abort.signal);
    const pools = new Map();
    for (const w of d.workers) {
      const p = pools.get(w.pool) || { workers: 0, slots: 0, busy: 0, gpus: 0, gbusy: 0 };
      p.workers++; p.slots += w.slots; p.busy += w.busy;
      p.gpus += (w.gpus || []).length; p.gbusy += (w.gpus || []).filter(g => g.busy).length;
      pools.set(w.pool, p);
    }
    put(main, h('h1', {}, 'Workers'), h('h2', {}, 'Pools'),
      pools.size === 0 ? h('p', { class: 'muted' }, 'No worker is connected.') :
      table(['Pool', 'Workers', 'Slots busy', 'GPUs busy'], [...pools].map(([n, p]) =>
        [n, p.workers, `${p.busy} / ${p.slots}`, p.gpus ? `${p.gbusy} / ${p.gpus}` : '—'])),
      h('h2', {}, 'Workers'),
      table(['Worker', 'Pool', 'Slots busy', 'CPUs', 'Memory', 'GPUs', 'Labels', 'Last seen'],
        d.workers.map(w => [h('span', { class: 'mono' }, w.id), w.pool, `${w.busy} / ${w.slots}`,
          w.resources ? w.resources.cpus : '', w.resources ? `${w.resources.mem_mb} MB` : '',
          h('div', { class: 'gpus' }, (w.gpus || []).map(g => h('div', {},
            `#${g.index} ${g.name} ${g.mem_used_mb}/${g.mem_total_mb} MB` +
            `${g.util !== null && g.util !== undefined ? ` ${g.util}%` : ''}${g.busy ? ' busy' : ''}`))),
          Object.entries(w.labels || {}).map(([k, v]) => `${k}=${v}`).join(' '),
          when(w.last_seen)])));
  };
  await load();
  every(3000, () => load().catch(showError));
}

// ---------------------------------------------------------------- pipelines
async function pipelinesView(name, version) {
  const sig = view.abort.signal;
  if (name && version) {
    const [list, source] = await Promise.all([get('/v1/pipelines', sig),
      getText(`/v1/pipelines/${enc(name)}/versions/${enc(version)}/source`, sig)]);
    const p = list.pipelines.find(x => x.name === name && x.version === version);
    if (!p) throw new ApiError(404, 'not_found', `no pipeline ${name}@${version}`);
    put(main, h('h1', {}, `${p.name}@${p.version}`),
      h('p', {}, link('/ui/pipelines/' + enc(name), '← all versions')),
      h('dl', { class: 'facts' }, h('dt', {}, 'Digest'), h('dd', { class: 'mono' }, p.digest),
        h('dt', {}, 'Tasks'), h('dd', {}, String(p.tasks)),
        h('dt', {}, 'Registered'), h('dd', {}, when(p.registered_at))),
      h('h2', {}, 'Source'), h('pre', { id: 'source' }, source));
    return;
  }
  const d = await get('/v1/pipelines', sig);
  if (name) {
    const vs = d.pipelines.filter(p => p.name === name).reverse();
    let stats = null;
    try { stats = await get(`/v1/pipelines/${enc(name)}/stats`, sig); } catch { stats = null; }
    const runs = await get('/v1/runs?limit=200', sig);
    put(main, h('h1', {}, name),
      table(['Version', 'Digest', 'Tasks', 'Registered'], vs.map(p => [
        link(`/ui/pipelines/${enc(name)}/${enc(p.version)}`, p.version || '(none)'),
        h('span', { class: 'mono' }, p.digest.slice(0, 12)), p.tasks, when(p.registered_at)])),
      stats ? [h('h2', {}, 'Feedback'), h('dl', { class: 'facts' },
        h('dt', {}, 'Ratings'), h('dd', {}, String(stats.feedback.count)),
        h('dt', {}, 'Mean score'), h('dd', {}, num(stats.feedback.mean_score, 3)),
        h('dt', {}, 'Negative rate'), h('dd', {}, num(stats.feedback.negative_rate, 3)),
        h('dt', {}, 'Labels'), h('dd', {}, `${stats.labels.queued} queued, ` +
          `${stats.labels.labelled} labelled`))] : null,
      h('h2', {}, 'Recent runs'),
      table(['Run', 'Version', 'State', 'Created'], runs.runs.filter(r => r.pipeline === name)
        .slice(0, 20).map(r => [link('/ui/runs/' + enc(r.run_id), r.run_id), r.version,
          stateTag(r.state), when(r.created_at)])));
    return;
  }
  const by = new Map();
  for (const p of d.pipelines) (by.get(p.name) || by.set(p.name, []).get(p.name)).push(p);
  put(main, h('h1', {}, 'Pipelines'), by.size === 0 ?
    h('p', { class: 'muted' }, 'No pipeline is registered (`trellis register FILE`).') :
    table(['Pipeline', 'Versions', 'Latest', 'Tasks', 'Registered'], [...by].map(([n, vs]) => {
      const last = vs[vs.length - 1];
      return [link('/ui/pipelines/' + enc(n), n), vs.length,
        link(`/ui/pipelines/${enc(n)}/${enc(last.version)}`, last.version || '(none)'),
        last.tasks, when(last.registered_at)];
    })));
}

// ---------------------------------------------------------------- feedback loop
async function feedbackView() {
  const d = await get('/v1/feedback?limit=200', view.abort.signal);
  put(main, h('h1', {}, 'Feedback'), d.feedback.length === 0 ?
    h('p', { class: 'muted' }, 'No feedback yet (`trellis feedback RUN SCORE`).') :
    table(['When', 'Pipeline', 'Run', 'Task', 'Score', 'Label', 'Comment', 'User'],
      d.feedback.map(f => [when(f.created_at), f.pipeline,
        link('/ui/runs/' + enc(f.run_id), f.run_id),
        f.task ? f.task + (f.index ? ` [${f.index}]` : '') : '', String(f.score), f.label || '',
        f.comment || (f.correction ? 'correction: ' + json(f.correction) : ''), f.user || ''])));
}

async function labelsView(q) {
  const state = q.get('state') || 'queued';
  const d = await get('/v1/labels?limit=200&state=' + enc(state), view.abort.signal);
  const labelForm = item => {
    if (item.state !== 'queued') return h('span', {}, json(item.label), ' ',
      h('span', { class: 'muted' }, item.user || ''));
    const input = h('input', { type: 'text', size: 16, 'aria-label': 'label for ' + item.item_id,
                               name: 'label' });
    const msg = h('span', { class: 'error', role: 'status' });
    return h('form', { class: 'inline', 'data-item': item.item_id, onsubmit: async e => {
      e.preventDefault();
      let v = input.value.trim();
      try { v = JSON.parse(v); } catch { /* a plain word is a string label */ }
      try {
        await post(`/v1/labels/${enc(item.item_id)}`, { label: v, user: 'web' });
        route();
      } catch (err) { msg.textContent = err.message; }
    } }, input, h('button', { type: 'submit' }, 'Label'), msg);
  };
  put(main, h('h1', {}, 'Labelling queue'),
    h('div', { class: 'filters' }, h('label', {}, 'Show ', h('select', { id: 'f-lstate',
      onchange: e => { history.replaceState(null, '', '/ui/labels?state=' + e.target.value);
        route(); } }, ['queued', 'labelled', 'all'].map(s =>
        h('option', { value: s, selected: s === state }, s))))),
    d.items.length === 0 ? h('p', { class: 'muted' }, 'Nothing to show.') :
    table(['Item', 'Uncertainty', 'Pipeline', 'Run', 'Label'], d.items.map(i => [
      h('pre', {}, json(i.item)), num(i.uncertainty, 3), i.pipeline || '',
      i.run_id ? link('/ui/runs/' + enc(i.run_id), i.run_id) : '', labelForm(i)])));
}

async function modelsView(name) {
  const sig = view.abort.signal;
  if (name) {
    const [m, hist] = await Promise.all([get('/v1/models/' + enc(name), sig),
                                         get(`/v1/models/${enc(name)}/history`, sig)]);
    put(main, h('h1', {}, 'Model ', name),
      h('p', {}, link('/ui/models', '← all models')),
      h('h2', {}, 'Aliases'), h('pre', {}, json(m.aliases || {})),
      h('h2', {}, 'Versions'),
      table(['Version', 'Artifact', 'Metrics', 'Lineage', 'Tags', 'User', 'Created'],
        (m.versions || []).map(v => [String(v.version),
          h('span', { class: 'mono' }, v.artifact === undefined ? '' : json(v.artifact).slice(0, 80)),
          h('pre', {}, json(v.metrics || {})),
          v.lineage && v.lineage.run_id ? link('/ui/runs/' + enc(v.lineage.run_id),
            v.lineage.pipeline || v.lineage.run_id) : json(v.lineage || ''),
          json(v.tags || ''), v.user || '', when(v.created_at)])),
      h('h2', {}, 'Alias history'),
      table(['When', 'Alias', 'From', 'To', 'User', 'Reason'], (hist.history || []).map(x =>
        [when(x.at), x.alias, String(x.from ?? ''), String(x.to ?? ''), x.user || '',
         x.reason || ''])));
    return;
  }
  const d = await get('/v1/models', sig);
  put(main, h('h1', {}, 'Model registry'), d.models.length === 0 ?
    h('p', { class: 'muted' }, 'No model is registered.') :
    table(['Model', 'Latest version', 'Aliases', 'Updated'], d.models.map(m => [
      link('/ui/models/' + enc(m.name), m.name), String(m.latest_version),
      Object.entries(m.aliases || {}).map(([a, v]) => `${a}→${v}`).join(' '),
      when(m.updated_at)])));
}

// ---------------------------------------------------------------- router
const routes = [
  [/^\/ui\/?$/, (m, q) => runsView(q), 'runs'],
  [/^\/ui\/runs\/?$/, (m, q) => runsView(q), 'runs'],
  [/^\/ui\/runs\/([^/]+)\/?$/, (m, q) => runView(decodeURIComponent(m[1]), q), 'runs'],
  [/^\/ui\/workers\/?$/, () => workersView(), 'workers'],
  [/^\/ui\/pipelines\/?$/, () => pipelinesView(), 'pipelines'],
  [/^\/ui\/pipelines\/([^/]+)\/?$/, m => pipelinesView(decodeURIComponent(m[1])), 'pipelines'],
  [/^\/ui\/pipelines\/([^/]+)\/([^/]+)\/?$/, m => pipelinesView(decodeURIComponent(m[1]),
    decodeURIComponent(m[2])), 'pipelines'],
  [/^\/ui\/feedback\/?$/, () => feedbackView(), 'feedback'],
  [/^\/ui\/labels\/?$/, (m, q) => labelsView(q), 'labels'],
  [/^\/ui\/models\/?$/, () => modelsView(), 'models'],
  [/^\/ui\/models\/([^/]+)\/?$/, m => modelsView(decodeURIComponent(m[1])), 'models'],
];

function route() {
  if (view) {
    view.abort.abort();
    for (const t of view.timers) t.clear ? t.clear() : clearInterval(t);
  }
  view = { timers: [], abort: new AbortController() };
  document.getElementById('logout').hidden = !token();
  const path = location.pathname, q = new URLSearchParams(location.search);
  for (const [re, fn, nav] of routes) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll('nav a'))
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    document.title = 'Trellis · ' + (nav === 'runs' && m[1] ? decodeURIComponent(m[1]) : nav);
    const mine = view;
    fn(m, q).catch(e => { if (view === mine) showError(e); });
    return;
  }
  put(main, h('h1', {}, 'Not found'), h('p', {}, 'No view at this address. ',
    link('/ui/runs', 'Runs')));
}

document.addEventListener('click', e => {
  const a = e.target.closest && e.target.closest('a[href^="/ui"]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  if (a.getAttribute('href') !== location.pathname + location.search)
    history.pushState(null, '', a.getAttribute('href'));
  route();
  main.focus();
});
window.addEventListener('popstate', route);
document.getElementById('logout').addEventListener('click', () => { setToken(''); route(); });
route();
