/**
 * CA rotation while two workloads verify each other continuously (run by the soak command; it
 * needs ~2 minutes of real time: ca_ttl's minimum is 2m, activation comes at 5/6 of it).
 * A server with ca_ttl 2m and short SVID TTLs, an agent, and an mTLS pair (test/faults/support/
 * mtls.ts) handshaking every 250 ms until 15 s after SVIDs from the next CA are in use.
 * Fails on any failed verification, or if the rotation was never observed.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateJoinToken, startAgentProcess, type AgentProcess } from '../support/agentproc.js';
import { startServerProcess, type ServerProcess } from '../support/serverproc.js';
import { keepOrClean, ok, sleep } from '../faults/support/common.js';
import { startMtlsPair } from '../faults/support/mtls.js';

export interface CaRotationResult {
  ok: number;
  failed: number;
  failures: string[];
  issuerPairs: string[];
  bundleSizes: number[];
  ms: number;
}

export async function runCaRotation(log: (line: string) => void = console.log): Promise<CaRotationResult> {
  const TD = 'example.org';
  const ALIAS = `spiffe://${TD}/soak/rotation-node`;
  const dir = mkdtempSync(join(tmpdir(), 'spindle-rotation-'));
  const conf = join(dir, 'server.yaml');
  writeFileSync(conf, 'server:\n  ca_ttl: 2m\n  default_x509_svid_ttl: 20s\n  agent_ttl: 60s\n  default_jwt_svid_ttl: 60s\n');
  const t0 = Date.now();
  let server: ServerProcess | undefined;
  let agent: AgentProcess | undefined;
  try {
    server = await startServerProcess({ dir, trustDomain: TD, extraArgs: ['-config', conf] });
    const token = generateJoinToken(server, ALIAS);
    const uid = process.getuid!();
    for (const name of ['front', 'back']) ok(server.cli(['entry', 'create', '-parentID', ALIAS, '-spiffeID', `spiffe://${TD}/soak/${name}`, '-selector', `unix:uid:${uid}`, '-x509SVIDTTL', '10']), `entry create ${name}`);
    agent = await startAgentProcess({ server, joinToken: token });
    const pair = await startMtlsPair({ address: agent.address, serverId: `spiffe://${TD}/soak/back`, clientId: `spiffe://${TD}/soak/front` });
    let rotatedAt: number | undefined;
    let firstPair: string | undefined;
    const deadline = t0 + 170_000;
    let lastReport = Date.now();
    try {
      while (Date.now() < deadline && (rotatedAt === undefined || Date.now() < rotatedAt + 15_000)) {
        await pair.handshake();
        const pairs = [...pair.stats.issuers];
        firstPair ??= pairs[0];
        // Both sides' SVIDs from a CA other than the first one: the rotation has happened.
        if (rotatedAt === undefined && pairs.some((p) => firstPair !== undefined && p.split(' ').every((i) => !firstPair!.includes(i)))) rotatedAt = Date.now();
        if (Date.now() - lastReport > 20_000) {
          lastReport = Date.now();
          log(`ca-rotation: ${((Date.now() - t0) / 1000).toFixed(0)} s, ${pair.stats.ok} handshakes ok, ${pair.stats.failed} failed, bundle sizes seen ${[...pair.stats.bundleSizes].join('/')}`);
        }
        await sleep(250);
      }
    } finally {
      await pair.close();
    }
    const result: CaRotationResult = {
      ok: pair.stats.ok,
      failed: pair.stats.failed,
      failures: pair.stats.failures.slice(0, 20),
      issuerPairs: [...pair.stats.issuers],
      bundleSizes: [...pair.stats.bundleSizes],
      ms: Date.now() - t0,
    };
    if (rotatedAt === undefined) result.failures.push(`no SVID from a new CA within ${((deadline - t0) / 1000).toFixed(0)} s: the rotation was not observed (issuers ${result.issuerPairs.join(' | ')})`);
    return result;
  } finally {
    await agent?.stop();
    await server?.stop();
    keepOrClean(!!process.env['SPINDLE_E2E_KEEP'], [server, agent], [dir]);
  }
}
