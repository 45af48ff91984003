/**
 * Real spindle-agent processes for end-to-end tests (the agent-side twin of serverproc.ts):
 * started through bin/spindle-agent with flags against a running spindle-server process,
 * trusting the bundle from `spindle-server bundle show`, ready when the log says so, stopped
 * with SIGTERM (or SIGKILL).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentBin, serverBin, tempDir, type ServerProcess } from './serverproc.js';

export interface AgentProcess {
  dir: string;
  dataDir: string;
  /** The Workload API socket. */
  socketPath: string;
  /** The Workload API address in SPIFFE_ENDPOINT_SOCKET form (`unix:///...`). */
  address: string;
  /** The PEM trust bundle file the agent was started with. */
  bundlePath: string;
  proc: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  log(): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `spindle-server <args> -socketPath <admin socket>` without blocking the event loop
 * (unlike ServerProcess.cli, which uses spawnSync): open Workload API streams in the test
 * process keep receiving while the command runs.
 */
export function serverCliAsync(server: ServerProcess, args: string[], timeoutMs = 20_000, input?: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(serverBin, [...args, '-socketPath', server.socketPath], { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    if (input !== undefined) child.stdin!.end(input);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`spindle-server ${args.join(' ')} did not finish in ${timeoutMs} ms`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ status: code, stdout, stderr });
    });
  });
}

/** A join token from `spindle-server token generate` (with `-spiffeID alias` when given). */
export function generateJoinToken(server: ServerProcess, alias?: string): string {
  const r = server.cli(['token', 'generate', ...(alias ? ['-spiffeID', alias] : [])]);
  const m = /^Token: (\S+)$/m.exec(r.stdout);
  if (r.status !== 0 || !m) throw new Error(`token generate failed (${r.status}): ${r.stderr}${r.stdout}`);
  return m[1]!;
}

export async function startAgentProcess(opts: {
  server: ServerProcess;
  /** Reuse a directory (data dir, socket, bundle) from an earlier agent: a restart. */
  dir?: string;
  /** Omitted: the agent must resume from the SVID in its data dir. */
  joinToken?: string;
  extraArgs?: string[];
  readyTimeoutMs?: number;
  /** -serverAddress (a list of several servers, say); default the server's own address and port. */
  serverAddress?: string;
}): Promise<AgentProcess> {
  const { server } = opts;
  const dir = opts.dir ?? tempDir('spindle-agent-e2e-');
  // Workloads of other uids connect to the socket below this dir: let them traverse it.
  chmodSync(dir, 0o755);
  const dataDir = join(dir, 'data');
  const socketDir = join(dir, 'public');
  mkdirSync(socketDir, { recursive: true, mode: 0o755 });
  chmodSync(socketDir, 0o755);
  const socketPath = join(socketDir, 'api.sock');
  const bundlePath = join(dir, 'bundle.pem');
  const bundle = server.cli(['bundle', 'show']);
  if (bundle.status !== 0 || !bundle.stdout.includes('BEGIN CERTIFICATE')) {
    throw new Error(`bundle show failed (${bundle.status}): ${bundle.stderr}${bundle.stdout}`);
  }
  writeFileSync(bundlePath, bundle.stdout);
  const args = [
    'run',
    '-trustDomain', server.trustDomain,
    '-serverAddress', opts.serverAddress ?? server.host,
    '-serverPort', String(server.port),
    '-socketPath', socketPath,
    '-dataDir', dataDir,
    '-trustBundle', bundlePath,
    '-logLevel', 'DEBUG',
    ...(opts.joinToken !== undefined ? ['-joinToken', opts.joinToken] : []),
    ...(opts.extraArgs ?? []),
  ];
  const proc = spawn(agentBin, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
  await new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      proc.off('exit', onExit);
      if (err) {
        proc.kill('SIGKILL');
        reject(err);
      } else resolve();
    };
    const onData = (d: Buffer): void => {
      log += d.toString();
      if (!done && log.includes('spindle-agent is ready')) finish();
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      finish(new Error(`agent exited with ${code ?? signal} before it was ready:\n${log}`));
    const timer = setTimeout(() => finish(new Error(`agent did not become ready in ${readyTimeoutMs} ms:\n${log}`)), readyTimeoutMs);
    proc.stderr!.on('data', onData);
    proc.stdout!.on('data', onData);
    proc.once('exit', onExit);
  });
  return {
    dir,
    dataDir,
    socketPath,
    address: `unix://${socketPath}`,
    bundlePath,
    proc,
    log: () => log,
    stop: (signal = 'SIGTERM') =>
      new Promise((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve(proc.exitCode);
        proc.once('exit', (code) => resolve(code));
        proc.kill(signal);
      }),
  };
}
