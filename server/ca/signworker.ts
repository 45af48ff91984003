/**
 * Worker thread of the signing pool (signpool.ts): verifies CSRs and signs leaf X509-SVIDs with
 * the CA key it was handed by the main thread over postMessage (same process; the key is never
 * written anywhere). It keeps the MAX_ISSUERS_PER_WORKER most recent issuers, evicting in
 * insertion order exactly as the pool's mirror does, so the pool knows what it must send again.
 */
import { parentPort } from 'node:worker_threads';
import { isSpiffeError } from '../../spiffe/errors.js';
import { createIssuer, issueX509SvidFromCsr, type Issuer } from '../../spiffe/x509/index.js';
import { MAX_ISSUERS_PER_WORKER, type ToWorker, type FromWorker, type WorkerResult } from './signpool.js';

/** Issuers by pool id; a string is why that issuer could not be loaded. */
const issuers = new Map<number, Issuer | string>();

function result(issuer: Issuer, job: { id: string; csr: Uint8Array; dnsNames: string[]; ttlSeconds: number }, now: Date): WorkerResult {
  try {
    const c = issueX509SvidFromCsr({
      csr: Buffer.from(job.csr.buffer, job.csr.byteOffset, job.csr.byteLength),
      // The id comes from the main thread's registration entry; issue.ts parses it again.
      id: job.id as Parameters<typeof issueX509SvidFromCsr>[0]['id'],
      dnsNames: job.dnsNames,
      ttlSeconds: job.ttlSeconds,
      issuer,
      now,
    });
    return { der: c.der, notAfter: c.notAfter.getTime(), serialHex: c.serialHex };
  } catch (err) {
    if (isSpiffeError(err)) return { error: { spiffe: true, code: err.code, reason: err.reason, message: err.message } };
    return { error: { spiffe: false, message: err instanceof Error ? err.message : String(err) } };
  }
}

parentPort!.on('message', (m: ToWorker) => {
  if (m.t === 'issuer') {
    let entry: Issuer | string;
    try {
      entry = createIssuer(m.chain.map((d) => Buffer.from(d.buffer, d.byteOffset, d.byteLength)), m.privateKey);
    } catch (err) {
      entry = `signing worker could not load issuer ${m.issuerId}: ${err instanceof Error ? err.message : String(err)}`;
    }
    issuers.set(m.issuerId, entry);
    while (issuers.size > MAX_ISSUERS_PER_WORKER) issuers.delete(issuers.keys().next().value!);
    return;
  }
  const issuer = issuers.get(m.issuerId) ?? `signing worker has no issuer ${m.issuerId}`;
  const now = new Date(m.now);
  const out: FromWorker =
    typeof issuer === 'string'
      ? { seq: m.seq, results: m.jobs.map(() => ({ error: { spiffe: false, message: issuer } })) }
      : { seq: m.seq, results: m.jobs.map((j) => result(issuer, j, now)) };
  parentPort!.postMessage(out);
});
