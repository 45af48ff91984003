/**
 * A real server + agent pair for the hostile-input tests, the fuzz runs and the soak: a
 * spindle-server process, a spindle-agent process attested with a join token, and one entry
 * that gives THIS process (its uid) an identity, so the Workload API and SDS answer it.
 *
 * `canary()` is the well-behaved client: it keeps calling every API (FetchJWTSVID on the
 * Workload API, FetchSecrets ROOTCA on SDS, GetBundle on the agent API, CountEntries on the
 * admin API), each on its own HTTP/2 connection, and records every error and the slowest
 * answer, while a test attacks the same processes.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { ClientHttp2Session } from 'node:http2';
import { JWTSVIDRequest } from '../../../proto/gen/workload/workload.js';
import { DiscoveryRequest } from '../../../proto/gen/envoy/service/discovery/v3/discovery.js';
import { GetBundleRequest } from '../../../proto/gen/spindle/agent/v1/agent.js';
import { CountEntriesRequest } from '../../../proto/gen/spindle/admin/v1/admin.js';
import { generateJoinToken, startAgentProcess, type AgentProcess } from '../../support/agentproc.js';
import { startServerProcess, type ServerProcess } from '../../support/serverproc.js';
import type { FuzzTargets } from './index.js';
import { codeName, connectRaw, rawUnary, type RawTarget } from './wire.js';

export const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';

export interface SecurityCluster {
  server: ServerProcess;
  agent: AgentProcess;
  joinToken: string;
  agentId: string;
  /** The SPIFFE ID this process is served. */
  workloadId: string;
  caPem: string;
  /** The agent's own SVID (chain PEM) and key, as client certificate for the agent API. */
  agentCertPem: string;
  agentKeyPem: string;
  targets: Required<FuzzTargets>;
  raw: { workload: RawTarget; agent: RawTarget; agentAnonymous: RawTarget; admin: RawTarget };
  /** One round of well-behaved calls to every API; rejects naming what failed. */
  probe(): Promise<void>;
  canary(intervalMs?: number): Canary;
  stop(): Promise<void>;
}

export interface CanaryStats {
  calls: number;
  errors: string[];
  /** Slowest answer per API, ms. */
  maxMs: Record<string, number>;
}

export interface Canary {
  /** Stops the loop and returns what happened. */
  stop(): Promise<CanaryStats>;
}

export async function startSecurityCluster(opts: { serverArgs?: string[]; agentArgs?: string[] } = {}): Promise<SecurityCluster> {
  const server = await startServerProcess({ extraArgs: opts.serverArgs ?? [] });
  let agent: AgentProcess | undefined;
  try {
    const joinToken = generateJoinToken(server);
    agent = await startAgentProcess({ server, joinToken, extraArgs: opts.agentArgs ?? [] });
    const agentId = `spiffe://${server.trustDomain}/spire/agent/join_token/${joinToken}`;
    const workloadId = `spiffe://${server.trustDomain}/security/workload`;
    const uid = process.getuid?.() ?? 0;
    const created = server.cli(['entry', 'create', '-parentID', agentId, '-spiffeID', workloadId, '-selector', `unix:uid:${uid}`]);
    if (created.status !== 0) throw new Error(`entry create failed: ${created.stderr}${created.stdout}`);
    const caPem = readFileSync(join(agent.dataDir, 'bundle.pem'), 'utf8');
    const agentCertPem = readFileSync(join(agent.dataDir, 'agent_svid.pem'), 'utf8');
    const agentKeyPem = readFileSync(join(agent.dataDir, 'agent_svid.key'), 'utf8');
    const targets: Required<FuzzTargets> = {
      workload: { socketPath: agent.socketPath },
      agent: { host: '127.0.0.1', port: server.port, caPem, certPem: agentCertPem, keyPem: agentKeyPem },
      admin: { socketPath: server.socketPath },
    };
    const raw = {
      workload: { kind: 'unix', socketPath: agent.socketPath } as RawTarget,
      agent: { kind: 'tls', ...targets.agent } as RawTarget,
      agentAnonymous: { kind: 'tls', host: '127.0.0.1', port: server.port, caPem } as RawTarget,
      admin: { kind: 'unix', socketPath: server.socketPath } as RawTarget,
    };

    const calls = (sessions: Record<string, ClientHttp2Session>) => ({
      workload: () => rawUnary(sessions.workload!, '/SpiffeWorkloadAPI/FetchJWTSVID', JWTSVIDRequest.encode({ audience: ['canary'], spiffeId: '' }).finish(), { 'workload.spiffe.io': 'true' }),
      sds: () =>
        rawUnary(
          sessions.sds!,
          '/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets',
          DiscoveryRequest.encode({ versionInfo: '', node: undefined, resourceNames: ['ROOTCA'], typeUrl: SECRET_TYPE_URL, responseNonce: '', errorDetail: undefined }).finish(),
        ),
      agent: () => rawUnary(sessions.agent!, '/spindle.agent.v1.AgentAPI/GetBundle', GetBundleRequest.encode({}).finish()),
      admin: () => rawUnary(sessions.admin!, '/spindle.admin.v1.EntryService/CountEntries', CountEntriesRequest.encode({ filter: undefined }).finish()),
    });
    const openSessions = (): Record<string, ClientHttp2Session> => ({
      workload: connectRaw(raw.workload),
      sds: connectRaw(raw.workload),
      agent: connectRaw(raw.agentAnonymous),
      admin: connectRaw(raw.admin),
    });

    // Wait until the agent serves this process (the entry reaches it through the sync stream).
    {
      const s = openSessions();
      try {
        const deadline = Date.now() + 20_000;
        for (;;) {
          const r = await calls(s).workload();
          if (r.code === 0) break;
          if (Date.now() > deadline) throw new Error(`the agent never issued ${workloadId} to this process: ${codeName(r.code)} ${r.details}`);
          await new Promise((res) => setTimeout(res, 100));
        }
      } finally {
        for (const x of Object.values(s)) x.destroy();
      }
    }

    const cluster: SecurityCluster = {
      server,
      agent,
      joinToken,
      agentId,
      workloadId,
      caPem,
      agentCertPem,
      agentKeyPem,
      targets,
      raw,
      async probe() {
        const s = openSessions();
        try {
          const c = calls(s);
          const results = await Promise.all(Object.entries(c).map(async ([api, f]) => [api, await f()] as const));
          const bad = results.filter(([, r]) => r.code !== 0).map(([api, r]) => `${api}: ${codeName(r.code)} ${r.details}${r.failure ? ` (${r.failure})` : ''}`);
          if (server.proc.exitCode !== null || server.proc.signalCode !== null) bad.push(`server exited (${server.proc.exitCode ?? server.proc.signalCode})`);
          if (agent!.proc.exitCode !== null || agent!.proc.signalCode !== null) bad.push(`agent exited (${agent!.proc.exitCode ?? agent!.proc.signalCode})`);
          if (bad.length > 0) throw new Error(bad.join('; '));
        } finally {
          for (const x of Object.values(s)) x.destroy();
        }
      },
      canary(intervalMs = 50): Canary {
        const s = openSessions();
        const c = calls(s);
        const stats: CanaryStats = { calls: 0, errors: [], maxMs: {} };
        let running = true;
        const loops = Object.entries(c).map(async ([api, f]) => {
          while (running) {
            const r = await f();
            stats.calls++;
            stats.maxMs[api] = Math.max(stats.maxMs[api] ?? 0, r.ms);
            if (r.code !== 0) stats.errors.push(`${api}: ${codeName(r.code)} ${r.details}${r.failure ? ` (${r.failure})` : ''}`);
            await new Promise((res) => setTimeout(res, intervalMs));
          }
        });
        return {
          async stop() {
            running = false;
            await Promise.all(loops);
            for (const x of Object.values(s)) x.destroy();
            return stats;
          },
        };
      },
      async stop() {
        await agent?.stop();
        await server.stop();
        rmSync(agent!.dir, { recursive: true, force: true });
        rmSync(server.dir, { recursive: true, force: true });
      },
    };
    return cluster;
  } catch (err) {
    await agent?.stop();
    await server.stop();
    throw err;
  }
}

/** How long the well-behaved client may wait for any answer during an attack. */
export const CANARY_BOUND_MS = 5000;

/**
 * Runs `attack` while the cluster's well-behaved client keeps calling every API, then asserts
 * that client saw no error, made calls, and was answered within CANARY_BOUND_MS each time; one
 * more round of every call (`probe()`) must succeed afterwards.
 */
export async function withCanary<T>(c: SecurityCluster, what: string, attack: () => Promise<T>): Promise<T> {
  const canary: Canary = c.canary();
  let result: T;
  try {
    result = await attack();
  } finally {
    const stats = await canary.stop();
    console.log(`# ${what}: well-behaved client made ${stats.calls} calls, slowest per API (ms): ${JSON.stringify(Object.fromEntries(Object.entries(stats.maxMs).map(([k, v]) => [k, Math.round(v)])))}`);
    assert.deepEqual(stats.errors, [], `the well-behaved client saw errors during ${what}`);
    assert.ok(stats.calls >= 4, `the well-behaved client made only ${stats.calls} calls during ${what}`);
    for (const [api, ms] of Object.entries(stats.maxMs)) assert.ok(ms < CANARY_BOUND_MS, `${api} answered the well-behaved client in ${ms.toFixed(0)} ms during ${what}`);
  }
  await c.probe();
  return result;
}

/** Resident set size of a process, in kB (/proc/<pid>/status VmRSS). */
export function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}
