/**
 * spindle-proxy command line (loaded by bin/spindle-proxy); `main(argv)` is its entry point.
 *
 *   spindle-proxy run -config proxy.yaml
 *   spindle-proxy validate -config proxy.yaml
 *   spindle-proxy inbound -listen 127.0.0.1:8443 -forward 127.0.0.1:8080 -allow spiffe://example.org/web [-allow ...] [-http]
 *   spindle-proxy outbound -listen 127.0.0.1:9000 -connect 127.0.0.1:8443 -expect spiffe://example.org/db
 *   spindle-proxy policy test -policy policy.yaml -cases cases.yaml
 *   spindle-proxy policy lint -policy policy.yaml
 *
 * Flags are SPIRE's single-dash camelCase (`-socketPath`), also accepted as `--socketPath`,
 * `--socket-path` and `-flag=value` (common/argv.ts). The Workload API is reached at
 * `-socketPath`, else SPIFFE_ENDPOINT_SOCKET, else the agent's default socket.
 */
import { Option, type Command } from 'commander';
import { commandSpecOf, normalizeArgv } from '../../common/argv.js';
import { createProgram, requiredFlag, runProgram } from '../../common/cli.js';
import { ConfigError } from '../../common/configmessages.js';
import { runService, validateConfig } from '../../common/runcommand.js';
import { parseIdPattern } from '../allowlist.js';
import { policyCommand } from '../policy/cli.js';
import {
  DEFAULT_SOCKET_PATH,
  LISTENER_DEFAULTS,
  loadProxyConfig,
  parseDurationMs,
  parseForward,
  parseHostPort,
  isLoopbackHost,
  resolveSocketPath,
  type ListenerConfig,
  type LogLevel,
  type ProxyConfig,
} from '../config.js';

const EPILOGUE =
  'Flags are written as in SPIRE (-socketPath value, -listen=127.0.0.1:8443); --socketPath and --socket-path work too.\n' +
  `The Workload API is reached at -socketPath, else $SPIFFE_ENDPOINT_SOCKET, else ${DEFAULT_SOCKET_PATH}.\n` +
  'See docs/proxy.md.';

interface CommonFlags {
  socketPath?: string;
  admin?: string;
  logLevel?: string;
  maxConnections?: string;
  maxPendingHandshakes?: string;
  maxPendingPerAddress?: string;
  handshakeTimeout?: string;
  headerTimeout?: string;
  idleTimeout?: string;
  name?: string;
}

interface InboundFlags extends CommonFlags {
  listen?: string;
  forward?: string;
  allow?: string[];
  http?: boolean;
}

interface OutboundFlags extends CommonFlags {
  listen?: string;
  connect?: string;
  expect?: string[];
}

const collect = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

function commonFlags(cmd: Command, mode: 'inbound' | 'outbound'): Command {
  return cmd
    .addOption(new Option('--socketPath <path>', `Workload API socket (default $SPIFFE_ENDPOINT_SOCKET, else ${DEFAULT_SOCKET_PATH})`))
    .addOption(new Option('--admin <host:port>', 'Serve /live, /ready and /metrics on this address'))
    .addOption(new Option('--name <name>', `Listener name in logs and metrics (default ${mode})`))
    .addOption(new Option('--maxConnections <n>', `Most verified connections open at once (default ${LISTENER_DEFAULTS.maxConnections})`))
    .addOption(new Option('--handshakeTimeout <duration>', 'TLS handshake deadline (default 10s)'))
    .addOption(new Option('--headerTimeout <duration>', 'HTTP: deadline for a whole request head (default 10s)'))
    .addOption(new Option('--idleTimeout <duration>', 'Close a connection idle this long (default 5m)'))
    .addOption(new Option('--logLevel <level>', 'DEBUG, INFO, WARN or ERROR (default INFO)'));
}

/** The config of a one-listener form, checked with the same rules as the file (problems name the flag). */
function oneListener(mode: 'inbound' | 'outbound', f: InboundFlags & OutboundFlags): ProxyConfig {
  const problems: string[] = [];
  const check = <T>(flag: string, fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (err) {
      problems.push(`-${flag}: ${(err as Error).message}`);
      return undefined;
    }
  };
  const need = (flag: string, v: unknown): void => {
    if (v === undefined || (Array.isArray(v) && v.length === 0)) problems.push(`-${flag} is required`);
  };
  need('listen', f.listen);
  const listen =
    f.listen === undefined
      ? undefined
      : check('listen', () => {
          const hp = parseHostPort(f.listen!);
          if (mode === 'outbound' && !isLoopbackHost(hp.host)) throw new Error(`an outbound listener accepts plain TCP, so it must listen on loopback (127.0.0.1, ::1), got "${f.listen}"`);
          return hp;
        });
  const int = (flag: keyof CommonFlags, dflt: number): number => {
    const v = f[flag];
    if (v === undefined) return dflt;
    return (
      check(flag, () => {
        if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 1_000_000) throw new Error(`expected a whole number from 1 to 1000000, got "${v}"`);
        return Number(v);
      }) ?? dflt
    );
  };
  const dur = (flag: keyof CommonFlags, dflt: number): number => (f[flag] === undefined ? dflt : (check(flag, () => parseDurationMs(f[flag])) ?? dflt));
  const name = f.name ?? mode;
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) problems.push(`-name: expected 1-64 letters, digits, '.', '_' or '-', got "${name}"`);
  const l: ListenerConfig = {
    name,
    mode,
    listen: listen ?? { host: '127.0.0.1', port: 0 },
    http: mode === 'inbound' && f.http === true,
    maxConnections: int('maxConnections', LISTENER_DEFAULTS.maxConnections),
    maxPendingHandshakes: int('maxPendingHandshakes', LISTENER_DEFAULTS.maxPendingHandshakes),
    maxPendingPerAddress: int('maxPendingPerAddress', LISTENER_DEFAULTS.maxPendingPerAddress),
    handshakeTimeoutMs: dur('handshakeTimeout', LISTENER_DEFAULTS.handshakeTimeoutMs),
    headerTimeoutMs: dur('headerTimeout', LISTENER_DEFAULTS.headerTimeoutMs),
    idleTimeoutMs: dur('idleTimeout', LISTENER_DEFAULTS.idleTimeoutMs),
    where: `spindle-proxy ${mode}`,
  };
  if (mode === 'inbound') {
    need('forward', f.forward);
    need('allow', f.allow);
    if (f.forward !== undefined) {
      const fwd = check('forward', () => parseForward(f.forward!));
      if (fwd !== undefined) l.forward = fwd;
    }
    for (const a of f.allow ?? []) check('allow', () => parseIdPattern(a));
    l.allow = f.allow ?? [];
  } else {
    need('connect', f.connect);
    need('expect', f.expect);
    if (f.connect !== undefined) {
      const c = check('connect', () => parseHostPort(f.connect!));
      if (c !== undefined) l.connect = c;
    }
    l.expect = (f.expect ?? []).flatMap((e) => check('expect', () => parseIdPattern(e)) ?? []);
  }
  let logLevel: LogLevel = 'INFO';
  if (f.logLevel !== undefined) {
    const v = f.logLevel.toUpperCase();
    if (v === 'DEBUG' || v === 'INFO' || v === 'WARN' || v === 'ERROR') logLevel = v;
    else problems.push(`-logLevel: expected DEBUG, INFO, WARN or ERROR, got "${f.logLevel}"`);
  }
  const cfg: ProxyConfig = { socketPath: resolveSocketPath(f.socketPath), logLevel, logFormat: 'text', maxSourceIds: 100, listeners: [l] };
  if (f.admin !== undefined) {
    const a = check('admin', () => parseHostPort(f.admin!));
    if (a !== undefined) cfg.admin = a;
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return cfg;
}

async function start(cfg: ProxyConfig): Promise<Awaited<ReturnType<typeof import('../run.js').startProxy>>> {
  return (await import('../run.js')).startProxy(cfg);
}

function buildProgram(): Command {
  const program = createProgram('spindle-proxy', 'Spindle proxy: mTLS sidecar with SPIFFE identities from the Workload API (inbound and outbound listeners)', EPILOGUE);
  program
    .command('run')
    .description('Runs the proxy with the listeners of a config file')
    .addOption(new Option('--config <file>', 'Path to the proxy config file (YAML)').default('proxy.yaml'))
    .action((f: { config: string }) => runService(async () => loadProxyConfig(f.config), start));
  program
    .command('validate')
    .description('Validates a proxy config file (and the policy files it names)')
    .addOption(new Option('--config <file>', 'Path to the proxy config file (YAML)').default('proxy.yaml'))
    .action((f: { config: string }) =>
      validateConfig(async () => {
        const cfg = loadProxyConfig(f.config);
        await (await import('../run.js')).buildDeciders(cfg);
        return cfg;
      }),
    );
  commonFlags(
    program
      .command('inbound')
      .description('One inbound listener: mTLS in, callers allowed by SPIFFE ID, plain TCP (or HTTP) to the local service')
      .addOption(requiredFlag(new Option('--listen <host:port>', 'Address to accept mTLS on')))
      .addOption(requiredFlag(new Option('--forward <address>', 'The local service: loopback host:port or unix:/path')))
      .addOption(requiredFlag(new Option('--allow <id>', 'Allowed caller: a SPIFFE ID, spiffe://<trust domain> (any member), or a path pattern with * / ** (repeatable)').argParser(collect)))
      .addOption(new Option('--http', 'Parse HTTP: decide per request, 403 refusals, X-Forwarded-Client-Cert and traceparent'))
      .addOption(new Option('--maxPendingHandshakes <n>', `Most connections whose caller is not verified yet, at once (default ${LISTENER_DEFAULTS.maxPendingHandshakes})`))
      .addOption(new Option('--maxPendingPerAddress <n>', `Of those, most from one remote IP address (default ${LISTENER_DEFAULTS.maxPendingPerAddress})`)),
    'inbound',
  ).action((f: InboundFlags) => runService(async () => oneListener('inbound', f), start));
  commonFlags(
    program
      .command('outbound')
      .description('One outbound listener: plain TCP on loopback in, mTLS to the target, which must present the expected SPIFFE ID')
      .addOption(requiredFlag(new Option('--listen <host:port>', 'Loopback address for local clients')))
      .addOption(requiredFlag(new Option('--connect <host:port>', 'The target (another proxy or an mTLS service)')))
      .addOption(requiredFlag(new Option('--expect <id>', "The target's SPIFFE ID (or spiffe://<trust domain>, or a path pattern; repeatable)").argParser(collect))),
    'outbound',
  ).action((f: OutboundFlags) => runService(async () => oneListener('outbound', f), start));
  program.addCommand(policyCommand());
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  await runProgram(program, normalizeArgv(argv, commandSpecOf(program)));
}
