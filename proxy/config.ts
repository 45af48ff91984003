/**
 * spindle-proxy's config file (YAML) and the one-listener forms' flags, as one `ProxyConfig`.
 *
 *   socket_path: /tmp/spindle-agent/public/api.sock   # else SPIFFE_ENDPOINT_SOCKET, else this default
 *   admin: 127.0.0.1:9901                              # /live, /ready, /metrics (optional)
 *   log_level: INFO                                    # DEBUG | INFO | WARN | ERROR
 *   log_format: text                                   # text | json (operational log on stderr)
 *   metrics_max_source_ids: 100                        # distinct source IDs as metric labels, then "other"
 *   listeners:
 *     - name: payments
 *       mode: inbound                                  # inbound | outbound
 *       listen: 0.0.0.0:8443
 *       forward: 127.0.0.1:8080                        # inbound: loopback host:port or unix:/path
 *       http: true
 *       allow: [spiffe://example.org/web]              # inbound: allowed callers (see allowlist.ts), or
 *       policy: payments-policy.yaml                   #   a policy file (exactly one of allow / policy)
 *       max_connections: 1024                          # verified callers open at once
 *       max_pending_handshakes: 1024                   # inbound: accepted, caller not verified yet
 *       max_pending_per_address: 64                    # inbound: of those, from one remote IP
 *       handshake_timeout: 10s
 *       header_timeout: 10s                            # HTTP: whole request head within this
 *       idle_timeout: 5m
 *     - name: database
 *       mode: outbound
 *       listen: 127.0.0.1:9000                         # outbound: loopback only
 *       connect: db.example.internal:8443
 *       expect: [spiffe://example.org/database]        # the target's ID (patterns as allow)
 *
 * Every problem is reported at once in a ConfigError, each as `<file>:<line>: <key>: <what>`
 * (the line of the offending value as the YAML parser gives it).
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, isAbsolute, resolve } from 'node:path';
import { LineCounter, parseDocument, isMap, isSeq, type Document, type Node } from 'yaml';
import { ConfigError, closestKey, describeValue } from '../common/configmessages.js';
import { parseGoDuration } from '../common/duration.js';
import { parseIdPattern, type IdPattern } from './allowlist.js';

export const DEFAULT_SOCKET_PATH = '/tmp/spindle-agent/public/api.sock';

export const LISTENER_DEFAULTS = {
  maxConnections: 1024,
  maxPendingHandshakes: 1024,
  maxPendingPerAddress: 64,
  handshakeTimeoutMs: 10_000,
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 300_000,
} as const;

export type LogLevel = 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';

export interface HostPort {
  host: string;
  port: number;
}

export type ForwardTarget = ({ kind: 'tcp' } & HostPort) | { kind: 'unix'; path: string };

export interface ListenerConfig {
  name: string;
  mode: 'inbound' | 'outbound';
  listen: HostPort;
  /** inbound: where the local service listens. */
  forward?: ForwardTarget;
  /** outbound: the remote proxy or service. */
  connect?: HostPort;
  /** outbound: the SPIFFE ID(s) the target must present. */
  expect?: IdPattern[];
  http: boolean;
  /** inbound: allowed callers (the allowlist decider). */
  allow?: string[];
  /** inbound: policy file (absolute path). */
  policy?: string;
  maxConnections: number;
  /** inbound: connections accepted whose caller is not verified yet, at once. */
  maxPendingHandshakes: number;
  /** inbound: of those, from one remote IP address. */
  maxPendingPerAddress: number;
  handshakeTimeoutMs: number;
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  /** Where the listener is declared (`proxy.yaml:12`), for messages. */
  where: string;
}

export interface ProxyConfig {
  /** The Workload API address: the flag/key, else SPIFFE_ENDPOINT_SOCKET, else DEFAULT_SOCKET_PATH. */
  socketPath: string;
  admin?: HostPort;
  logLevel: LogLevel;
  logFormat: 'text' | 'json';
  maxSourceIds: number;
  listeners: ListenerConfig[];
  /** The config file (absolute), when there is one. */
  file?: string;
}

const TOP_KEYS = ['socket_path', 'admin', 'log_level', 'log_format', 'metrics_max_source_ids', 'listeners'];
const LISTENER_KEYS = [
  'name',
  'mode',
  'listen',
  'forward',
  'connect',
  'expect',
  'http',
  'allow',
  'policy',
  'max_connections',
  'max_pending_handshakes',
  'max_pending_per_address',
  'handshake_timeout',
  'header_timeout',
  'idle_timeout',
];

/** `host:port` / `[v6]:port`; throws a message (without the key) when malformed. */
export function parseHostPort(text: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (m === null) throw new Error(`expected host:port (or [v6]:port), got ${describeValue(text)}`);
  const host = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`port ${port} is out of range`);
  if (m[1] !== undefined && isIP(host) !== 6) throw new Error(`${describeValue(host)} is not an IPv6 address`);
  return { host, port };
}

export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

/** Inbound `forward`: loopback host:port or `unix:/path`. */
export function parseForward(text: string): ForwardTarget {
  if (text.startsWith('unix:')) {
    const path = text.slice('unix:'.length).replace(/^\/\/(?=\/)/, '');
    if (!path.startsWith('/')) throw new Error(`a unix: target needs an absolute path (unix:/run/app.sock), got ${describeValue(text)}`);
    return { kind: 'unix', path };
  }
  const hp = parseHostPort(text);
  if (!isLoopbackHost(hp.host)) throw new Error(`the local service must be on loopback (127.0.0.0/8, ::1, localhost) or a unix: socket, got ${describeValue(text)}`);
  return { kind: 'tcp', ...hp };
}

/** A Go duration (`10s`, `500ms`, `5m`) in milliseconds, at least 1 ms. */
export function parseDurationMs(text: unknown): number {
  if (typeof text !== 'string') throw new Error(`expected a duration such as "10s" or "500ms", got ${describeValue(text)}`);
  const d = parseGoDuration(text);
  if ('problem' in d) throw new Error(`expected a duration such as "10s" or "500ms", got ${describeValue(text)}`);
  const ms = Number(d.ns / 1_000_000n);
  if (ms < 1) throw new Error(`must be at least 1ms, got ${describeValue(text)}`);
  return ms;
}

/** The Workload API address: flag or key, else SPIFFE_ENDPOINT_SOCKET, else the agent's default socket. */
export function resolveSocketPath(given: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (given !== undefined && given !== '') return given;
  const fromEnv = env['SPIFFE_ENDPOINT_SOCKET'];
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : DEFAULT_SOCKET_PATH;
}

/** Problems collected while reading one file. */
class Problems {
  readonly #items: { line: number; text: string }[] = [];
  constructor(
    readonly file: string,
    readonly lines: LineCounter,
  ) {}

  at(node: Node | null | undefined): string {
    const offset = node?.range?.[0];
    if (offset === undefined) return this.file;
    return `${this.file}:${this.lines.linePos(offset).line}`;
  }

  add(node: Node | null | undefined, key: string, message: string): void {
    const offset = node?.range?.[0];
    this.#items.push({ line: offset === undefined ? 0 : this.lines.linePos(offset).line, text: `${this.at(node)}: ${key}: ${message}` });
  }

  get count(): number {
    return this.#items.length;
  }

  /** The problems in file order. */
  get list(): string[] {
    return [...this.#items].sort((a, b) => a.line - b.line).map((i) => i.text);
  }
}

function pairsOf(node: unknown): { key: string; keyNode: Node; value: Node | null }[] {
  if (!isMap(node)) return [];
  return node.items.map((p) => ({ key: String((p.key as { value?: unknown })?.value ?? p.key), keyNode: p.key as Node, value: (p.value as Node | null) ?? null }));
}

function jsOf(node: Node | null): unknown {
  return node === null ? null : node.toJSON();
}

function stringList(v: unknown): string[] | undefined {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string')) return v as string[];
  return undefined;
}

function readListener(node: Node, index: number, p: Problems, baseDir: string, seen: Set<string>): ListenerConfig | undefined {
  const prefix = `listeners[${index}]`;
  if (!isMap(node)) {
    p.add(node, prefix, `expected a map with name, mode, listen, ..., got ${describeValue(jsOf(node))}`);
    return undefined;
  }
  const values = new Map<string, { node: Node | null; keyNode: Node; v: unknown }>();
  for (const { key, keyNode, value } of pairsOf(node)) {
    if (!LISTENER_KEYS.includes(key)) {
      const near = closestKey(key, LISTENER_KEYS);
      p.add(keyNode, `${prefix}.${key}`, `unknown key${near !== undefined ? ` (did you mean "${near}"?)` : ''}`);
      continue;
    }
    values.set(key, { node: value, keyNode, v: jsOf(value) });
  }
  const before = p.count;
  const get = (k: string): { node: Node | null; keyNode: Node; v: unknown } | undefined => values.get(k);
  const req = (k: string, what: string): { node: Node | null; keyNode: Node; v: unknown } | undefined => {
    const e = get(k);
    if (e === undefined || e.v === null || e.v === undefined) {
      p.add(node, `${prefix}.${k}`, `is required (${what})`);
      return undefined;
    }
    return e;
  };
  const nameE = req('name', 'a unique name for logs and metrics');
  let name = `#${index}`;
  if (nameE !== undefined) {
    if (typeof nameE.v !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(nameE.v)) {
      p.add(nameE.node, `${prefix}.name`, `expected 1-64 letters, digits, '.', '_' or '-', got ${describeValue(nameE.v)}`);
    } else if (seen.has(nameE.v)) p.add(nameE.node, `${prefix}.name`, `${describeValue(nameE.v)} is used by another listener`);
    else {
      name = nameE.v;
      seen.add(name);
    }
  }
  const lp = `listeners[${index}] (${name})`;
  const modeE = req('mode', 'inbound or outbound');
  let mode: 'inbound' | 'outbound' = 'inbound';
  if (modeE !== undefined) {
    if (modeE.v === 'inbound' || modeE.v === 'outbound') mode = modeE.v;
    else p.add(modeE.node, `${lp}.mode`, `expected inbound or outbound, got ${describeValue(modeE.v)}`);
  }
  const parse = <T>(k: string, e: { node: Node | null; v: unknown } | undefined, fn: (v: unknown) => T): T | undefined => {
    if (e === undefined) return undefined;
    try {
      return fn(e.v);
    } catch (err) {
      p.add(e.node, `${lp}.${k}`, (err as Error).message);
      return undefined;
    }
  };
  const asString = (v: unknown): string => {
    if (typeof v !== 'string') throw new Error(`expected a string, got ${describeValue(v)}`);
    return v;
  };
  const listen = parse('listen', req('listen', 'host:port to accept on'), (v) => {
    const hp = parseHostPort(asString(v));
    if (mode === 'outbound' && !isLoopbackHost(hp.host)) {
      throw new Error(`an outbound listener accepts plain TCP, so it must listen on loopback (127.0.0.1, ::1), got ${describeValue(v)}`);
    }
    return hp;
  });
  const http = parse('http', get('http'), (v) => {
    if (typeof v !== 'boolean') throw new Error(`expected true or false, got ${describeValue(v)}`);
    return v;
  });
  const int = (k: string, dflt: number): number =>
    parse(k, get(k), (v) => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 1_000_000) throw new Error(`expected a whole number from 1 to 1000000, got ${describeValue(v)}`);
      return v;
    }) ?? dflt;
  const dur = (k: string, dflt: number): number => parse(k, get(k), parseDurationMs) ?? dflt;
  const l: ListenerConfig = {
    name,
    mode,
    listen: listen ?? { host: '127.0.0.1', port: 0 },
    http: http ?? false,
    maxConnections: int('max_connections', LISTENER_DEFAULTS.maxConnections),
    maxPendingHandshakes: int('max_pending_handshakes', LISTENER_DEFAULTS.maxPendingHandshakes),
    maxPendingPerAddress: int('max_pending_per_address', LISTENER_DEFAULTS.maxPendingPerAddress),
    handshakeTimeoutMs: dur('handshake_timeout', LISTENER_DEFAULTS.handshakeTimeoutMs),
    headerTimeoutMs: dur('header_timeout', LISTENER_DEFAULTS.headerTimeoutMs),
    idleTimeoutMs: dur('idle_timeout', LISTENER_DEFAULTS.idleTimeoutMs),
    where: p.at(node),
  };
  const notFor = (k: string, m: string): void => {
    const e = get(k);
    if (e !== undefined) p.add(e.keyNode, `${lp}.${k}`, `only for ${m === 'inbound' ? 'outbound' : 'inbound'} listeners (this one is ${m})`);
  };
  if (mode === 'inbound') {
    notFor('connect', 'inbound');
    notFor('expect', 'inbound');
    const fwd = parse('forward', req('forward', 'the local service: loopback host:port or unix:/path'), (v) => parseForward(asString(v)));
    if (fwd !== undefined) l.forward = fwd;
    const allowE = get('allow');
    const policyE = get('policy');
    if (allowE !== undefined && policyE !== undefined) p.add(policyE.keyNode, `${lp}.policy`, 'set either allow or policy, not both');
    else if (allowE === undefined && policyE === undefined) p.add(node, `${lp}`, 'an inbound listener needs allow (SPIFFE IDs) or policy (a policy file)');
    const allow = parse('allow', allowE, (v) => {
      const list = stringList(v);
      if (list === undefined) throw new Error(`expected a SPIFFE ID pattern or a non-empty list of them, got ${describeValue(v)}`);
      for (const s of list) parseIdPattern(s);
      return list;
    });
    if (allow !== undefined) l.allow = allow;
    const policy = parse('policy', policyE, (v) => {
      const s = asString(v);
      if (s === '') throw new Error('expected a file path, got ""');
      return isAbsolute(s) ? s : resolve(baseDir, s);
    });
    if (policy !== undefined) l.policy = policy;
  } else {
    notFor('forward', 'outbound');
    notFor('max_pending_handshakes', 'outbound');
    notFor('max_pending_per_address', 'outbound');
    notFor('allow', 'outbound');
    notFor('policy', 'outbound');
    if (http === true) p.add(get('http')!.node, `${lp}.http`, 'outbound listeners relay TCP; http: true is for inbound listeners');
    const connect = parse('connect', req('connect', 'the target host:port'), (v) => parseHostPort(asString(v)));
    if (connect !== undefined) l.connect = connect;
    const expect = parse('expect', req('expect', "the target's SPIFFE ID(s)"), (v) => {
      const list = stringList(v);
      if (list === undefined) throw new Error(`expected a SPIFFE ID pattern or a non-empty list of them, got ${describeValue(v)}`);
      return list.map(parseIdPattern);
    });
    if (expect !== undefined) l.expect = expect;
  }
  return p.count === before ? l : undefined;
}

/** Parses config text; `file` names it in messages and relative policy paths resolve against its directory. */
export function parseProxyConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): ProxyConfig {
  const lines = new LineCounter();
  const doc: Document = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const p = new Problems(file, lines);
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => `${file}:${lines.linePos(e.pos[0]).line}: ${e.message.split('\n')[0]}`));
  }
  const root = doc.contents as Node | null;
  if (!isMap(root)) throw new ConfigError([`${file}: expected a map with a listeners list`]);
  const top = new Map<string, { node: Node | null; v: unknown }>();
  for (const { key, keyNode, value } of pairsOf(root)) {
    if (!TOP_KEYS.includes(key)) {
      const near = closestKey(key, TOP_KEYS);
      p.add(keyNode, key, `unknown key${near !== undefined ? ` (did you mean "${near}"?)` : ''}`);
    } else top.set(key, { node: value, v: jsOf(value) });
  }
  const cfg: ProxyConfig = { socketPath: '', logLevel: 'INFO', logFormat: 'text', maxSourceIds: 100, listeners: [], file };
  const sp = top.get('socket_path');
  if (sp !== undefined && (typeof sp.v !== 'string' || sp.v === '')) p.add(sp.node, 'socket_path', `expected a socket path or unix:/// / tcp:// address, got ${describeValue(sp.v)}`);
  cfg.socketPath = resolveSocketPath(typeof sp?.v === 'string' ? sp.v : undefined, env);
  const admin = top.get('admin');
  if (admin !== undefined) {
    try {
      cfg.admin = parseHostPort(String(admin.v));
    } catch (err) {
      p.add(admin.node, 'admin', (err as Error).message);
    }
  }
  const lvl = top.get('log_level');
  if (lvl !== undefined) {
    const v = String(lvl.v).toUpperCase();
    if (v === 'DEBUG' || v === 'INFO' || v === 'WARN' || v === 'ERROR') cfg.logLevel = v;
    else p.add(lvl.node, 'log_level', `expected DEBUG, INFO, WARN or ERROR, got ${describeValue(lvl.v)}`);
  }
  const fmt = top.get('log_format');
  if (fmt !== undefined) {
    if (fmt.v === 'text' || fmt.v === 'json') cfg.logFormat = fmt.v;
    else p.add(fmt.node, 'log_format', `expected text or json, got ${describeValue(fmt.v)}`);
  }
  const cap = top.get('metrics_max_source_ids');
  if (cap !== undefined) {
    if (typeof cap.v === 'number' && Number.isInteger(cap.v) && cap.v >= 1 && cap.v <= 10_000) cfg.maxSourceIds = cap.v;
    else p.add(cap.node, 'metrics_max_source_ids', `expected a whole number from 1 to 10000, got ${describeValue(cap.v)}`);
  }
  const ls = top.get('listeners');
  if (ls === undefined || !isSeq(ls.node) || ls.node.items.length === 0) {
    p.add(ls?.node ?? root, 'listeners', 'expected a non-empty list of listeners');
  } else {
    const seen = new Set<string>();
    const ports = new Map<string, string>();
    ls.node.items.forEach((item, i) => {
      const l = readListener(item as Node, i, p, dirname(file), seen);
      if (l === undefined) return;
      const key = `${l.listen.host}:${l.listen.port}`;
      if (l.listen.port !== 0 && ports.has(key)) p.add(item as Node, `listeners[${i}] (${l.name}).listen`, `${key} is also the address of listener ${ports.get(key)}`);
      ports.set(key, l.name);
      cfg.listeners.push(l);
    });
  }
  if (p.count > 0) throw new ConfigError(p.list);
  return cfg;
}

/** Reads and parses the config file at `path` (relative to `cwd`). */
export function loadProxyConfig(path: string, cwd = process.cwd(), env: NodeJS.ProcessEnv = process.env): ProxyConfig {
  const file = resolve(cwd, path);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError([`${file}: cannot read the config file: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`]);
  }
  return parseProxyConfig(text, file, env);
}
