/**
 * Where the Kubernetes API server is and how to authenticate to it, as a `KubeTarget` for
 * `kubeRequest`: from a kubeconfig file (its current context) or from the in-cluster
 * service-account mount, the two ways client-go (and so SPIRE) configures a client.
 *
 * Supported kubeconfig settings: cluster `server` (https only, a path prefix is kept),
 * `certificate-authority` / `certificate-authority-data`, `insecure-skip-tls-verify`,
 * `tls-server-name`; user `token`, `tokenFile` (re-read per request, and preferred over
 * `token`, as client-go does), `client-certificate(-data)` + `client-key(-data)`. Relative file
 * paths are resolved against the kubeconfig's directory. Credential plugins (`exec`,
 * `auth-provider`), basic auth and impersonation are refused with a clear error rather than
 * silently sending unauthenticated requests.
 *
 * Errors are KubeConfigError naming the file and the setting; they never contain token or key
 * contents. File reads here are synchronous (small local files, read at configuration and
 * attestation time); the bearer token is read asynchronously on every request.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { KubeTarget } from './http.js';

export class KubeConfigError extends Error {
  readonly code = 'ERR_KUBE_CONFIG';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KubeConfigError';
  }
}

/** Reads a whole file (sync); injectable for tests. */
export type ReadFileSyncFn = (path: string) => Buffer;
/** Reads a whole file (async), used for bearer tokens on each request; injectable for tests. */
export type ReadFileAsyncFn = (path: string) => Promise<Buffer>;

export interface KubeFileAccess {
  readFileSync?: ReadFileSyncFn;
  readFile?: ReadFileAsyncFn;
}

const defaultReadSync: ReadFileSyncFn = (p) => readFileSync(p);
const defaultReadAsync: ReadFileAsyncFn = (p) => readFile(p);

// ---------------------------------------------------------------------------------------------
// In-cluster

/** Where Kubernetes mounts a pod's service-account token, CA and namespace. */
export const IN_CLUSTER_SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface InClusterOptions extends KubeFileAccess {
  /** The process environment (KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT). */
  env: Readonly<Record<string, string | undefined>>;
  /** Default IN_CLUSTER_SERVICE_ACCOUNT_DIR. */
  serviceAccountDir?: string;
}

/**
 * The in-cluster target: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` (an IPv6
 * host in brackets), the CA from `<dir>/ca.crt` (read now), and the token from `<dir>/token`
 * (checked now, then re-read on every request since it is rotated by the kubelet).
 */
export function inClusterTarget(opts: InClusterOptions): KubeTarget {
  const host = opts.env.KUBERNETES_SERVICE_HOST ?? '';
  const port = opts.env.KUBERNETES_SERVICE_PORT ?? '';
  if (host === '' || port === '') {
    throw new KubeConfigError(
      'in-cluster configuration needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT in the environment (is this running in a pod?); set kube_config_file when running outside the cluster',
    );
  }
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
    throw new KubeConfigError(`in-cluster configuration: KUBERNETES_SERVICE_PORT is not a port number: ${JSON.stringify(port.slice(0, 50))}`);
  }
  const hostPart = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  const baseUrl = `https://${hostPart}:${port}`;
  try {
    new URL(baseUrl);
  } catch {
    throw new KubeConfigError(`in-cluster configuration: KUBERNETES_SERVICE_HOST is not a valid host: ${JSON.stringify(host.slice(0, 100))}`);
  }
  const dir = opts.serviceAccountDir ?? IN_CLUSTER_SERVICE_ACCOUNT_DIR;
  const readSync = opts.readFileSync ?? defaultReadSync;
  const tokenPath = join(dir, 'token');
  const caPath = join(dir, 'ca.crt');
  const ca = readOrThrow(readSync, caPath, 'in-cluster CA certificate');
  if (!looksLikePem(ca, 'CERTIFICATE')) throw new KubeConfigError(`in-cluster CA certificate ${caPath} holds no PEM certificate`);
  // client-go fails at configuration time when the token cannot be read; so do we.
  readOrThrow(readSync, tokenPath, 'in-cluster service-account token');
  return { baseUrl, ca, token: tokenFileReader(tokenPath, opts.readFile ?? defaultReadAsync) };
}

// ---------------------------------------------------------------------------------------------
// kubeconfig

export interface KubeconfigOptions extends KubeFileAccess {
  /** Use this context instead of `current-context`. */
  context?: string;
}

/** Reads a kubeconfig file and returns the target of its current context. */
export function loadKubeconfig(path: string, opts: KubeconfigOptions = {}): KubeTarget {
  const readSync = opts.readFileSync ?? defaultReadSync;
  const text = readOrThrow(readSync, path, 'kubeconfig').toString('utf8');
  return parseKubeconfig(text, path, opts);
}

type Map_ = Record<string, unknown>;

function isMap(v: unknown): v is Map_ {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Parses kubeconfig text. `path` names the file in errors, and its directory is the base for
 * relative file paths in it.
 */
export function parseKubeconfig(text: string, path: string, opts: KubeconfigOptions = {}): KubeTarget {
  const fail = (what: string): never => {
    throw new KubeConfigError(`kubeconfig ${path}: ${what}`);
  };
  let doc: unknown;
  try {
    doc = parseYaml(text, { uniqueKeys: false, maxAliasCount: 100 });
  } catch (err) {
    throw new KubeConfigError(`kubeconfig ${path}: invalid YAML: ${String((err as Error).message).split('\n')[0]}`, { cause: err });
  }
  if (!isMap(doc)) fail('expected a map (apiVersion, clusters, contexts, users, current-context)');
  const root = doc as Map_;
  const baseDir = dirname(resolve(path));
  const readSync = opts.readFileSync ?? defaultReadSync;
  const readAsync = opts.readFile ?? defaultReadAsync;
  const readIn = (p: string, what: string): Buffer => readOrThrow(readSync, p, what, path);

  const contextName = opts.context ?? str(root['current-context'], 'current-context', fail);
  if (contextName === undefined || contextName === '') fail('current-context is not set');
  const context = named(root, 'contexts', 'context', contextName!, fail);
  const clusterName = str(context.value.cluster, `${context.where}.cluster`, fail);
  const userName = str(context.value.user, `${context.where}.user`, fail);
  if (clusterName === undefined || clusterName === '') fail(`${context.where}.cluster is not set`);
  const cluster = named(root, 'clusters', 'cluster', clusterName!, fail);
  const c = cluster.value;
  const cw = cluster.where;

  // ---- cluster
  const server = str(c.server, `${cw}.server`, fail);
  if (server === undefined || server === '') fail(`${cw}.server is not set`);
  let url: URL;
  try {
    url = new URL(server!);
  } catch {
    return fail(`${cw}.server is not a URL: ${JSON.stringify(server!.slice(0, 200))}`);
  }
  if (url.protocol !== 'https:') fail(`${cw}.server must be an https URL, got ${JSON.stringify(server!.slice(0, 200))}`);
  if (url.username !== '' || url.password !== '') fail(`${cw}.server must not contain credentials`);
  if (url.search !== '' || url.hash !== '') fail(`${cw}.server must not have a query or fragment`);
  if (c['proxy-url'] !== undefined && c['proxy-url'] !== '') fail(`${cw}.proxy-url: proxies are not supported`);
  const target: KubeTarget = { baseUrl: `${url.origin}${url.pathname.replace(/\/+$/, '')}` };

  const insecure = bool(c['insecure-skip-tls-verify'], `${cw}.insecure-skip-tls-verify`, fail);
  const ca = fileOrData(c, 'certificate-authority', cw, baseDir, readIn, fail);
  if (ca !== undefined) {
    if (!looksLikePem(ca, 'CERTIFICATE')) fail(`${cw}.certificate-authority${c['certificate-authority-data'] ? '-data' : ''} holds no PEM certificate`);
    if (insecure) fail(`${cw}: certificate-authority and insecure-skip-tls-verify cannot both be set`);
    target.ca = ca;
  }
  if (insecure) target.insecureSkipVerify = true;
  const tlsServerName = str(c['tls-server-name'], `${cw}.tls-server-name`, fail);
  if (tlsServerName) target.servername = tlsServerName;

  // ---- user
  if (userName === undefined || userName === '') return target; // no credentials (e.g. anonymous)
  const user = named(root, 'users', 'user', userName, fail);
  const u = user.value;
  const uw = user.where;
  if (u.exec !== undefined && u.exec !== null) fail(`${uw}.exec: exec credential plugins are not supported; use token, tokenFile or a client certificate`);
  if (u['auth-provider'] !== undefined && u['auth-provider'] !== null) fail(`${uw}.auth-provider: auth provider plugins are not supported; use token, tokenFile or a client certificate`);
  if (nonEmpty(u.username) || nonEmpty(u.password)) fail(`${uw}: username/password (basic auth) is not supported; use token, tokenFile or a client certificate`);
  for (const k of ['as', 'as-uid', 'as-groups', 'as-user-extra']) {
    if (nonEmpty(u[k])) fail(`${uw}.${k}: impersonation is not supported`);
  }

  const token = str(u.token, `${uw}.token`, fail);
  const tokenFile = str(u.tokenFile, `${uw}.tokenFile`, fail);
  if (tokenFile) {
    const p = resolveAgainst(baseDir, tokenFile);
    readIn(p, `${uw}.tokenFile`);
    target.token = tokenFileReader(p, readAsync);
  } else if (token) {
    const t = token.trim();
    target.token = () => t;
  }

  const cert = fileOrData(u, 'client-certificate', uw, baseDir, readIn, fail);
  const key = fileOrData(u, 'client-key', uw, baseDir, readIn, fail);
  if ((cert === undefined) !== (key === undefined)) fail(`${uw}: client-certificate and client-key must be given together`);
  if (cert !== undefined && key !== undefined) {
    if (!looksLikePem(cert, 'CERTIFICATE')) fail(`${uw}.client-certificate holds no PEM certificate`);
    if (!looksLikePem(key, 'PRIVATE KEY')) fail(`${uw}.client-key holds no PEM private key`);
    target.cert = cert;
    target.key = key;
  }
  return target;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function tokenFileReader(path: string, read: ReadFileAsyncFn): () => Promise<string> {
  return async () => {
    let data: Buffer;
    try {
      data = await read(path);
    } catch (err) {
      throw new KubeConfigError(`cannot read bearer token file ${path}: ${errText(err)}`, { cause: err });
    }
    const t = data.toString('utf8').trim();
    if (t === '') throw new KubeConfigError(`bearer token file ${path} is empty`);
    return t;
  };
}

function errText(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'file not found';
  if (code === 'EACCES') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory';
  return (err as Error).message;
}

function readOrThrow(read: ReadFileSyncFn, path: string, what: string, inFile?: string): Buffer {
  try {
    return read(path);
  } catch (err) {
    const where = inFile ? `kubeconfig ${inFile}: ${what}` : what;
    throw new KubeConfigError(`${where}: cannot read ${path}: ${errText(err)}`, { cause: err });
  }
}

function resolveAgainst(baseDir: string, p: string): string {
  return isAbsolute(p) ? p : join(baseDir, p);
}

function looksLikePem(data: Buffer, label: string): boolean {
  const s = data.toString('latin1');
  return s.includes('-----BEGIN ') && s.includes(`${label}-----`);
}

function nonEmpty(v: unknown): boolean {
  if (v === undefined || v === null || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (isMap(v)) return Object.keys(v).length > 0;
  return true;
}

function str(v: unknown, where: string, fail: (what: string) => never): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') fail(`${where}: expected a string`);
  return v as string;
}

function bool(v: unknown, where: string, fail: (what: string) => never): boolean {
  if (v === undefined || v === null) return false;
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === 'false') return v === 'true';
  return fail(`${where}: expected true or false`);
}

/** The entry `{name, <field>: {...}}` of list `listKey` named `name`. */
function named(root: Map_, listKey: string, field: string, name: string, fail: (what: string) => never): { value: Map_; where: string } {
  const list = root[listKey];
  if (list !== undefined && list !== null && !Array.isArray(list)) fail(`${listKey}: expected a list`);
  const found = ((list as unknown[] | undefined) ?? []).filter((e) => isMap(e) && e.name === name) as Map_[];
  const where = `${listKey}[name=${JSON.stringify(name)}]`;
  if (found.length === 0) fail(`${listKey} has no entry named ${JSON.stringify(name)}`);
  if (found.length > 1) fail(`${listKey} has ${found.length} entries named ${JSON.stringify(name)}`);
  const value = found[0]![field];
  if (value === undefined || value === null) return { value: {}, where: `${where}.${field}` };
  if (!isMap(value)) fail(`${where}.${field}: expected a map`);
  return { value: value as Map_, where: `${where}.${field}` };
}

const BASE64 = /^[A-Za-z0-9+/\s]*={0,2}\s*$/;

/** `<key>-data` (base64, wins as in client-go's validation: both set is an error) or `<key>` (a file). */
function fileOrData(
  m: Map_,
  key: string,
  where: string,
  baseDir: string,
  read: (path: string, what: string) => Buffer,
  fail: (what: string) => never,
): Buffer | undefined {
  const data = str(m[`${key}-data`], `${where}.${key}-data`, fail);
  const file = str(m[key], `${where}.${key}`, fail);
  if (data && file) fail(`${where}: ${key} and ${key}-data are both set; keep one`);
  if (data) {
    if (!BASE64.test(data)) fail(`${where}.${key}-data is not base64`);
    const buf = Buffer.from(data, 'base64');
    if (buf.length === 0) fail(`${where}.${key}-data is empty`);
    return buf;
  }
  if (file) return read(resolveAgainst(baseDir, file), `${where}.${key}`);
  return undefined;
}
