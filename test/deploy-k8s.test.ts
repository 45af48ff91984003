/**
 * deploy/k8s: the Kubernetes manifests, the image's Dockerfile and the walk-through
 * (docs/kubernetes.md) against each other and against the code they configure.
 *
 * - Every YAML document is a valid Kubernetes object: kubernetes-models' validators (generated
 *   from the Kubernetes OpenAPI schemas) plus a check for unknown fields, which those schemas let
 *   through but the API server's strict field validation (kubectl's default) rejects. The YAML
 *   reads the same as YAML 1.1 (what Kubernetes' parser speaks) and 1.2. Names, labels and port
 *   names follow the API server's formats.
 * - What no schema sees: mounts name defined volumes, referenced ConfigMaps, ServiceAccounts and
 *   roles exist, selectors match template labels, Service and probe ports resolve.
 * - The embedded server and agent configs pass Spindle's own parsers and plugin builders, and
 *   agree with the objects around them: ports, probe paths, mounts of every path the configs
 *   name, the projected token's audience and the server's k8s_psat audience, the cluster name,
 *   the allowed agent service account, hostPID, RBAC rules.
 * - The walk-through's admin commands run as written against a real spindle-server, and its
 *   selectors, IDs and paths are the manifests'.
 * - deploy/k8s/ha/ (three servers on PostgreSQL) gets the same checks, and is held to the
 *   single-server files: the same objects and configs but for the datastore, the replicas and the
 *   agents' server_address, a headless Service for the agents, a PodDisruptionBudget, anti-affinity,
 *   a connection string from a Secret through -expandEnv, and a trial PostgreSQL that matches the
 *   Secret the walk-through creates.
 * The checkers are tested on broken copies too, so a checker that finds nothing is caught.
 */
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { ConfigMap, Namespace, Service, ServiceAccount } from 'kubernetes-models/v1';
import type { IConfigMap, IContainer, IPodSpec, IProbe, IService, IServiceAccount, IVolume, IVolumeMount } from 'kubernetes-models/v1';
import { DaemonSet, Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import type { IDaemonSet, IDeployment, IStatefulSet } from 'kubernetes-models/apps/v1';
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1';
import type { IClusterRole, IClusterRoleBinding, IPolicyRule } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { expandEnv, parseConfigText } from '../common/configfile.js';
import { describeDataStore } from '../server/datastore/factory.js';
import { parseServerConfig, type ServerConfig } from '../server/config/config.js';
import { parseAgentConfig, type AgentConfig } from '../agent/config/config.js';
import { DEFAULT_SOCKET_PATH as SERVER_CLI_SOCKET_PATH } from '../server/cli/common.js';
import { buildServerNodeAttestors } from '../attestors/node/registry.js';
import { buildAgentPlugins } from '../agent/plugins.js';
import { startServerProcess, type ServerProcess } from './support/serverproc.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const K8S_DIR = join(ROOT, 'deploy', 'k8s');
/** Three servers on PostgreSQL: a set of its own (`kubectl apply -f deploy/k8s/ha/`). */
const HA_DIR = join(K8S_DIR, 'ha');
const DOCS = join(ROOT, 'docs', 'kubernetes.md');
const IMAGE = 'spindle:dev';
/** The image's WORKDIR: where relative config paths would resolve (they must not be relative). */
const IMAGE_WORKDIR = '/opt/spindle';
/** ConfigMaps the walk-through creates by hand (not in the manifests, so re-applying keeps them). */
const ADMIN_CREATED_CONFIGMAPS = new Set(['spindle/spindle-bundle']);
/** Secrets the walk-through creates by hand (a password is never in the repository). */
const ADMIN_CREATED_SECRETS = new Set(['spindle/spindle-datastore']);
/** Workloads that run another image than ours: the HA set's trial PostgreSQL. */
const OTHER_IMAGES = new Map([['spindle/spindle-postgres', 'postgres:16-bookworm']]);

// ---------------------------------------------------------------------------------------------
// Loading

interface Meta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: Meta;
  [key: string]: unknown;
}
interface Manifest {
  /** Path relative to the repository root, and the document's index in its file. */
  where: string;
  obj: K8sObject;
}

function yamlFiles(dir: string, skip: readonly string[]): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, e.name);
    if (e.isDirectory()) {
      if (!skip.includes(full)) out.push(...yamlFiles(full, skip));
    }
    else if (/\.ya?ml$/.test(e.name)) out.push(full);
  }
  return out.sort();
}

function parseYamlStream(text: string, where: string, version: '1.1' | '1.2'): unknown[] {
  const docs = parseAllDocuments(text, { version, prettyErrors: true });
  if (!Array.isArray(docs)) return [];
  return docs.map((d, i) => {
    if (d.errors.length > 0) throw new Error(`${where} document ${i} (YAML ${version}): ${d.errors.map((e) => e.message).join('; ')}`);
    return d.toJS() as unknown;
  });
}

/** The objects of every YAML file under `dir`, but those under the `skip` directories. */
function loadManifests(dir: string, skip: readonly string[] = []): Manifest[] {
  const out: Manifest[] = [];
  for (const file of yamlFiles(dir, skip)) {
    const rel = relative(ROOT, file);
    const text = readFileSync(file, 'utf8');
    const docs = parseYamlStream(text, rel, '1.2');
    assert.deepEqual(parseYamlStream(text, rel, '1.1'), docs, `${rel} reads differently as YAML 1.1 (Kubernetes) and 1.2: quote the value`);
    docs.forEach((doc, i) => {
      if (doc === null || doc === undefined) return; // a comment-only document
      assert.ok(isRecord(doc), `${rel} document ${i} is not a mapping`);
      out.push({ where: `${rel}#${i}`, obj: doc as K8sObject });
    });
  }
  return out;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const clone = <T>(v: T): T => structuredClone(v);

// ---------------------------------------------------------------------------------------------
// Schema validation (kubernetes-models) and unknown fields

interface Validatable {
  validate(): void;
}
interface SchemaError {
  instancePath: string;
  message?: string;
}

const model =
  <T>(C: new (data: T) => Validatable) =>
  (data: unknown): Validatable =>
    new C(data as T);

const MODELS = new Map<string, (data: unknown) => Validatable>([
  ['v1/Namespace', model(Namespace)],
  ['v1/ServiceAccount', model(ServiceAccount)],
  ['v1/ConfigMap', model(ConfigMap)],
  ['v1/Service', model(Service)],
  ['apps/v1/StatefulSet', model(StatefulSet)],
  ['apps/v1/DaemonSet', model(DaemonSet)],
  ['apps/v1/Deployment', model(Deployment)],
  ['rbac.authorization.k8s.io/v1/ClusterRole', model(ClusterRole)],
  ['rbac.authorization.k8s.io/v1/ClusterRoleBinding', model(ClusterRoleBinding)],
  ['rbac.authorization.k8s.io/v1/Role', model(Role)],
  ['rbac.authorization.k8s.io/v1/RoleBinding', model(RoleBinding)],
  ['policy/v1/PodDisruptionBudget', model(PodDisruptionBudget)],
]);

/** The schema's complaints about `obj` (empty: valid). Throws for kinds without a schema here. */
function schemaErrors(obj: unknown): SchemaError[] {
  const o = obj as Partial<K8sObject>;
  const make = MODELS.get(`${String(o.apiVersion)}/${String(o.kind)}`);
  if (make === undefined) throw new Error(`no schema for apiVersion ${JSON.stringify(o.apiVersion)} kind ${JSON.stringify(o.kind)}`);
  try {
    make(clone(obj)).validate();
    return [];
  } catch (err) {
    const errors = (err as { errors?: unknown }).errors;
    if (!Array.isArray(errors)) throw err;
    return errors as SchemaError[];
  }
}

/** JSON pointer of a path, as ajv writes instancePath. */
function pointer(path: readonly (string | number)[]): string {
  return path.map((p) => `/${String(p).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

function withValueAt(obj: unknown, path: readonly (string | number)[], value: unknown): unknown {
  const copy = clone(obj);
  let node = copy as Record<string | number, unknown>;
  for (const p of path.slice(0, -1)) node = node[p] as Record<string | number, unknown>;
  node[path[path.length - 1]!] = value;
  return copy;
}

/**
 * Fields the schema does not know. The generated validators accept unknown properties, so each
 * key is probed: its value is replaced by a string, a fraction and a boolean in turn; a key the
 * schema describes rejects at least one of them at its own path (keys of free-form maps such as
 * labels or ConfigMap data count as known: their values are typed). An unknown key accepts all.
 */
function unknownFields(obj: unknown): string[] {
  const PROBES: readonly unknown[] = ['\u0000probe', 0.5, true];
  const out: string[] = [];
  const visit = (node: unknown, path: (string | number)[]): void => {
    if (Array.isArray(node)) {
      node.forEach((v, i) => visit(v, [...path, i]));
      return;
    }
    if (!isRecord(node)) return;
    for (const key of Object.keys(node)) {
      // apiVersion and kind pick the schema: probing them would leave it.
      if (path.length === 0 && (key === 'apiVersion' || key === 'kind')) continue;
      const at = [...path, key];
      const ptr = pointer(at);
      const known = PROBES.some((probe) =>
        schemaErrors(withValueAt(obj, at, probe)).some((e) => e.instancePath === ptr || e.instancePath.startsWith(`${ptr}/`)),
      );
      if (known) visit(node[key], at);
      else out.push(ptr);
    }
  };
  visit(obj, []);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Formats the API server checks

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(|(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$/;
const IANA_SVC_NAME = /^(?=.{1,15}$)(?=.*[a-z])(?!.*--)[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding']);

function formatProblems(m: Manifest): string[] {
  const p: string[] = [];
  const { kind, metadata } = m.obj;
  const name = metadata?.name ?? '';
  const nameFormat = kind === 'Namespace' || kind === 'Service' ? DNS_LABEL : DNS_SUBDOMAIN;
  if (!nameFormat.test(name)) p.push(`${m.where}: ${kind} name ${JSON.stringify(name)} is not a valid name`);
  if (CLUSTER_SCOPED.has(kind) !== (metadata?.namespace === undefined)) {
    p.push(`${m.where}: ${kind} ${name} ${CLUSTER_SCOPED.has(kind) ? 'is cluster-scoped: drop metadata.namespace' : 'needs metadata.namespace'}`);
  }
  const labelMaps: Array<[string, unknown]> = [['metadata.labels', metadata?.labels]];
  for (const { spec } of podTemplates([m])) labelMaps.push(['template labels', spec.labels]);
  for (const [where, labels] of labelMaps) {
    for (const [k, v] of Object.entries((labels ?? {}) as Record<string, string>)) {
      const slash = k.lastIndexOf('/');
      const [prefix, local] = slash === -1 ? [undefined, k] : [k.slice(0, slash), k.slice(slash + 1)];
      if ((prefix !== undefined && !DNS_SUBDOMAIN.test(prefix)) || !LABEL_NAME.test(local)) p.push(`${m.where}: ${where} key ${JSON.stringify(k)} is invalid`);
      if (!LABEL_VALUE.test(v)) p.push(`${m.where}: ${where} value ${JSON.stringify(v)} is invalid`);
    }
  }
  for (const { pod } of podTemplates([m])) {
    for (const c of containersOf(pod)) {
      if (!DNS_LABEL.test(c.name)) p.push(`${m.where}: container name ${JSON.stringify(c.name)} is invalid`);
      for (const port of c.ports ?? []) {
        if (port.name !== undefined && !IANA_SVC_NAME.test(port.name)) p.push(`${m.where}: container port name ${JSON.stringify(port.name)} is invalid`);
      }
    }
    for (const v of pod.volumes ?? []) if (!DNS_LABEL.test(v.name)) p.push(`${m.where}: volume name ${JSON.stringify(v.name)} is invalid`);
  }
  if (kind === 'Service') {
    for (const port of (m.obj as unknown as IService).spec?.ports ?? []) {
      if (port.name !== undefined && !DNS_LABEL.test(port.name)) p.push(`${m.where}: Service port name ${JSON.stringify(port.name)} is invalid`);
    }
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Cross-references

type Workload = IStatefulSet | IDaemonSet | IDeployment;
const WORKLOAD_KINDS = new Set(['StatefulSet', 'DaemonSet', 'Deployment']);

interface PodTemplate {
  where: string;
  workload: Workload;
  namespace: string;
  pod: IPodSpec;
  spec: { labels: Record<string, string> };
}

function podTemplates(ms: readonly Manifest[]): PodTemplate[] {
  return ms
    .filter((m) => WORKLOAD_KINDS.has(m.obj.kind))
    .map((m) => {
      const workload = m.obj as unknown as Workload;
      const template = workload.spec?.template;
      return {
        where: `${m.where} ${m.obj.kind} ${m.obj.metadata.name}`,
        workload,
        namespace: m.obj.metadata.namespace ?? '',
        pod: template?.spec ?? { containers: [] },
        spec: { labels: template?.metadata?.labels ?? {} },
      };
    });
}

function containersOf(pod: IPodSpec): IContainer[] {
  return [...(pod.initContainers ?? []), ...pod.containers];
}

const key = (namespace: string | undefined, name: string): string => `${namespace ?? ''}/${name}`;

function byKind(ms: readonly Manifest[], kind: string): Map<string, K8sObject> {
  const out = new Map<string, K8sObject>();
  for (const m of ms) if (m.obj.kind === kind) out.set(key(m.obj.metadata.namespace, m.obj.metadata.name), m.obj);
  return out;
}

function labelsMatch(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** The container port a probe or Service targets (by name or number), if the container has it. */
function containerPort(c: IContainer, target: string | number | undefined): number | undefined {
  if (typeof target === 'number') return (c.ports ?? []).some((p) => p.containerPort === target) ? target : undefined;
  return (c.ports ?? []).find((p) => p.name === target)?.containerPort;
}

/** Everything one object refers to that must exist elsewhere in the manifests. */
function referenceProblems(ms: readonly Manifest[]): string[] {
  const p: string[] = [];
  const configMaps = byKind(ms, 'ConfigMap');
  const serviceAccounts = byKind(ms, 'ServiceAccount');
  const namespaces = byKind(ms, 'Namespace');
  const templates = podTemplates(ms);

  const seen = new Set<string>();
  for (const m of ms) {
    const id = `${m.obj.apiVersion} ${m.obj.kind} ${key(m.obj.metadata.namespace, m.obj.metadata.name)}`;
    if (seen.has(id)) p.push(`${m.where}: ${id} is defined twice`);
    seen.add(id);
    const ns = m.obj.metadata.namespace;
    if (ns !== undefined && ns !== 'default' && !namespaces.has(key(undefined, ns))) p.push(`${m.where}: namespace ${ns} is not defined`);
  }

  for (const t of templates) {
    const { pod, where, namespace } = t;
    const volumes = new Map<string, IVolume>((pod.volumes ?? []).map((v) => [v.name, v]));
    const claimNames = new Set(((t.workload as IStatefulSet).spec?.volumeClaimTemplates ?? []).map((c) => c.metadata?.name ?? ''));
    const used = new Set<string>();
    for (const c of containersOf(pod)) {
      const paths = new Set<string>();
      for (const vm of c.volumeMounts ?? []) {
        used.add(vm.name);
        if (!volumes.has(vm.name) && !claimNames.has(vm.name)) p.push(`${where}: container ${c.name} mounts volume ${vm.name}, which is not defined`);
        if (paths.has(vm.mountPath)) p.push(`${where}: container ${c.name} mounts two volumes at ${vm.mountPath}`);
        paths.add(vm.mountPath);
      }
      for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
        const target = probe?.httpGet?.port ?? probe?.tcpSocket?.port;
        if (probe !== undefined && target !== undefined && containerPort(c, target) === undefined) {
          p.push(`${where}: container ${c.name} probes port ${target}, which it does not declare`);
        }
      }
      for (const e of c.env ?? []) {
        const ref = e.valueFrom?.configMapKeyRef;
        if (ref !== undefined && !configMaps.has(key(namespace, ref.name ?? ''))) p.push(`${where}: env ${e.name} reads ConfigMap ${ref.name}, which is not defined`);
        const secret = e.valueFrom?.secretKeyRef;
        if (secret !== undefined && !ADMIN_CREATED_SECRETS.has(key(namespace, secret.name ?? ''))) p.push(`${where}: env ${e.name} reads Secret ${secret.name}, which nobody creates`);
      }
      const image = OTHER_IMAGES.get(key(namespace, t.workload.metadata?.name ?? '')) ?? IMAGE;
      if (c.image !== image) p.push(`${where}: container ${c.name} uses image ${c.image}, expected ${image}`);
    }
    for (const name of [...volumes.keys(), ...claimNames]) if (!used.has(name)) p.push(`${where}: volume ${name} is never mounted`);
    for (const v of volumes.values()) {
      const sources = [v.configMap?.name, ...(v.projected?.sources ?? []).map((s) => s.configMap?.name)].filter((n): n is string => n !== undefined);
      for (const name of sources) {
        const cmKey = key(namespace, name);
        const cm = configMaps.get(cmKey) as IConfigMap | undefined;
        if (cm === undefined && !ADMIN_CREATED_CONFIGMAPS.has(cmKey)) p.push(`${where}: volume ${v.name} uses ConfigMap ${name}, which is not defined`);
        for (const item of v.configMap?.items ?? []) {
          if (cm !== undefined && cm.data?.[item.key] === undefined) p.push(`${where}: volume ${v.name} uses key ${item.key}, which ConfigMap ${name} lacks`);
        }
      }
    }
    const sa = pod.serviceAccountName;
    if (sa === undefined) p.push(`${where}: no serviceAccountName (it would run as "default")`);
    else if (!serviceAccounts.has(key(namespace, sa))) p.push(`${where}: serviceAccountName ${sa} is not defined in ${namespace}`);
    const selector = t.workload.spec?.selector;
    if (selector?.matchExpressions !== undefined || !labelsMatch(selector?.matchLabels ?? {}, t.spec.labels)) {
      p.push(`${where}: selector ${JSON.stringify(selector)} does not match the template labels ${JSON.stringify(t.spec.labels)}`);
    }
    if (t.workload.kind === 'StatefulSet') {
      const svc = (t.workload as IStatefulSet).spec?.serviceName;
      if (svc !== undefined && !ms.some((m) => m.obj.kind === 'Service' && m.obj.metadata.name === svc && m.obj.metadata.namespace === namespace)) {
        p.push(`${where}: serviceName ${svc} is not a Service in ${namespace}`);
      }
    }
  }

  for (const m of ms.filter((x) => x.obj.kind === 'Service')) {
    const svc = m.obj as unknown as IService;
    const selector = svc.spec?.selector ?? {};
    const selected = templates.filter((t) => t.namespace === m.obj.metadata.namespace && labelsMatch(selector, t.spec.labels));
    if (selected.length !== 1) p.push(`${m.where}: Service ${m.obj.metadata.name} selects ${selected.length} workloads, expected 1`);
    for (const port of svc.spec?.ports ?? []) {
      const target = port.targetPort ?? port.port;
      for (const t of selected) {
        if (!t.pod.containers.some((c) => containerPort(c, target) !== undefined)) {
          p.push(`${m.where}: Service port ${port.port} targets ${target}, which no container of ${t.where} declares`);
        }
      }
    }
  }

  for (const m of ms.filter((x) => x.obj.kind === 'PodDisruptionBudget')) {
    const selector = (m.obj as unknown as IPodDisruptionBudget).spec?.selector;
    const selected = templates.filter((t) => t.namespace === m.obj.metadata.namespace && labelsMatch(selector?.matchLabels ?? {}, t.spec.labels));
    if (selector?.matchExpressions !== undefined || selected.length !== 1) p.push(`${m.where}: PodDisruptionBudget ${m.obj.metadata.name} selects ${selected.length} workloads, expected 1`);
  }

  for (const m of ms.filter((x) => x.obj.kind === 'ClusterRoleBinding' || x.obj.kind === 'RoleBinding')) {
    const b = m.obj as unknown as IClusterRoleBinding;
    const roleNs = b.roleRef.kind === 'Role' ? m.obj.metadata.namespace : undefined;
    if (b.roleRef.apiGroup !== 'rbac.authorization.k8s.io' || !byKind(ms, b.roleRef.kind).has(key(roleNs, b.roleRef.name))) {
      p.push(`${m.where}: roleRef ${b.roleRef.kind} ${b.roleRef.name} is not defined`);
    }
    if ((b.subjects ?? []).length === 0) p.push(`${m.where}: no subjects`);
    for (const s of b.subjects ?? []) {
      if (s.kind !== 'ServiceAccount' || !serviceAccounts.has(key(s.namespace, s.name))) p.push(`${m.where}: subject ${s.kind} ${key(s.namespace, s.name)} is not a defined ServiceAccount`);
    }
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Helpers for the Spindle-specific checks

function only<T>(items: readonly T[], what: string): T {
  assert.equal(items.length, 1, `expected exactly one ${what}, found ${items.length}`);
  return items[0]!;
}

function workload<T extends Workload>(ms: readonly Manifest[], kind: string, name: string): T {
  return only(
    ms.filter((m) => m.obj.kind === kind && m.obj.metadata.name === name),
    `${kind} ${name}`,
  ).obj as unknown as T;
}

function object<T>(ms: readonly Manifest[], kind: string, name: string, namespace?: string): T {
  return only(
    ms.filter((m) => m.obj.kind === kind && m.obj.metadata.name === name && m.obj.metadata.namespace === namespace),
    `${kind} ${key(namespace, name)}`,
  ).obj as unknown as T;
}

function podOf(w: Workload): IPodSpec {
  const pod = w.spec?.template.spec;
  assert.ok(pod, `${w.metadata?.name}: no pod template`);
  return pod;
}

function mainContainer(w: Workload): IContainer {
  return only(podOf(w).containers, `container in ${w.metadata?.name}`);
}

/** The mount that holds `path` in the container (longest mountPath prefix). */
function mountOf(c: IContainer, path: string): IVolumeMount | undefined {
  return (c.volumeMounts ?? [])
    .filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath.replace(/\/$/, '')}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
}

function volumeOf(w: Workload, mount: IVolumeMount | undefined): IVolume | undefined {
  return (podOf(w).volumes ?? []).find((v) => v.name === mount?.name);
}

/** Asserts `path` is on a writable volume (the root file systems are read-only) and returns its mount. */
function writableMount(w: Workload, c: IContainer, path: string, what: string): IVolumeMount {
  const m = mountOf(c, path);
  assert.ok(m, `${what} ${path} is on no volume of ${w.metadata?.name}, but the root file system is read-only`);
  assert.notEqual(m.readOnly, true, `${what} ${path} is on the read-only mount ${m.name}`);
  return m;
}

/** The text of the `-config` file of a container, read from the ConfigMap mounted there. */
function configFileOf(ms: readonly Manifest[], w: Workload, c: IContainer): { path: string; text: string } {
  const args = [...(c.command ?? []), ...(c.args ?? [])];
  const i = args.indexOf('-config');
  assert.ok(i >= 0 && args[i + 1] !== undefined, `${c.name}: no -config argument in ${JSON.stringify(args)}`);
  const path = args[i + 1]!;
  const mount = mountOf(c, path);
  const vol = volumeOf(w, mount);
  assert.ok(mount && vol?.configMap?.name, `${c.name}: -config ${path} is not in a mounted ConfigMap`);
  const cm = object<IConfigMap>(ms, 'ConfigMap', vol.configMap.name, w.metadata?.namespace);
  const fileKey = posix.relative(mount.mountPath, path);
  const text = cm.data?.[fileKey];
  assert.ok(text !== undefined, `ConfigMap ${vol.configMap.name} has no key ${fileKey} (the -config file ${path})`);
  return { path, text };
}

function probeTarget(c: IContainer, probe: IProbe | undefined, what: string): { port: number; path: string } {
  const get = probe?.httpGet;
  assert.ok(get, `${c.name}: ${what} is not an httpGet probe`);
  const port = containerPort(c, get.port);
  assert.ok(port !== undefined, `${c.name}: ${what} port ${get.port} is not a container port`);
  return { port, path: get.path ?? '/' };
}

/** (apiGroup, resource, verb) triples a role grants; fails on wildcards and resourceNames. */
function grants(rules: readonly IPolicyRule[] | undefined): string[] {
  const out: string[] = [];
  for (const r of rules ?? []) {
    assert.equal(r.resourceNames, undefined);
    for (const g of r.apiGroups ?? []) {
      for (const res of r.resources ?? []) {
        for (const v of r.verbs) {
          assert.ok(g !== '*' && res !== '*' && v !== '*', `wildcard in rule ${JSON.stringify(r)}`);
          out.push(`${g}/${res}:${v}`);
        }
      }
    }
  }
  return out.sort();
}

/** The ClusterRoles bound to a namespace's service account (through ClusterRoleBindings). */
function clusterRolesOf(ms: readonly Manifest[], namespace: string, sa: string): IClusterRole[] {
  return ms
    .filter((m) => m.obj.kind === 'ClusterRoleBinding')
    .map((m) => m.obj as unknown as IClusterRoleBinding)
    .filter((b) => (b.subjects ?? []).some((s) => s.kind === 'ServiceAccount' && s.name === sa && s.namespace === namespace))
    .map((b) => object<IClusterRole>(ms, 'ClusterRole', b.roleRef.name));
}

function rawSection(raw: unknown, ...path: string[]): Record<string, unknown> {
  let node = raw;
  for (const p of path) {
    assert.ok(isRecord(node) && isRecord(node[p]), `config has no section ${path.join('.')}`);
    node = node[p];
  }
  return node as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// Docs

/** Shell commands of the walk-through's ```sh blocks, continuation lines joined, comments dropped. */
function docCommands(markdown: string): string[] {
  const out: string[] = [];
  for (const block of markdown.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const joined = block[1]!.replace(/\\\n\s*/g, ' ');
    for (const line of joined.split('\n')) {
      const t = line.trim();
      if (t !== '' && !t.startsWith('#')) out.push(t.replace(/\s+/g, ' '));
    }
  }
  return out;
}

interface ExecCommand {
  namespace: string | undefined;
  target: string;
  argv: string[];
  redirect: string | undefined;
}

/** `kubectl [-n NS] exec TARGET -- BIN ARGS [> FILE]` commands running `bin`. */
function execCommands(commands: readonly string[], bin: string): ExecCommand[] {
  const out: ExecCommand[] = [];
  for (const c of commands) {
    const m = /^kubectl (?:-n (\S+) )?exec (\S+) -- (\S+)( .*)?$/.exec(c);
    if (m === null || m[3] !== bin) continue;
    let rest = (m[4] ?? '').trim();
    let redirect: string | undefined;
    const r = /^(.*?)\s*>\s*(\S+)$/.exec(rest);
    if (r !== null) {
      rest = r[1]!;
      redirect = r[2]!;
    }
    out.push({ namespace: m[1], target: m[2]!, argv: rest === '' ? [] : rest.split(' '), redirect });
  }
  return out;
}

function flagValues(argv: readonly string[], flag: string): string[] {
  const out: string[] = [];
  argv.forEach((a, i) => {
    if (a === flag && argv[i + 1] !== undefined) out.push(argv[i + 1]!);
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface DockerInstruction {
  line: number;
  op: string;
  args: string;
}

const DOCKER_OPS = new Set(['FROM', 'RUN', 'CMD', 'LABEL', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT', 'VOLUME', 'USER', 'WORKDIR', 'ARG', 'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL']);

function parseDockerfile(text: string): DockerInstruction[] {
  const out: DockerInstruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (/\\\s*$/.test(line) && i + 1 < lines.length) line = line.replace(/\\\s*$/, ' ') + lines[++i]!;
    const m = /^\s*(\S+)\s+(.*)$/.exec(line);
    assert.ok(m, `Dockerfile line ${start + 1}: expected INSTRUCTION arguments, got ${JSON.stringify(line)}`);
    out.push({ line: start + 1, op: m[1]!, args: m[2]!.trim() });
  }
  return out;
}

// =============================================================================================

const manifests = loadManifests(K8S_DIR, [HA_DIR]);
const haManifests = loadManifests(HA_DIR);
const SETS: ReadonlyArray<readonly [string, Manifest[]]> = [
  ['deploy/k8s', manifests],
  ['deploy/k8s/ha', haManifests],
];
const server = workload<IStatefulSet>(manifests, 'StatefulSet', 'spindle-server');
const agent = workload<IDaemonSet>(manifests, 'DaemonSet', 'spindle-agent');
const demo = workload<IDeployment>(manifests, 'Deployment', 'demo');
const serverContainer = mainContainer(server);
const agentContainer = mainContainer(agent);
const demoContainer = mainContainer(demo);
const serverFile = configFileOf(manifests, server, serverContainer);
const agentFile = configFileOf(manifests, agent, agentContainer);
const serverRaw = parseConfigText(serverFile.text, serverFile.path);
const agentRaw = parseConfigText(agentFile.text, agentFile.path);
const docs = readFileSync(DOCS, 'utf8');
const commands = docCommands(docs);

function serverConfig(): ServerConfig {
  return parseServerConfig(serverRaw, {}, { cwd: IMAGE_WORKDIR, configPath: serverFile.path });
}
function agentConfig(): AgentConfig {
  return parseAgentConfig(agentRaw, {}, { cwd: IMAGE_WORKDIR, configPath: agentFile.path });
}
const psatClusters = (): Record<string, unknown> => rawSection(serverRaw, 'plugins', 'NodeAttestor', 'k8s_psat', 'plugin_data', 'clusters');
const agentPsat = (): Record<string, unknown> => rawSection(agentRaw, 'plugins', 'NodeAttestor', 'k8s_psat', 'plugin_data');
const agentK8s = (): Record<string, unknown> => rawSection(agentRaw, 'plugins', 'WorkloadAttestor', 'k8s', 'plugin_data');

describe('deploy/k8s manifests are valid Kubernetes objects', () => {
  test('the files hold the expected objects', () => {
    const kinds = manifests.map((m) => `${m.obj.kind} ${key(m.obj.metadata?.namespace, m.obj.metadata?.name)}`).sort();
    assert.deepEqual(kinds, [
      'ClusterRole /spindle-agent',
      'ClusterRole /spindle-server',
      'ClusterRoleBinding /spindle-agent',
      'ClusterRoleBinding /spindle-server',
      'ConfigMap spindle/spindle-agent',
      'ConfigMap spindle/spindle-server',
      'DaemonSet spindle/spindle-agent',
      'Deployment default/demo',
      'Namespace /spindle',
      'Service spindle/spindle-server',
      'ServiceAccount default/demo',
      'ServiceAccount spindle/spindle-agent',
      'ServiceAccount spindle/spindle-server',
      'StatefulSet spindle/spindle-server',
    ]);
  });

  for (const [dir, set] of SETS) {
    test(`\`kubectl apply -f ${dir}/\` creates the namespace before what lives in it`, () => {
      // kubectl reads a directory's files in name order, not recursively.
      const top = set.filter((m) => posix.dirname(m.where.replace(/#\d+$/, '')) === dir);
      const firstNs = top.findIndex((m) => m.obj.kind === 'Namespace');
      const firstNamespaced = top.findIndex((m) => m.obj.metadata.namespace === 'spindle');
      assert.ok(firstNs >= 0 && firstNs < firstNamespaced, 'the Namespace must come first in file order');
    });

    test(`${dir}: every object passes the Kubernetes OpenAPI schema`, () => {
      const problems = set.flatMap((m) => schemaErrors(m.obj).map((e) => `${m.where} ${m.obj.kind}: ${e.instancePath} ${e.message ?? ''}`));
      assert.deepEqual(problems, []);
    });

    test(`${dir}: no object has a field the API does not know (strict field validation)`, () => {
      const problems = set.flatMap((m) => unknownFields(m.obj).map((f) => `${m.where} ${m.obj.kind} ${m.obj.metadata.name}: unknown field ${f}`));
      assert.deepEqual(problems, []);
    });

    test(`${dir}: names, labels and port names have the formats the API server requires`, () => {
      assert.deepEqual(set.flatMap(formatProblems), []);
    });

    test(`${dir}: every reference resolves: volumes, ConfigMaps, Secrets, ServiceAccounts, roles, selectors, ports`, () => {
      assert.deepEqual(referenceProblems(set), []);
    });
  }

  test('the checkers catch broken manifests', () => {
    const agentIndex = manifests.findIndex((m) => m.obj.kind === 'DaemonSet');
    const broken = (mutate: (ds: IDaemonSet) => void): Manifest[] => {
      const copy = clone(manifests);
      mutate(copy[agentIndex]!.obj as unknown as IDaemonSet);
      return copy;
    };
    const ds = (ms: Manifest[]): K8sObject => ms[agentIndex]!.obj;

    const typo = broken((d) => Object.assign(d.spec!.template.spec!, { hostPid: true }));
    assert.deepEqual(unknownFields(ds(typo)), ['/spec/template/spec/hostPid']);
    const typoInList = broken((d) => Object.assign(d.spec!.template.spec!.containers[0]!.volumeMounts![0]!, { mountpath: '/x' }));
    assert.deepEqual(unknownFields(ds(typoInList)), ['/spec/template/spec/containers/0/volumeMounts/0/mountpath']);

    const wrongType = broken((d) => Object.assign(d.spec!.template.spec!, { hostPID: 'yes' }));
    assert.match(schemaErrors(ds(wrongType)).map((e) => e.instancePath).join(), /\/spec\/template\/spec\/hostPID/);
    const missing = broken((d) => delete (d.spec!.template.spec!.volumes!.find((v) => v.hostPath)!.hostPath as { path?: string }).path);
    assert.ok(schemaErrors(ds(missing)).length > 0);

    const danglingMount = broken((d) => d.spec!.template.spec!.containers[0]!.volumeMounts!.push({ name: 'nope', mountPath: '/nope' }));
    assert.match(referenceProblems(danglingMount).join('\n'), /mounts volume nope, which is not defined/);
    const badSelector = broken((d) => (d.spec!.selector.matchLabels = { app: 'other' }));
    assert.match(referenceProblems(badSelector).join('\n'), /does not match the template labels/);
    const badSa = broken((d) => (d.spec!.template.spec!.serviceAccountName = 'nobody'));
    assert.match(referenceProblems(badSa).join('\n'), /serviceAccountName nobody is not defined/);
    const badCm = broken((d) => (d.spec!.template.spec!.volumes!.find((v) => v.name === 'config')!.configMap!.name = 'nope'));
    assert.match(referenceProblems(badCm).join('\n'), /uses ConfigMap nope, which is not defined/);
    const badProbe = broken((d) => (d.spec!.template.spec!.containers[0]!.livenessProbe!.httpGet!.port = 'nope'));
    assert.match(referenceProblems(badProbe).join('\n'), /probes port nope/);
    const badLabel = broken((d) => (d.metadata!.labels = { 'bad key!': 'x' }));
    assert.match(formatProblems(badLabel[agentIndex]!).join('\n'), /key "bad key!" is invalid/);

    // The HA set's own references: a Secret nobody creates, a budget selecting nothing, another image.
    const brokenHa = (kind: string, name: string, mutate: (o: K8sObject) => void): Manifest[] => {
      const copy = clone(haManifests);
      mutate(only(copy.filter((m) => m.obj.kind === kind && m.obj.metadata.name === name), `${kind} ${name}`).obj);
      return copy;
    };
    const sts = (o: K8sObject): IStatefulSet => o as unknown as IStatefulSet;
    const badSecret = brokenHa('StatefulSet', 'spindle-server', (o) => (sts(o).spec!.template.spec!.containers[0]!.env![0]!.valueFrom!.secretKeyRef!.name = 'nope'));
    assert.match(referenceProblems(badSecret).join('\n'), /reads Secret nope, which nobody creates/);
    const badPdb = brokenHa('PodDisruptionBudget', 'spindle-server', (o) => ((o as unknown as IPodDisruptionBudget).spec!.selector!.matchLabels = { app: 'other' }));
    assert.match(referenceProblems(badPdb).join('\n'), /PodDisruptionBudget spindle-server selects 0 workloads/);
    const badImage = brokenHa('StatefulSet', 'spindle-postgres', (o) => (sts(o).spec!.template.spec!.containers[0]!.image = 'spindle:dev'));
    assert.match(referenceProblems(badImage).join('\n'), /uses image spindle:dev, expected postgres:/);
    const badHeadless = brokenHa('Service', 'spindle-server-headless', (o) => ((o as unknown as IService).spec!.ports![0]!.targetPort = 'nope'));
    assert.match(referenceProblems(badHeadless).join('\n'), /Service port 8081 targets nope/);
  });
});

describe('the embedded configs', () => {
  test('the server config passes spindle-server config validation and plugin building', () => {
    const c = serverConfig();
    assert.equal(c.trustDomain, 'example.org');
    assert.deepEqual(
      c.plugins.nodeAttestors.map((a) => a.name),
      ['k8s_psat'],
    );
    // `spindle-server run` builds the attestors (validating plugin_data) at start; the in-cluster
    // credentials (KUBERNETES_SERVICE_HOST, the service account files) are only read when the API
    // server is first called, which this never does.
    const built = buildServerNodeAttestors(c.plugins.nodeAttestors, { env: {} });
    assert.deepEqual([...built.keys()], ['k8s_psat']);
  });

  test('the agent config passes spindle-agent config validation and plugin building', () => {
    const c = agentConfig();
    assert.equal(c.trustDomain, serverConfig().trustDomain);
    assert.equal(c.plugins.nodeAttestor.name, 'k8s_psat');
    assert.deepEqual(
      c.plugins.workloadAttestors.map((a) => a.name),
      ['k8s', 'unix'],
    );
    // Building the k8s workload attestor reads the pod's service account token (the default
    // token_path, which automounting provides in the pod): point it at a stand-in here.
    assert.equal(agentK8s()['token_path'], undefined, 'the k8s attestor uses the automounted token');
    assert.notEqual(podOf(agent).automountServiceAccountToken, false);
    const dir = mkdtempSync(join(tmpdir(), 'spindle-deploy-k8s-'));
    try {
      const tokenFile = join(dir, 'token');
      writeFileSync(tokenFile, 'stand-in-token\n');
      const raw = clone(agentRaw);
      rawSection(raw, 'plugins', 'WorkloadAttestor', 'k8s', 'plugin_data')['token_path'] = tokenFile;
      const withToken = parseAgentConfig(raw, {}, { cwd: IMAGE_WORKDIR, configPath: agentFile.path });
      const nodeNameEnv = agentK8s()['node_name_env'] as string;
      const plugins = buildAgentPlugins(withToken, { env: { [nodeNameEnv]: 'kind-control-plane' } });
      assert.ok(plugins.nodeAttestor);
      assert.equal(plugins.workloadAttestors.length, 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('every path in the configs is absolute (the image WORKDIR is not a volume)', () => {
    const paths = (text: string): string[] => [...text.matchAll(/^\s*(?:[a-z_]*_path|data_dir|connection_string|token_path):\s*(\S+)\s*$/gm)].map((m) => m[1]!);
    for (const p of [...paths(serverFile.text), ...paths(agentFile.text)]) assert.ok(p.startsWith('/'), `${p} is relative`);
  });
});

describe('spindle-server objects', () => {
  test('the data directory, keys and database are on the persistent volume; the admin socket is writable', () => {
    const c = serverConfig();
    const claim = only(server.spec?.volumeClaimTemplates ?? [], 'volumeClaimTemplate');
    const data = writableMount(server, serverContainer, c.dataDir, 'data_dir');
    assert.equal(data.name, claim.metadata?.name, 'data_dir must be on the volumeClaimTemplate');
    assert.equal(data.mountPath, c.dataDir);
    assert.equal(claim.spec?.resources?.requests?.['storage'] !== undefined, true);
    assert.deepEqual(claim.spec?.accessModes, ['ReadWriteOnce']);
    assert.equal(c.plugins.keyManager.name, 'disk');
    if (c.plugins.keyManager.name === 'disk') assert.equal(mountOf(serverContainer, c.plugins.keyManager.keysPath)?.name, claim.metadata?.name);
    assert.equal(mountOf(serverContainer, c.plugins.dataStore.connectionString)?.name, claim.metadata?.name);
    assert.equal(server.spec?.replicas, 1, 'SQLite: one server');

    writableMount(server, serverContainer, dirname(c.socketPath), 'the admin socket directory');
    // The walk-through runs `spindle-server entry ...` in the pod without -socketPath.
    assert.equal(c.socketPath, SERVER_CLI_SOCKET_PATH);
    assert.equal(serverContainer.securityContext?.readOnlyRootFilesystem, true);
  });

  test('the Service forwards the agent API port to bind_port, and the agents use that port', () => {
    const c = serverConfig();
    const svc = object<IService>(manifests, 'Service', 'spindle-server', 'spindle');
    const port = only(svc.spec?.ports ?? [], 'Service port');
    assert.equal(c.bindAddress, '0.0.0.0');
    assert.equal(containerPort(serverContainer, port.targetPort), c.bindPort);
    assert.equal(port.port, agentConfig().serverPort);
    assert.equal(server.spec?.serviceName, svc.metadata?.name);
  });

  test('liveness and readiness probe the health listener', () => {
    const h = serverConfig().healthChecks;
    assert.equal(h.listenerEnabled, true);
    assert.equal(h.bindAddress, '0.0.0.0', 'the kubelet probes the pod IP');
    assert.deepEqual(probeTarget(serverContainer, serverContainer.livenessProbe, 'livenessProbe'), { port: h.bindPort, path: h.livePath });
    assert.deepEqual(probeTarget(serverContainer, serverContainer.readinessProbe, 'readinessProbe'), { port: h.bindPort, path: h.readyPath });
  });

  test('k8s_psat accepts exactly the agents: their cluster name, service account and token audience', () => {
    const clusters = psatClusters();
    const agentPod = podOf(agent);
    const cluster = agentPsat()['cluster'];
    assert.deepEqual(Object.keys(clusters), [cluster]);
    const settings = rawSection(clusters, String(cluster));
    assert.deepEqual(settings['service_account_allow_list'], [`${agent.metadata?.namespace}:${agentPod.serviceAccountName}`]);
    const token = only(
      (agentPod.volumes ?? []).flatMap((v) => (v.projected?.sources ?? []).flatMap((s) => (s.serviceAccountToken ? [s.serviceAccountToken] : []))),
      'projected serviceAccountToken',
    );
    assert.deepEqual(settings['audience'], [token.audience]);
    assert.equal(settings['kube_config_file'], '', 'in-cluster API server');
  });

  test('RBAC: create tokenreviews, get pods and nodes, bound to the server service account', () => {
    const roles = clusterRolesOf(manifests, server.metadata!.namespace!, podOf(server).serviceAccountName!);
    assert.deepEqual(grants(roles.flatMap((r) => r.rules ?? [])), ['/nodes:get', '/pods:get', 'authentication.k8s.io/tokenreviews:create']);
  });
});

describe('spindle-agent objects', () => {
  const agentPod = podOf(agent);

  test('host access: hostPID, host network with cluster DNS', () => {
    assert.equal(agentPod.hostPID, true);
    assert.equal(agentPod.hostNetwork, true);
    assert.equal(agentPod.dnsPolicy, 'ClusterFirstWithHostNet');
  });

  test('server_address names the server Service', () => {
    const c = agentConfig();
    const svc = object<IService>(manifests, 'Service', 'spindle-server', 'spindle');
    const ns = svc.metadata!.namespace!;
    assert.ok(
      [`${svc.metadata!.name}.${ns}.svc`, `${svc.metadata!.name}.${ns}.svc.cluster.local`, ...(agent.metadata?.namespace === ns ? [svc.metadata!.name!] : [])].includes(c.serverAddress),
      `server_address ${c.serverAddress} is not the Service spindle-server`,
    );
  });

  test('the Workload API socket is in a host directory (DirectoryOrCreate) the demo workload mounts', () => {
    const c = agentConfig();
    const mount = writableMount(agent, agentContainer, c.socketPath, 'socket_path');
    assert.equal(mount.mountPath, dirname(c.socketPath));
    const hostPath = volumeOf(agent, mount)?.hostPath;
    assert.equal(hostPath?.type, 'DirectoryOrCreate');

    const demoVolume = only(
      (podOf(demo).volumes ?? []).filter((v) => v.hostPath?.path === hostPath?.path),
      'demo volume of the socket directory',
    );
    assert.equal(demoVolume.hostPath?.type, 'Directory');
    const demoMount = only(
      (demoContainer.volumeMounts ?? []).filter((m) => m.name === demoVolume.name),
      'demo mount of the socket directory',
    );
    assert.equal(demoMount.readOnly, true);
    const endpoint = (demoContainer.env ?? []).find((e) => e.name === 'SPIFFE_ENDPOINT_SOCKET')?.value;
    assert.equal(endpoint, `unix://${posix.join(demoMount.mountPath, basename(c.socketPath))}`);
  });

  test('data_dir is a writable emptyDir; the config and bundle mounts are read-only', () => {
    const c = agentConfig();
    const data = writableMount(agent, agentContainer, c.dataDir, 'data_dir');
    assert.deepEqual(volumeOf(agent, data)?.emptyDir, {});
    assert.equal(agentContainer.securityContext?.readOnlyRootFilesystem, true);
    assert.equal(mountOf(agentContainer, agentFile.path)?.readOnly, true);
    assert.equal(mountOf(agentContainer, c.trustBundlePath ?? '')?.readOnly, true);
  });

  test('k8s_psat reads the projected token: audience spindle-server, short-lived', () => {
    const tokenPath = String(agentPsat()['token_path']);
    const mount = mountOf(agentContainer, tokenPath);
    const source = only(volumeOf(agent, mount)?.projected?.sources ?? [], 'projected source').serviceAccountToken;
    assert.ok(mount && source, `token_path ${tokenPath} is not a projected service account token`);
    assert.equal(posix.join(mount.mountPath, source.path), tokenPath);
    assert.equal(source.audience, 'spindle-server');
    assert.ok(source.expirationSeconds !== undefined && source.expirationSeconds >= 600 && source.expirationSeconds <= 7200, `expirationSeconds ${source.expirationSeconds}`);
  });

  test('the first contact with the server is verified with the spindle-bundle ConfigMap', () => {
    const c = agentConfig();
    assert.equal(c.insecureBootstrap, false);
    const mount = mountOf(agentContainer, c.trustBundlePath ?? '');
    const cmName = volumeOf(agent, mount)?.configMap?.name;
    assert.ok(mount && cmName && ADMIN_CREATED_CONFIGMAPS.has(key(agent.metadata?.namespace, cmName)), `trust_bundle_path ${c.trustBundlePath} is not in the bundle ConfigMap`);
    const fileKey = posix.relative(mount.mountPath, c.trustBundlePath!);
    // The walk-through creates it with that name and key.
    const create = commands.filter((cmd) => cmd.startsWith(`kubectl -n ${agent.metadata?.namespace} create configmap ${cmName} `));
    assert.ok(create.length > 0, `docs/kubernetes.md does not create ConfigMap ${cmName}`);
    for (const cmd of create) assert.match(cmd, new RegExp(` --from-file=${fileKey.replace('.', '\\.')}=`));
  });

  test('the k8s workload attestor gets the node name from the downward API', () => {
    const nodeNameEnv = agentK8s()['node_name_env'];
    const env = (agentContainer.env ?? []).find((e) => e.name === nodeNameEnv);
    assert.equal(env?.valueFrom?.fieldRef?.fieldPath, 'spec.nodeName');
  });

  test('liveness and readiness probe the health listener', () => {
    const h = agentConfig().healthChecks;
    assert.equal(h.listenerEnabled, true);
    assert.equal(h.bindAddress, '0.0.0.0', 'the kubelet probes the node IP (host network)');
    // On the host network: not a port the node's own components listen on.
    assert.ok(![2379, 2380, 6443, 10248, 10249, 10250, 10256, 10257, 10259].includes(h.bindPort), `health port ${h.bindPort} is a node component's`);
    assert.deepEqual(probeTarget(agentContainer, agentContainer.livenessProbe, 'livenessProbe'), { port: h.bindPort, path: h.livePath });
    assert.deepEqual(probeTarget(agentContainer, agentContainer.readinessProbe, 'readinessProbe'), { port: h.bindPort, path: h.readyPath });
  });

  test('RBAC: get pods, nodes and nodes/proxy, bound to the agent service account', () => {
    const roles = clusterRolesOf(manifests, agent.metadata!.namespace!, agentPod.serviceAccountName!);
    assert.deepEqual(grants(roles.flatMap((r) => r.rules ?? [])), ['/nodes/proxy:get', '/nodes:get', '/pods:get']);
  });

  test('the demo workload runs as its own service account, without API credentials', () => {
    const pod = podOf(demo);
    assert.equal(pod.serviceAccountName, 'demo');
    assert.equal(pod.automountServiceAccountToken, false);
    object<IServiceAccount>(manifests, 'ServiceAccount', 'demo', demo.metadata?.namespace);
  });
});

describe('the walk-through (docs/kubernetes.md)', () => {
  const serverExecs = execCommands(commands, 'spindle-server');
  const entryCreates = serverExecs.filter((e) => e.argv[0] === 'entry' && e.argv[1] === 'create');
  const alias = only(
    entryCreates.filter((e) => e.argv.includes('-node')),
    'node alias command',
  );
  const workloadEntry = only(
    entryCreates.filter((e) => !e.argv.includes('-node')),
    'workload entry command',
  );
  let proc: ServerProcess | undefined;

  before(async () => {
    proc = await startServerProcess({ trustDomain: serverConfig().trustDomain });
  });
  after(async () => {
    await proc?.stop();
    if (proc !== undefined) rmSync(proc.dir, { recursive: true, force: true });
  });

  test('admin commands run in the server pod', () => {
    assert.ok(serverExecs.length >= 5);
    // spindle-server-0, or with the HA set any of its replicas.
    const pods = Array.from({ length: Math.max(server.spec?.replicas ?? 1, haServer.spec?.replicas ?? 1) }, (_, i) => `${server.metadata?.name}-${i}`);
    for (const e of serverExecs) {
      assert.equal(e.namespace, server.metadata?.namespace);
      assert.ok(pods.includes(e.target), `kubectl exec ${e.target}: not one of ${pods.join(', ')}`);
    }
  });

  test('the registration selectors and IDs are the manifests\'', () => {
    const td = serverConfig().trustDomain;
    const cluster = String(agentPsat()['cluster']);
    assert.deepEqual(flagValues(alias.argv, '-selector'), [`k8s_psat:cluster:${cluster}`]);
    assert.deepEqual(flagValues(alias.argv, '-parentID'), [], '-node sets the parent (the CLI rejects both)');
    const aliasId = only(flagValues(alias.argv, '-spiffeID'), 'alias -spiffeID');
    assert.ok(aliasId.startsWith(`spiffe://${td}/`));
    assert.deepEqual(flagValues(workloadEntry.argv, '-parentID'), [aliasId]);
    assert.deepEqual(flagValues(workloadEntry.argv, '-selector'), [`k8s:ns:${demo.metadata?.namespace}`, `k8s:sa:${podOf(demo).serviceAccountName}`]);
  });

  test('the admin commands run as written against a real spindle-server', () => {
    assert.ok(proc);
    const outputs = new Map<string, string>();
    for (const e of serverExecs) {
      const r = proc.cli(e.argv);
      assert.equal(r.status, 0, `spindle-server ${e.argv.join(' ')} failed:\n${r.stderr}`);
      outputs.set(e.argv.slice(0, 2).join(' '), r.stdout);
    }
    assert.match(outputs.get('healthcheck') ?? '', /Server is healthy/);
    assert.match(outputs.get('bundle show') ?? '', /^-----BEGIN CERTIFICATE-----\n/, 'bundle.crt must be PEM (trust_bundle_format pem)');
    const shown = proc.cli(['entry', 'show', '-output', 'json']);
    assert.equal(shown.status, 0, shown.stderr);
    type ShownEntry = { spiffeId: string; parentId: string; selectors: Array<{ type: string; value: string }> };
    const entries = (JSON.parse(shown.stdout) as { entries: ShownEntry[] }).entries;
    const td = serverConfig().trustDomain;
    const aliasId = only(flagValues(alias.argv, '-spiffeID'), 'alias id');
    const workloadId = only(flagValues(workloadEntry.argv, '-spiffeID'), 'workload id');
    const summary = (x: ShownEntry): string => `${x.spiffeId} <- ${x.parentId} [${x.selectors.map((s) => `${s.type}:${s.value}`).join(' ')}]`;
    assert.deepEqual(
      entries.map(summary).sort(),
      [
        `${aliasId} <- spiffe://${td}/spire/server [${flagValues(alias.argv, '-selector').join(' ')}]`,
        `${workloadId} <- ${aliasId} [${flagValues(workloadEntry.argv, '-selector').join(' ')}]`,
      ].sort(),
    );
  });

  test('the workload fetches from the socket path the demo pod mounts', () => {
    const fetches = execCommands(commands, 'spindle-agent').filter((e) => e.argv.slice(0, 3).join(' ') === 'api fetch x509');
    assert.ok(fetches.length > 0);
    const c = agentConfig();
    for (const f of fetches) {
      assert.equal(f.target, `deploy/${demo.metadata?.name}`);
      const socket = only(flagValues(f.argv, '-socketPath'), '-socketPath');
      const mount = mountOf(demoContainer, socket);
      assert.ok(mount, `${socket} is not mounted in the demo pod`);
      assert.equal(volumeOf(demo, mount)?.hostPath?.path, posix.dirname(c.socketPath));
      assert.equal(basename(socket), basename(c.socketPath));
    }
  });

  test('the image build and load commands name the manifests\' image and Dockerfile', () => {
    assert.ok(commands.includes(`docker build -f deploy/k8s/Dockerfile -t ${IMAGE} .`));
    assert.ok(commands.some((c) => c.startsWith(`kind load docker-image ${IMAGE}`)));
    assert.ok(commands.includes('kubectl apply -f deploy/k8s/'));
    assert.ok(commands.includes('kubectl apply -f deploy/k8s/demo/'));
  });
});

// =============================================================================================
// deploy/k8s/ha: three servers on PostgreSQL

const haServer = workload<IStatefulSet>(haManifests, 'StatefulSet', 'spindle-server');
const haAgent = workload<IDaemonSet>(haManifests, 'DaemonSet', 'spindle-agent');
const haPostgres = workload<IStatefulSet>(haManifests, 'StatefulSet', 'spindle-postgres');
const haServerContainer = mainContainer(haServer);
const haAgentContainer = mainContainer(haAgent);
const haPostgresContainer = mainContainer(haPostgres);
const haServerFile = configFileOf(haManifests, haServer, haServerContainer);
const haAgentFile = configFileOf(haManifests, haAgent, haAgentContainer);
const haAgentRaw = parseConfigText(haAgentFile.text, haAgentFile.path);
/** A stand-in for the Secret's connection string: what the walk-through creates, with a password. */
const SAMPLE_PASSWORD = 'sample-password-0123';

/** The env var of `c` read from `secret`'s `secretKey` (one, by secretKeyRef). */
function secretEnv(c: IContainer, secret: string, secretKey: string): string {
  return only(
    (c.env ?? []).filter((e) => e.valueFrom?.secretKeyRef?.name === secret && e.valueFrom.secretKeyRef.key === secretKey),
    `env of ${c.name} from Secret ${secret} key ${secretKey}`,
  ).name;
}

/** `--from-literal=KEY=VALUE` pairs of the walk-through's `kubectl create secret generic NAME`. */
function secretLiterals(name: string, namespace: string): Map<string, string> {
  const create = only(
    commands.filter((c) => c.startsWith(`kubectl -n ${namespace} create secret generic ${name} `)),
    `docs command creating Secret ${name}`,
  );
  const out = new Map<string, string>();
  for (const m of create.matchAll(/--from-literal=([-._A-Za-z0-9]+)=(?:"([^"]*)"|(\S+))/g)) out.set(m[1]!, m[2] ?? m[3]!);
  return out;
}

/** The env the HA server container gets: the Secret's connection string, as the walk-through makes it. */
function haServerEnv(): Record<string, string> {
  const literals = secretLiterals('spindle-datastore', haServer.metadata!.namespace!);
  const connection = literals.get('connection-string');
  assert.ok(connection !== undefined, 'the walk-through does not set connection-string');
  // The shell variable holding the generated password.
  const withPassword = connection.replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, SAMPLE_PASSWORD);
  return { [secretEnv(haServerContainer, 'spindle-datastore', 'connection-string')]: withPassword };
}

function haServerRaw(): unknown {
  const args = [...(haServerContainer.command ?? []), ...(haServerContainer.args ?? [])];
  assert.ok(args.includes('-expandEnv'), `the server reads its connection string from the environment: -expandEnv is missing from ${JSON.stringify(args)}`);
  return parseConfigText(expandEnv(haServerFile.text, haServerEnv()), haServerFile.path);
}

function haServerConfig(): ServerConfig {
  return parseServerConfig(haServerRaw(), {}, { cwd: IMAGE_WORKDIR, configPath: haServerFile.path });
}
function haAgentConfig(): AgentConfig {
  return parseAgentConfig(haAgentRaw, {}, { cwd: IMAGE_WORKDIR, configPath: haAgentFile.path });
}

/** A raw config without the listed top-level-path sections, for comparing the rest. */
function without(raw: unknown, ...paths: string[][]): unknown {
  const copy = clone(raw);
  for (const path of paths) delete rawSection(copy, ...path.slice(0, -1))[path[path.length - 1]!];
  return copy;
}

describe('deploy/k8s/ha: three servers on PostgreSQL', () => {
  test('the files hold the expected objects', () => {
    const kinds = haManifests.map((m) => `${m.obj.kind} ${key(m.obj.metadata?.namespace, m.obj.metadata?.name)}`).sort();
    assert.deepEqual(kinds, [
      'ClusterRole /spindle-agent',
      'ClusterRole /spindle-server',
      'ClusterRoleBinding /spindle-agent',
      'ClusterRoleBinding /spindle-server',
      'ConfigMap spindle/spindle-agent',
      'ConfigMap spindle/spindle-server',
      'DaemonSet spindle/spindle-agent',
      'Namespace /spindle',
      'PodDisruptionBudget spindle/spindle-server',
      'Service spindle/spindle-postgres',
      'Service spindle/spindle-server',
      'Service spindle/spindle-server-headless',
      'ServiceAccount spindle/spindle-agent',
      'ServiceAccount spindle/spindle-postgres',
      'ServiceAccount spindle/spindle-server',
      'StatefulSet spindle/spindle-postgres',
      'StatefulSet spindle/spindle-server',
    ]);
  });

  test('the namespace, RBAC and agent objects are the single-server ones, but for server_address', () => {
    const same = (kind: string, name: string, namespace?: string): void =>
      assert.deepEqual(object(haManifests, kind, name, namespace), object(manifests, kind, name, namespace), `${kind} ${key(namespace, name)} differs from the single-server one`);
    same('Namespace', 'spindle');
    for (const n of ['spindle-server', 'spindle-agent']) {
      same('ServiceAccount', n, 'spindle');
      same('ClusterRole', n);
      same('ClusterRoleBinding', n);
    }
    same('DaemonSet', 'spindle-agent', 'spindle');
    assert.deepEqual(without(haAgentRaw, ['agent', 'server_address']), without(agentRaw, ['agent', 'server_address']));
    assert.notEqual(haAgentConfig().serverAddress, agentConfig().serverAddress);
  });

  test('the server config is the single-server one but for the datastore, which is PostgreSQL from a Secret', async () => {
    const c = haServerConfig();
    assert.deepEqual(without(haServerRaw(), ['plugins', 'DataStore']), without(serverRaw, ['plugins', 'DataStore']));
    const ds = c.plugins.dataStore;
    assert.equal(ds.databaseType, 'postgres');
    assert.equal(ds.disableMigration ?? false, false, 'the servers migrate the schema (once, under an advisory lock)');
    // The whole connection string is the Secret's, through -expandEnv.
    const envName = secretEnv(haServerContainer, 'spindle-datastore', 'connection-string');
    assert.match(haServerFile.text, new RegExp(`connection_string: "\\$\\{${envName}\\}"`));
    assert.equal(ds.connectionString, haServerEnv()[envName]);
    // It parses as the PostgreSQL datastore reads it; the description never shows the password.
    const { description, secrets } = await describeDataStore(ds);
    assert.ok(secrets.includes(SAMPLE_PASSWORD));
    assert.ok(!description.includes(SAMPLE_PASSWORD));
  });

  test('three replicas, each with its own volume for data_dir (server_id, CA keys), on different nodes', () => {
    const c = haServerConfig();
    assert.equal(haServer.spec?.replicas, 3);
    assert.equal(haServer.spec?.podManagementPolicy, 'Parallel');
    const claim = only(haServer.spec?.volumeClaimTemplates ?? [], 'volumeClaimTemplate');
    const data = writableMount(haServer, haServerContainer, c.dataDir, 'data_dir');
    assert.equal(data.name, claim.metadata?.name, 'data_dir must be on the volumeClaimTemplate (one volume per replica)');
    assert.deepEqual(claim.spec?.accessModes, ['ReadWriteOnce']);
    assert.equal(c.plugins.keyManager.name, 'disk');
    if (c.plugins.keyManager.name === 'disk') assert.equal(mountOf(haServerContainer, c.plugins.keyManager.keysPath)?.name, claim.metadata?.name);
    writableMount(haServer, haServerContainer, dirname(c.socketPath), 'the admin socket directory');
    assert.equal(c.socketPath, SERVER_CLI_SOCKET_PATH);

    const labels = haServer.spec?.template.metadata?.labels ?? {};
    const anti = podOf(haServer).affinity?.podAntiAffinity;
    const terms = [
      ...(anti?.requiredDuringSchedulingIgnoredDuringExecution ?? []),
      ...(anti?.preferredDuringSchedulingIgnoredDuringExecution ?? []).map((w) => w.podAffinityTerm),
    ];
    assert.ok(
      terms.some((t) => t.topologyKey === 'kubernetes.io/hostname' && labelsMatch(t.labelSelector?.matchLabels ?? {}, labels)),
      'no pod anti-affinity between the server pods on kubernetes.io/hostname',
    );
  });

  test('a headless Service lists every server for the agents (ready or not: a server serves agents while its database is down); a regular one load-balances', () => {
    const c = haServerConfig();
    const headless = object<IService>(haManifests, 'Service', 'spindle-server-headless', 'spindle');
    const regular = object<IService>(haManifests, 'Service', 'spindle-server', 'spindle');
    assert.equal(headless.spec?.clusterIP, 'None');
    assert.equal(headless.spec?.publishNotReadyAddresses, true, 'agents must find servers that fail /ready only because PostgreSQL is down');
    assert.equal(haServer.spec?.serviceName, headless.metadata?.name, 'the governing Service is the headless one');
    assert.notEqual(regular.spec?.clusterIP, 'None');
    for (const svc of [headless, regular]) {
      const port = only(svc.spec?.ports ?? [], 'Service port');
      assert.equal(containerPort(haServerContainer, port.targetPort), c.bindPort);
      assert.equal(port.port, haAgentConfig().serverPort);
    }
    const a = haAgentConfig();
    const ns = headless.metadata!.namespace!;
    assert.ok(
      [`${headless.metadata!.name}.${ns}.svc`, `${headless.metadata!.name}.${ns}.svc.cluster.local`].includes(a.serverAddress),
      `server_address ${a.serverAddress} is not the headless Service`,
    );
  });

  test('the PodDisruptionBudget keeps all but one server up', () => {
    const pdb = object<IPodDisruptionBudget>(haManifests, 'PodDisruptionBudget', 'spindle-server', 'spindle');
    assert.ok(labelsMatch(pdb.spec?.selector?.matchLabels ?? {}, haServer.spec?.template.metadata?.labels ?? {}));
    const replicas = haServer.spec?.replicas ?? 0;
    const maxUnavailable = pdb.spec?.maxUnavailable ?? replicas - Number(pdb.spec?.minAvailable ?? 0);
    assert.equal(maxUnavailable, 1);
  });

  test('the trial PostgreSQL matches the Secret the walk-through creates, and has connections for every server', async () => {
    const namespace = haPostgres.metadata!.namespace!;
    const literals = secretLiterals('spindle-datastore', namespace);
    // Every key the pods read is created, and nothing else.
    const read = [...haServerContainer.env ?? [], ...haPostgresContainer.env ?? []].flatMap((e) => (e.valueFrom?.secretKeyRef ? [e.valueFrom.secretKeyRef.key] : [])).sort();
    assert.deepEqual([...literals.keys()].sort(), read);
    const env = new Map((haPostgresContainer.env ?? []).map((e) => [e.name, e.value]));
    const svc = object<IService>(haManifests, 'Service', 'spindle-postgres', namespace);
    const port = only(svc.spec?.ports ?? [], 'postgres Service port');
    assert.equal(containerPort(haPostgresContainer, port.targetPort), 5432);
    const { description } = await describeDataStore(haServerConfig().plugins.dataStore);
    assert.equal(description, `PostgreSQL (host=${svc.metadata!.name}.${namespace}.svc port=${port.port} dbname=${env.get('POSTGRES_DB')} user=${env.get('POSTGRES_USER')})`);
    // The same generated password for PostgreSQL and in the connection string.
    const password = literals.get('postgres-password');
    assert.match(password ?? '', /^"?\$\{?[A-Za-z_]\w*\}?"?$/, 'the password is generated in the walk-through, never written in it');
    assert.equal(haServerEnv()[secretEnv(haServerContainer, 'spindle-datastore', 'connection-string')], literals.get('connection-string')!.replace(password!.replace(/"/g, ''), SAMPLE_PASSWORD));
    assert.equal(secretEnv(haPostgresContainer, 'spindle-datastore', 'postgres-password'), 'POSTGRES_PASSWORD');
    assert.equal(mountOf(haPostgresContainer, env.get('PGDATA') ?? '')?.name, only(haPostgres.spec?.volumeClaimTemplates ?? [], 'postgres volume').metadata?.name);

    // max_connections covers every server's pool and its listening connection.
    const args = haPostgresContainer.args ?? [];
    const maxConnections = Number(/^max_connections=(\d+)$/.exec(args[args.indexOf('-c') + 1] ?? '')?.[1] ?? 100);
    const perServer = (haServerConfig().plugins.dataStore.maxOpenConns || 10) + 1;
    assert.ok((haServer.spec?.replicas ?? 0) * perServer + 10 <= maxConnections, `${haServer.spec?.replicas} servers x ${perServer} connections do not fit in max_connections ${maxConnections}`);
  });

  test('the walk-through installs the HA set and makes the bundle once every server runs', () => {
    assert.ok(commands.includes('kubectl apply -f deploy/k8s/ha/'));
    const i = commands.indexOf('kubectl apply -f deploy/k8s/ha/');
    const secret = commands.findIndex((c) => c.startsWith('kubectl -n spindle create secret generic spindle-datastore '));
    assert.ok(secret >= 0 && secret < i, 'the Secret is created before the manifests are applied');
    const rollout = commands.findIndex((c, j) => j > i && c.startsWith('kubectl -n spindle rollout status statefulset/spindle-server'));
    const bundle = commands.findIndex((c, j) => j > i && c.startsWith('kubectl -n spindle exec spindle-server-0 -- spindle-server bundle show'));
    assert.ok(rollout > i && bundle > rollout, 'the bundle ConfigMap must be made after every server has published its CA (rollout status first)');
  });
});

describe('deploy/k8s/Dockerfile', () => {
  const text = readFileSync(join(K8S_DIR, 'Dockerfile'), 'utf8');
  const instructions = parseDockerfile(text);

  test('is well-formed: known instructions, FROM first, COPY --from names an earlier stage', () => {
    for (const i of instructions) assert.ok(DOCKER_OPS.has(i.op), `line ${i.line}: unknown instruction ${i.op}`);
    assert.equal(instructions.find((i) => i.op !== 'ARG')?.op, 'FROM');
    const stages: string[] = [];
    for (const i of instructions) {
      if (i.op === 'FROM') {
        const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args);
        assert.ok(m, `line ${i.line}: FROM ${i.args}`);
        assert.match(m[1]!, /^node:20[.-]/, 'Node 20, as package.json engines');
        if (m[2] !== undefined) stages.push(m[2]);
      }
      const from = /--from=(\S+)/.exec(i.args)?.[1];
      if (i.op === 'COPY' && from !== undefined) assert.ok(stages.includes(from), `line ${i.line}: stage ${from} is not defined before`);
      if (i.op === 'CMD' || i.op === 'ENTRYPOINT') assert.doesNotThrow(() => JSON.parse(i.args), `line ${i.line}: use the JSON (exec) form`);
    }
  });

  test('copies what the build stage produced, from paths that exist after `npm install`', () => {
    const workdir = instructions.find((i) => i.op === 'WORKDIR')?.args;
    assert.equal(workdir, '/src');
    const copied = instructions.filter((i) => i.op === 'COPY' && i.args.startsWith('--from=build '));
    assert.ok(copied.length > 0);
    for (const i of copied) {
      const src = i.args.replace('--from=build ', '').split(/\s+/)[0] ?? '';
      assert.ok(src.startsWith('/src/'), `line ${i.line}: ${src} is not under the build WORKDIR`);
      assert.ok(existsSync(join(ROOT, src.slice('/src/'.length))), `line ${i.line}: ${src} does not exist in a built checkout`);
    }
    // What the runtime loads besides dist/ and node_modules/.
    const sources = copied.map((i) => i.args.split(/\s+/)[1]);
    for (const needed of ['/src/package.json', '/src/bin', '/src/proto', '/src/dist', '/src/node_modules', '/src/agent/native/peercred/build/Release/peercred.node']) {
      assert.ok(sources.includes(needed), `the runtime stage does not copy ${needed}`);
    }
  });

  test('puts every command the manifests run on PATH', () => {
    const run = instructions.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
    const cmds = new Set(podTemplates(manifests).flatMap((t) => containersOf(t.pod).map((c) => c.command?.[0] ?? '')));
    for (const cmd of cmds) {
      if (cmd === 'sleep') continue; // coreutils, in the base image
      assert.ok(run.includes(`/usr/local/bin/${cmd}`), `${cmd} is not linked into /usr/local/bin`);
      assert.ok((statSync(join(ROOT, 'bin', cmd)).mode & 0o111) !== 0, `bin/${cmd} is not executable`);
    }
  });

  test('the build context leaves out local builds and dependencies', () => {
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const p of ['node_modules', 'dist', 'agent/native/peercred/build', '.git']) assert.ok(ignored.includes(p), `.dockerignore lacks ${p}`);
  });
});
