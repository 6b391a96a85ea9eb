// Drives the web view in headless chromium (tests/e2e/test_ui.sh):
//   node ui_check.cjs API TOKEN CHROMIUM SHOTS_DIR LABEL_ITEM EVENTS_STATUS
// Fails (exit 1) on a failed check, a console error, an uncaught exception or
// a failed request. EVENTS_STATUS is what GET /v1/runs/{id}/events answered:
// 404 while the scheduler has no events route, when the page's one 404 on it
// (it then polls) is expected.
'use strict';
const { chromium } = require('playwright-core');
const path = require('path');

const [API, TOKEN, CHROMIUM, SHOTS, ITEM, EVENTS] = process.argv.slice(2);
const T = 60000; // generous: the machine may be busy
const problems = [];
let page = null;
let watching = false;
const isEvents = u => /\/v1\/runs\/[^/]+\/events/.test(u);

const t0 = Date.now();
function step(what) { console.log(`ok - ${what} (${((Date.now() - t0) / 1000).toFixed(1)} s)`); }

(async () => {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 },
                                             colorScheme: 'light' });
  page = await context.newPage();
  page.setDefaultTimeout(T);
  page.on('console', m => {
    if (!watching || m.type() !== 'error') return;
    const url = (m.location() || {}).url || '';
    if (EVENTS === '404' && isEvents(url)) return;
    problems.push(`console error: ${m.text()} (${url})`);
  });
  page.on('pageerror', e => problems.push('uncaught: ' + e.message));
  page.on('requestfailed', r => {
    // Leaving a run page aborts its event stream on purpose.
    if (isEvents(r.url()) && /ERR_ABORTED/.test(r.failure().errorText)) return;
    if (watching) problems.push(`request failed: ${r.url()} ${r.failure().errorText}`);
  });
  page.on('response', r => {
    if (!watching || r.status() < 400) return;
    if (EVENTS === '404' && r.status() === 404 && isEvents(r.url())) return;
    problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  const shot = name => page.screenshot({ path: path.join(SHOTS, name + '.png') });

  // 1. The token prompt, then the runs list.
  await page.goto(API + '/ui/runs');
  await page.fill('#token', TOKEN);
  await page.click('button[type=submit]');
  await page.waitForSelector('#f-state');
  step('the page asks for the token and then lists runs');
  watching = true;

  // 2. A run started now, watched live on its page.
  const startRun = async () => {
    const started = await page.evaluate(async tok => {
      const r = await fetch('/v1/runs', { method: 'POST', headers: {
        Authorization: 'Bearer ' + tok, 'Content-Type': 'application/json' },
        body: JSON.stringify({ pipeline: 'e2e-ui', params: { slow: 6 } }) });
      return r.json();
    }, TOKEN);
    if (!started.run_id) throw new Error('cannot start a run: ' + JSON.stringify(started));
    return started.run_id;
  };
  const id = await startRun();
  await page.goto(`${API}/ui/runs/${id}`);
  const slow = '#dag .node[data-task="slow"]';
  await page.waitForSelector(`${slow}[data-state="running"]`);
  step('the slow task is drawn running');
  // Live by the run's events when the scheduler has them, else by polling.
  const mode = await page.waitForSelector('#live[data-mode]')
    .then(e => e.getAttribute('data-mode'));
  if (mode !== (EVENTS === '404' ? 'polling' : 'events'))
    throw new Error(`live updates by ${mode} while the events route answered ${EVENTS}`);
  step('live updates by ' + mode);
  await page.waitForSelector(`${slow}[data-state="succeeded"]`, { timeout: 90000 });
  step('the slow task is then drawn succeeded, without a reload');
  const mapLabel = await page.textContent('#dag .node[data-task="work"] text.sub');
  if (!/3 succeeded/.test(mapLabel)) throw new Error('map node label: ' + mapLabel);
  step('the mapped task is one node with its counts: ' + mapLabel);
  await page.click(slow);
  await page.waitForFunction(() => (document.querySelector('#logs') || {}).textContent
    ?.includes('slow task reached the end'));
  step('clicking the node shows its logs');
  await page.waitForSelector('#run-state .st-succeeded');
  await page.click('#dag .node[data-task="answer"]');
  await page.waitForFunction(() => document.querySelector('#detail').textContent
    .includes('fake/ok-a'));
  await page.waitForFunction(() => (document.querySelector('#logs') || {}).textContent
    ?.includes('asked the model'));
  step('a task shows its LLM calls with tokens and cost');
  if (!new URL(page.url()).search.includes('task=answer'))
    throw new Error('the selected task is not in the address: ' + page.url());
  await shot('run');

  // 3. The other views, each from its own address.
  await page.goto(`${API}/ui/runs?pipeline=e2e-ui`);
  await page.waitForSelector(`#runs a[href="/ui/runs/${id}"]`);
  step('the runs list, filtered by pipeline, links the run');
  await shot('runs');
  await page.selectOption('#f-state', 'failed');
  await page.waitForSelector('#runs >> text=No runs.');
  step('the state filter');

  await page.goto(`${API}/ui/workers`);
  await page.waitForSelector('main >> text=w-ui');
  step('workers and pools');
  await shot('workers');

  await page.goto(`${API}/ui/pipelines`);
  await page.click('main a[href="/ui/pipelines/e2e-ui"]');
  await page.click('main a[href="/ui/pipelines/e2e-ui/1"]');
  await page.waitForFunction(() => (document.querySelector('#source') || {}).textContent
    ?.includes('trellis.pipeline'));
  step('pipelines, their versions and source');
  await shot('pipeline');

  await page.goto(`${API}/ui/feedback`);
  await page.waitForSelector('main >> text=clear and right');
  step('feedback');
  await shot('feedback');

  await page.goto(`${API}/ui/labels`);
  const form = `form[data-item="${ITEM}"]`;
  await page.fill(`${form} input`, 'yes');
  await shot('labels');
  await page.click(`${form} button`);
  await page.waitForSelector(form, { state: 'detached' });
  step('an item labelled from the page');

  await page.goto(`${API}/ui/models`);
  await page.click('main a[href="/ui/models/ui-ranker"]');
  await page.waitForFunction(() => document.querySelector('main').textContent.includes('0.81'));
  step('the model registry');
  await shot('models');

  // Dark mode renders too.
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.goto(`${API}/ui/runs/${id}?task=slow`);
  await page.waitForFunction(() => (document.querySelector('#logs') || {}).textContent
    ?.includes('slow task reached the end'));
  await shot('run-dark');
  step('dark mode');

  // 4. The event stream client against the contract (DESIGN.md), served by a
  // stand-in: events parsed (comments skipped), the token sent, and a dropped
  // stream resumed with Last-Event-ID until the run's final event.
  const other = await startRun();
  const seen = [];
  await page.route('**/v1/runs/*/events', route => {
    const hd = route.request().headers();
    seen.push({ last: hd['last-event-id'] || '', auth: hd.authorization || '' });
    const body = seen.length === 1 ?
      ': hello\n\nid: 1\nevent: task\ndata: {"name": "slow", "index": 0, "state": "running",' +
      ' "attempt": 1, "worker": "w-ui"}\n\nid: 2\nevent: log\ndata: {"task": "slow", "index": 0,' +
      ' "line": "from the stream"}\n\n' :
      'id: 3\nevent: run\ndata: {"state": "succeeded"}\n\n';
    return route.fulfill({ status: 200, headers: { 'Content-Type': 'text/event-stream' }, body });
  });
  await page.goto(`${API}/ui/runs/${other}?task=slow`);
  await page.waitForSelector('#live[data-mode="events"]');
  for (let i = 0; i < 300 && seen.length < 2; i++) await page.waitForTimeout(100);
  if (seen.length < 2 || seen[0].last !== '' || seen[1].last !== '2' ||
      seen.some(x => x.auth !== 'Bearer ' + TOKEN))
    throw new Error('event stream requests: ' + JSON.stringify(seen));
  await page.waitForSelector('#live:not([data-mode])', { state: 'attached' });
  await page.unroute('**/v1/runs/*/events');
  step('the event stream: parsed, with the token, resumed with Last-Event-ID');

  await browser.close();
  if (problems.length) {
    console.log('FAIL: the page had problems:\n  ' + problems.join('\n  '));
    process.exit(1);
  }
  step('no console error and no failed request');
})().catch(async e => {
  console.log('FAIL: ' + (e && e.stack || e));
  if (page) {
    console.log('  at ' + page.url());
    const text = await page.evaluate(() => document.body.innerText).catch(() => '');
    console.log('  the page shows: ' + text.slice(0, 1500).replace(/\n/g, '\n  '));
    const dag = await page.evaluate(() => (document.querySelector('#dag') || {}).innerHTML || '')
      .catch(() => '');
    console.log('  graph: ' + dag.slice(0, 1500));
  }
  if (problems.length) console.log('  ' + problems.join('\n  '));
  process.exit(1);
});
