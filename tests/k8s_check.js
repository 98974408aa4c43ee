// SPDX-License-Identifier: MIT
//
// k8s_check: checks the Kubernetes manifests of a directory (default
// docker/kubernetes).  Every YAML document is parsed with a real YAML parser
// (as YAML 1.1, the way Kubernetes reads it, and as YAML 1.2, which must
// agree), validated against the Kubernetes API schemas (kubernetes-models),
// and then held to the deployment rules: one replica with Recreate, probes,
// security contexts, settings through envFrom, the state volume, the Indexed
// partition Job with its finalize Job, and object store credentials from
// the ServiceAccount's IAM role (IRSA annotation) with no access key Secret
// read by default.  The static-keys/ variant is checked too: its JSON patch,
// applied to the Deployment and the Jobs, makes them read the keys of its
// example Secret.  Prints one line per finding and exits 1 if there is any.
//
// usage: node tests/k8s_check.js [DIR]
// The npm packages come from $CKPTCONV_NPM_DIR/node_modules
// (default /var/cache/ckptconv-test-npm), installed by
// scripts/install-deps.sh test.
'use strict';

const fs = require('fs');
const path = require('path');
const { npmDir, npmRequire, Findings } = require('./checklib.js');

let YAML, models;
try {
  YAML = npmRequire('yaml');
  models = {
    'v1/ConfigMap': npmRequire('kubernetes-models/v1/ConfigMap').ConfigMap,
    'v1/Secret': npmRequire('kubernetes-models/v1/Secret').Secret,
    'v1/ServiceAccount': npmRequire('kubernetes-models/v1/ServiceAccount').ServiceAccount,
    'v1/Service': npmRequire('kubernetes-models/v1/Service').Service,
    'v1/PersistentVolumeClaim': npmRequire('kubernetes-models/v1/PersistentVolumeClaim').PersistentVolumeClaim,
    'apps/v1/Deployment': npmRequire('kubernetes-models/apps/v1/Deployment').Deployment,
    'batch/v1/Job': npmRequire('kubernetes-models/batch/v1/Job').Job,
  };
} catch (e) {
  console.error(`k8s_check: cannot load yaml and kubernetes-models from ${npmDir}/node_modules ` +
    `(run scripts/install-deps.sh test): ${e.message}`);
  process.exit(1);
}

const SECRET_VARS = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'];
const DEFAULT_SHUTDOWN_TIMEOUT = 25;
const DEFAULT_STATE_DIR = '/var/lib/ckptconv';
const STATIC_KEYS_DIR = 'static-keys';
// arn:PARTITION:iam::ACCOUNT:role/NAME (IAM User Guide, IAM ARNs).
const ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@\/-]+$/;

const findings = new Findings();
const { check } = findings;

// ---- loading ----

function parseDocuments(file, text, version) {
  const docs = YAML.parseAllDocuments(text, { version, uniqueKeys: true, prettyErrors: true });
  if (!Array.isArray(docs)) return [];  // an empty file
  const values = [];
  for (const doc of docs) {
    for (const problem of [...doc.errors, ...doc.warnings])
      check(false, file, `YAML ${version}: ${problem.message.split('\n')[0]}`);
    const value = doc.toJS();
    if (value !== null && value !== undefined) values.push(value);
  }
  return values;
}

function load(dir) {
  const objects = [];
  const files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
  check(files.length > 0, dir, 'no YAML files');
  for (const name of files) {
    const file = path.join(dir, name);
    const text = fs.readFileSync(file, 'utf8');
    const asKubernetes = parseDocuments(name, text, '1.1');
    const asCore = parseDocuments(name, text, '1.2');
    check(JSON.stringify(asKubernetes) === JSON.stringify(asCore), name,
      'reads differently as YAML 1.1 and 1.2 (an unquoted yes/no/on/off or leading-zero number?)');
    check(asKubernetes.length > 0, name, 'holds no document');
    asKubernetes.forEach((obj, i) => objects.push({ file: name, index: i, obj }));
  }
  return objects;
}

function where(entry) {
  const o = entry.obj;
  return `${entry.file}[${entry.index}] ${o.kind || '?'}/${(o.metadata && o.metadata.name) || '?'}`;
}

function validateSchema(entry) {
  const o = entry.obj;
  if (o.apiVersion === 'kustomize.config.k8s.io/v1beta1' && o.kind === 'Kustomization') return;
  const Model = models[`${o.apiVersion}/${o.kind}`];
  if (!check(Boolean(Model), where(entry), `unexpected apiVersion/kind ${o.apiVersion}/${o.kind}`)) return;
  check(o.metadata && typeof o.metadata.name === 'string' && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(o.metadata.name),
    where(entry), 'metadata.name missing or not a DNS label');
  try {
    new Model(o).validate();
  } catch (e) {
    check(false, where(entry), `schema: ${e.message}`);
  }
}

// ---- helpers ----

function byKind(objects, kind) {
  return objects.filter((e) => e.obj.kind === kind);
}

function one(objects, kind, predicate, label) {
  const found = byKind(objects, kind).filter(predicate || (() => true));
  check(found.length === 1, label || kind, `expected exactly one ${kind}, found ${found.length}`);
  return found[0];
}

function get(obj, dotted) {
  return dotted.split('.').reduce((v, k) => (v === undefined || v === null ? undefined : v[k]), obj);
}

function parseDurationSeconds(text) {
  const m = /^(\d+)\s*(s|m|h)?$/.exec(String(text).trim());
  if (!m) return NaN;
  return Number(m[1]) * { s: 1, m: 60, h: 3600 }[m[2] || 's'];
}

// Resolves a probe's port (number or container port name) to a number.
function probePort(container, port) {
  if (typeof port === 'number') return port;
  const named = (container.ports || []).find((p) => p.name === port);
  return named ? named.containerPort : undefined;
}

// ---- rules shared by every pod ----

function checkPodSecurity(label, podSpec) {
  const pod = podSpec.securityContext || {};
  check(get(pod, 'seccompProfile.type') === 'RuntimeDefault', label, 'pod seccompProfile.type is not RuntimeDefault');
  check(pod.runAsUser === undefined || pod.runAsUser !== 0, label, 'pod runAsUser is 0');
  check(podSpec.automountServiceAccountToken === false, label, 'automountServiceAccountToken is not false');
  check(!podSpec.hostNetwork && !podSpec.hostPID && !podSpec.hostIPC, label, 'shares a host namespace');
  for (const c of podSpec.containers || []) {
    const here = `${label} container ${c.name}`;
    const sc = c.securityContext || {};
    check(sc.runAsNonRoot === true || (pod.runAsNonRoot === true && sc.runAsNonRoot !== false), here,
      'runAsNonRoot is not true');
    check(sc.readOnlyRootFilesystem === true, here, 'readOnlyRootFilesystem is not true');
    check(sc.allowPrivilegeEscalation === false, here, 'allowPrivilegeEscalation is not false');
    check(sc.privileged !== true, here, 'privileged');
    check(Array.isArray(get(sc, 'capabilities.drop')) && sc.capabilities.drop.includes('ALL'), here,
      'capabilities.drop does not hold ALL');
    check(!get(sc, 'capabilities.add') || sc.capabilities.add.length === 0, here, 'adds capabilities');
    const seccomp = get(sc, 'seccompProfile.type') || get(pod, 'seccompProfile.type');
    check(seccomp === 'RuntimeDefault', here, 'seccompProfile.type is not RuntimeDefault');
    check(typeof c.image === 'string' && /:[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(c.image) && !/:latest$/.test(c.image),
      here, `image ${c.image} is not pinned to a version tag`);
    for (const kind of ['requests', 'limits'])
      for (const resource of ['cpu', 'memory'])
        check(get(c, `resources.${kind}.${resource}`) !== undefined, here, `resources.${kind}.${resource} missing`);
    for (const e of c.env || [])
      check(!(SECRET_VARS.includes(e.name) && e.value !== undefined), here, `${e.name} given as a literal value`);
  }
}

// The container reads its settings from the ConfigMap through envFrom, and
// by default no Secret: its credentials come from the ServiceAccount.
function checkEnvFrom(label, container, configMapName) {
  const envFrom = container.envFrom || [];
  check(envFrom.some((s) => get(s, 'configMapRef.name') === configMapName), label,
    `envFrom has no configMapRef to ${configMapName}`);
  check(!envFrom.some((s) => s.secretRef), label,
    'reads a Secret through envFrom by default (object store credentials come from the ServiceAccount)');
  for (const e of container.env || [])
    check(!(SECRET_VARS.includes(e.name) && get(e, 'valueFrom.secretKeyRef')), label,
      `${e.name} read from a Secret by default`);
}

function checkServiceAccount(label, podSpec, serviceAccountName) {
  check(podSpec.serviceAccountName === serviceAccountName, label,
    `serviceAccountName is not ${serviceAccountName}`);
}

// Applies an RFC 6902 patch's "add" operations to a copy of obj.
function applyPatch(obj, ops, label) {
  const copy = JSON.parse(JSON.stringify(obj));
  for (const op of Array.isArray(ops) ? ops : []) {
    if (!check(op.op === 'add' && typeof op.path === 'string', label, `unsupported operation ${JSON.stringify(op)}`)) continue;
    const keys = op.path.split('/').slice(1).map((k) => k.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = keys.pop();
    const parent = keys.reduce((v, k) => (v === undefined ? undefined : v[k]), copy);
    if (!check(parent !== undefined, label, `path ${op.path} does not exist`)) continue;
    if (Array.isArray(parent)) parent.splice(last === '-' ? parent.length : Number(last), 0, op.value);
    else parent[last] = op.value;
  }
  return copy;
}

function mountedVolume(podSpec, container, mountPath) {
  const mount = (container.volumeMounts || []).find((m) => m.mountPath === mountPath);
  return mount && (podSpec.volumes || []).find((v) => v.name === mount.name);
}

function checkScratch(label, podSpec, container) {
  const scratch = mountedVolume(podSpec, container, '/tmp');
  check(scratch && scratch.emptyDir !== undefined, label, 'no emptyDir mounted at /tmp');
}

// "ckptconv ARGS..." as the container runs it (the image's entrypoint is ckptconv).
function commandLine(container) {
  const command = container.command || ['ckptconv'];
  return [...command, ...(container.args || [])];
}

// ---- the rules ----

function checkAll(objects) {
  objects.forEach(validateSchema);

  const configMap = one(objects, 'ConfigMap');
  const serviceAccount = one(objects, 'ServiceAccount');
  for (const e of byKind(objects, 'Secret')) {
    const d = { ...(e.obj.stringData || {}), ...(e.obj.data || {}) };
    for (const name of SECRET_VARS)
      check(!(name in d), where(e), `holds ${name}: the default example has no access keys (static-keys/ has)`);
  }
  const pvc = one(objects, 'PersistentVolumeClaim');
  const deployment = one(objects, 'Deployment');
  const service = one(objects, 'Service');
  const jobs = byKind(objects, 'Job');
  const partitionJob = jobs.find((e) => get(e.obj, 'spec.completionMode') === 'Indexed');
  const finalizeJob = jobs.find((e) => commandLine(get(e.obj, 'spec.template.spec.containers.0') || {})[1] === 'finalize');
  check(Boolean(partitionJob), 'partition job', 'no Job with completionMode: Indexed');
  check(Boolean(finalizeJob), 'finalize job', 'no Job running `ckptconv finalize`');
  if (!configMap || !serviceAccount || !pvc || !deployment || !service || !partitionJob || !finalizeJob) return;

  // ConfigMap: settings only.
  const settings = configMap.obj.data || {};
  for (const name of SECRET_VARS)
    check(!(name in settings), where(configMap), `holds ${name}: credentials never belong in the ConfigMap`);
  const shutdownTimeout = parseDurationSeconds(settings.CKPTCONV_SHUTDOWN_TIMEOUT || DEFAULT_SHUTDOWN_TIMEOUT);
  check(Number.isFinite(shutdownTimeout), where(configMap), 'CKPTCONV_SHUTDOWN_TIMEOUT is not a number of seconds');
  const listen = /^(.*):(\d+)$/.exec(settings.CKPTCONV_LISTEN || '');
  check(listen && listen[1] === '0.0.0.0', where(configMap), 'CKPTCONV_LISTEN does not listen on 0.0.0.0');
  const listenPort = listen ? Number(listen[2]) : NaN;
  check(listenPort === 8080, where(configMap), 'CKPTCONV_LISTEN port is not 8080');
  // Probes go to the health listener when there is one: it answers
  // however many connections the main one holds.
  const healthListen = /^(.*):(\d+)$/.exec(settings.CKPTCONV_HEALTH_LISTEN || '');
  check(!settings.CKPTCONV_HEALTH_LISTEN || (healthListen && healthListen[1] === '0.0.0.0'), where(configMap),
    'CKPTCONV_HEALTH_LISTEN does not listen on 0.0.0.0');
  const probePortNumber = healthListen ? Number(healthListen[2]) : listenPort;
  check(probePortNumber !== listenPort || !healthListen, where(configMap),
    'CKPTCONV_HEALTH_LISTEN uses the port of CKPTCONV_LISTEN');
  const stateDir = settings.CKPTCONV_STATE_DIR || DEFAULT_STATE_DIR;

  // ServiceAccount: the IAM role of IRSA, no API token mounted.
  const sa = serviceAccount.obj;
  const saName = sa.metadata.name;
  check(ROLE_ARN.test(get(sa, 'metadata.annotations') ? sa.metadata.annotations['eks.amazonaws.com/role-arn'] || '' : ''),
    where(serviceAccount), 'no eks.amazonaws.com/role-arn annotation naming an IAM role ARN');
  check(sa.automountServiceAccountToken === false, where(serviceAccount), 'automountServiceAccountToken is not false');

  // PVC.
  check(get(pvc.obj, 'spec.resources.requests.storage') !== undefined, where(pvc), 'no storage request');

  // Deployment.
  const d = deployment.obj;
  const dw = where(deployment);
  const podSpec = get(d, 'spec.template.spec') || {};
  const container = (podSpec.containers || [])[0] || {};
  check(d.spec.replicas === 1, dw, `replicas is ${d.spec.replicas}, not 1`);
  check(get(d, 'spec.strategy.type') === 'Recreate', dw, 'strategy.type is not Recreate');
  const selector = get(d, 'spec.selector.matchLabels') || {};
  const podLabels = get(d, 'spec.template.metadata.labels') || {};
  check(Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => podLabels[k] === v), dw,
    'selector does not match the pod labels');
  check(typeof podSpec.terminationGracePeriodSeconds === 'number' &&
    podSpec.terminationGracePeriodSeconds > shutdownTimeout, dw,
    `terminationGracePeriodSeconds ${podSpec.terminationGracePeriodSeconds} is not above the shutdown timeout ${shutdownTimeout}`);
  check(podSpec.containers && podSpec.containers.length === 1, dw, 'not exactly one container');
  check(commandLine(container).slice(0, 2).join(' ') === 'ckptconv serve', dw, 'container does not run `ckptconv serve`');
  check((container.ports || []).some((p) => p.containerPort === listenPort), dw, `no containerPort ${listenPort}`);
  check((container.ports || []).some((p) => p.containerPort === probePortNumber), dw, `no containerPort ${probePortNumber}`);
  const liveness = container.livenessProbe || {};
  const readiness = container.readinessProbe || {};
  check(get(liveness, 'httpGet.path') === '/healthz' && probePort(container, get(liveness, 'httpGet.port')) === probePortNumber,
    dw, `livenessProbe is not GET /healthz on port ${probePortNumber}`);
  check(get(readiness, 'httpGet.path') === '/readyz' && probePort(container, get(readiness, 'httpGet.port')) === probePortNumber,
    dw, `readinessProbe is not GET /readyz on port ${probePortNumber}`);
  checkPodSecurity(dw, podSpec);
  checkServiceAccount(dw, podSpec, saName);
  checkEnvFrom(dw, container, configMap.obj.metadata.name);
  checkScratch(dw, podSpec, container);
  const state = mountedVolume(podSpec, container, stateDir);
  check(state && get(state, 'persistentVolumeClaim.claimName') === pvc.obj.metadata.name, dw,
    `the state dir ${stateDir} is not on the PersistentVolumeClaim ${pvc.obj.metadata.name}`);
  const tokenFile = (container.env || []).find((e) => e.name === 'CKPTCONV_TOKEN_FILE');
  if (tokenFile) {
    const tokenVolume = (container.volumeMounts || []).find((m) => tokenFile.value.startsWith(`${m.mountPath}/`));
    const volume = tokenVolume && (podSpec.volumes || []).find((v) => v.name === tokenVolume.name);
    check(volume && volume.secret !== undefined, dw, 'CKPTCONV_TOKEN_FILE is not on a Secret volume');
  }

  // Service: reaches the Deployment's pods on the listen port.
  const s = service.obj;
  const sw = where(service);
  const serviceSelector = get(s, 'spec.selector') || {};
  check(Object.keys(serviceSelector).length > 0 && Object.entries(serviceSelector).every(([k, v]) => podLabels[k] === v),
    sw, 'selector does not match the Deployment\'s pods');
  check((get(s, 'spec.ports') || []).some((p) => probePort(container, p.targetPort === undefined ? p.port : p.targetPort) === listenPort),
    sw, `no port targets ${listenPort}`);

  // Partition Job.
  const p = partitionJob.obj;
  const pw = where(partitionJob);
  const pPod = get(p, 'spec.template.spec') || {};
  const pContainer = (pPod.containers || [])[0] || {};
  const pArgs = commandLine(pContainer);
  check(Number.isInteger(p.spec.completions) && p.spec.completions > 1, pw, 'completions is not an integer above 1');
  check(p.spec.parallelism === p.spec.completions, pw, 'parallelism differs from completions');
  check(['Never', 'OnFailure'].includes(pPod.restartPolicy), pw, 'restartPolicy is not Never or OnFailure');
  check(pArgs[0] === 'ckptconv' && pArgs[1] === 'convert', pw, 'does not run `ckptconv convert`');
  const partitionAt = pArgs.indexOf('--partition');
  const partition = partitionAt > 0 ? /^\$\(JOB_COMPLETION_INDEX\)\/(\d+)$/.exec(pArgs[partitionAt + 1] || '') : null;
  check(Boolean(partition), pw, 'no `--partition $(JOB_COMPLETION_INDEX)/N` argument');
  check(partition && Number(partition[1]) === p.spec.completions, pw,
    `the N of --partition (${partition && partition[1]}) differs from completions (${p.spec.completions})`);
  const [source, destination] = pArgs.slice(-2);
  check(/^s3:\/\/[^/]+\//.test(source || '') && /^s3:\/\/[^/]+\//.test(destination || '') && source !== destination,
    pw, 'the last two arguments are not two different s3:// locations');
  check(pArgs.includes('--to'), pw, 'no --to');
  checkPodSecurity(pw, pPod);
  checkServiceAccount(pw, pPod, saName);
  checkEnvFrom(pw, pContainer, configMap.obj.metadata.name);
  checkScratch(pw, pPod, pContainer);

  // Finalize Job: same destination, one pod, after the partitions.
  const f = finalizeJob.obj;
  const fw = where(finalizeJob);
  const fPod = get(f, 'spec.template.spec') || {};
  const fContainer = (fPod.containers || [])[0] || {};
  const fArgs = commandLine(fContainer);
  check(fArgs[0] === 'ckptconv' && fArgs.length === 3 && fArgs[2] === destination, fw,
    `does not run \`ckptconv finalize ${destination}\``);
  check(get(f, 'spec.completionMode') !== 'Indexed' && (f.spec.completions || 1) === 1, fw, 'is not a single-pod Job');
  check(['Never', 'OnFailure'].includes(fPod.restartPolicy), fw, 'restartPolicy is not Never or OnFailure');
  checkPodSecurity(fw, fPod);
  checkServiceAccount(fw, fPod, saName);
  checkEnvFrom(fw, fContainer, configMap.obj.metadata.name);
  checkScratch(fw, fPod, fContainer);
  return { deployment, jobs: [partitionJob, finalizeJob] };
}

// static-keys/: a kustomization over ../ whose JSON patch makes the
// Deployment (and, applied by hand, the Jobs) read the keys of its Secret.
function checkStaticKeys(dir, workloads) {
  const sdir = path.join(dir, STATIC_KEYS_DIR);
  if (!check(fs.existsSync(sdir), STATIC_KEYS_DIR, 'the static keys variant is missing')) return;
  const read = (name) => {
    const file = path.join(sdir, name);
    if (!check(fs.existsSync(file), STATIC_KEYS_DIR, `${name} is missing`)) return [];
    return parseDocuments(`${STATIC_KEYS_DIR}/${name}`, fs.readFileSync(file, 'utf8'), '1.1');
  };
  const [k] = read('kustomization.yaml');
  const [secret] = read('secret.example.yaml');
  if (!k || !secret) return;
  const label = `${STATIC_KEYS_DIR}/kustomization.yaml`;
  check((k.resources || []).includes('../'), label, 'does not build on ../');
  const patch = (k.patches || []).find((p) => get(p, 'target.kind') === 'Deployment');
  if (!check(patch && typeof patch.path === 'string', label, 'no patch of the Deployment')) return;
  check(get(patch, 'target.name') === workloads.deployment.obj.metadata.name, label,
    `the patch's target is not the Deployment ${workloads.deployment.obj.metadata.name}`);
  const [ops] = read(patch.path);
  validateSchema({ file: `${STATIC_KEYS_DIR}/secret.example.yaml`, index: 0, obj: secret });
  const data = { ...(secret.stringData || {}) };
  for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'])
    check(typeof data[name] === 'string' && /replace/i.test(data[name]), `${STATIC_KEYS_DIR}/secret.example.yaml`,
      `${name} is not a placeholder in stringData`);
  for (const w of [workloads.deployment, ...workloads.jobs]) {
    const here = `${STATIC_KEYS_DIR} on ${where(w)}`;
    const patched = applyPatch(w.obj, ops, here);
    const envFrom = get(patched, 'spec.template.spec.containers.0.envFrom') || [];
    check(envFrom.some((s) => get(s, 'secretRef.name') === secret.metadata.name), here,
      `envFrom has no secretRef to ${secret.metadata.name}`);
    const kind = w.obj.kind;
    try {
      new models[`${w.obj.apiVersion}/${kind}`](patched).validate();
    } catch (e) {
      check(false, here, `schema: ${e.message}`);
    }
  }
}

function checkKustomization(dir, objects) {
  const k = objects.find((e) => e.obj.kind === 'Kustomization');
  if (!k) return;
  for (const e of byKind(objects, 'ServiceAccount'))
    check((k.obj.resources || []).includes(e.file), where(k), `does not list ${e.file}`);
  for (const resource of k.obj.resources || []) {
    check(fs.existsSync(path.join(dir, resource)), where(k), `resource ${resource} does not exist`);
    check(!/secret/i.test(resource), where(k), `lists ${resource}: Secrets are created by the operator`);
  }
}

const dir = process.argv[2] || path.join(__dirname, '..', 'docker', 'kubernetes');
const objects = load(dir);
const workloads = checkAll(objects);
checkKustomization(dir, objects);
if (workloads) checkStaticKeys(dir, workloads);
for (const f of findings.list) console.log(`not ok: ${f}`);
console.log(`k8s_check: ${objects.length} objects, ${findings.checks} checks, ${findings.list.length} failed`);
process.exit(findings.list.length === 0 ? 0 : 1);
