/**
 * Signing-path micro-benchmarks of the SPIFFE core library: how fast the server can turn a CSR
 * into a leaf X509-SVID and mint a JWT-SVID, next to what the crypto underneath allows
 * (openssl's single-core ECDSA P-256 rates and Node's own crypto.sign, measured in this run).
 */
import { createHash, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { generateKeyPair } from '../spiffe/keys.js';
import { parseSpiffeId, parseTrustDomain } from '../spiffe/id.js';
import { createCsr, createIssuer, createSelfSignedCa, issueX509Svid, issueX509SvidFromCsr, parseCsr } from '../spiffe/x509/index.js';
import { mintJwtSvid } from '../spiffe/jwtsvid.js';
import { DEFAULT_SIGNING_WORKERS } from '../server/ca/manager.js';
import { SignPool } from '../server/ca/signpool.js';
import { opensslEcdsaP256 } from './openssl.js';
import { perSecond, rate, type Row } from './table.js';

export interface IssuanceOptions {
  /** Seconds per measured figure. */
  seconds: number;
  /** Distinct CSRs cycled through (so no per-key caching can help). */
  csrs: number;
}

export async function benchIssuance(opts: IssuanceOptions): Promise<Row[]> {
  const td = parseTrustDomain('bench.example');
  const caKeys = await generateKeyPair('ec-p256');
  const caDer = createSelfSignedCa({ trustDomain: td, keyPair: caKeys, ttlSeconds: 86400 });
  const issuer = createIssuer([caDer], caKeys.privateKey);
  const id = parseSpiffeId('spiffe://bench.example/ns/default/sa/bench');

  const csrs: Buffer[] = [];
  const publicKeys: KeyObject[] = [];
  for (let i = 0; i < opts.csrs; i++) {
    const kp = await generateKeyPair('ec-p256');
    csrs.push(createCsr(kp.privateKey));
    publicKeys.push(kp.publicKey);
  }

  const ossl = opensslEcdsaP256(opts.seconds);
  // One CSR verification plus one signature is the floor for "issue from a CSR".
  const osslVerifyPlusSign = 1 / (1 / ossl.signPerSecond + 1 / ossl.verifyPerSecond);
  const data = createHash('sha256').update('bench').digest();
  const nodeSign = await rate(opts.seconds, () => sign('sha256', data, caKeys.privateKey));
  // Node's floor for "issue from a CSR": import the CSR's public key (a fresh key each time, as
  // in real traffic), verify one signature with it, make one signature.
  const spkis = publicKeys.map((k) => k.export({ format: 'der', type: 'spki' }));
  const sigs = publicKeys.map(() => sign('sha256', data, caKeys.privateKey));
  let j = 0;
  const nodeFloor = await rate(opts.seconds, () => {
    const k = j++ % spkis.length;
    const key = createPublicKey({ key: spkis[k]!, format: 'der', type: 'spki' });
    verify('sha256', data, key, sigs[k]!);
    return sign('sha256', data, caKeys.privateKey);
  });

  let i = 0;
  const fromCsr = await rate(opts.seconds, () => issueX509SvidFromCsr({ csr: csrs[i++ % csrs.length]!, id, ttlSeconds: 3600, issuer }));
  const csrOnly = await rate(opts.seconds, () => parseCsr(csrs[i++ % csrs.length]!));
  const fromKey = await rate(opts.seconds, () => issueX509Svid({ id, publicKey: publicKeys[i++ % publicKeys.length]!, ttlSeconds: 3600, issuer }));
  const signer = { kid: 'bench', privateKey: caKeys.privateKey };
  const jwtSequential = await rate(opts.seconds, () => mintJwtSvid({ id, audience: ['bench'], signer }));
  const jwtConcurrent =
    (await rate(opts.seconds, () => Promise.all(Array.from({ length: 32 }, () => mintJwtSvid({ id, audience: ['bench'], signer }))))) * 32;

  // The batch path's signing pool (server/ca/signpool.ts): CSR verification + signing on worker
  // threads, batches of 100 as BatchNewX509SVID sends them, 4 batches in flight.
  const workers = DEFAULT_SIGNING_WORKERS || 1;
  const pool = new SignPool(workers);
  const poolIssuer = { issuerId: 1, chain: [caDer], privateKey: caKeys.privateKey };
  const poolBatch = (): Array<{ id: typeof id; csr: Buffer; dnsNames: string[]; ttlSeconds: number }> =>
    Array.from({ length: 100 }, () => ({ id, csr: csrs[i++ % csrs.length]!, dnsNames: [], ttlSeconds: 3600 }));
  let pooled: number;
  try {
    pooled = (await rate(opts.seconds, () => Promise.all(Array.from({ length: 4 }, () => pool.sign(poolIssuer, poolBatch(), new Date()))))) * 400;
  } finally {
    await pool.close();
  }

  const pct = (v: number, of: number): string => `${((100 * v) / of).toFixed(0)}%`;
  return [
    { figure: 'openssl P-256 sign (1 core)', measured: perSecond(ossl.signPerSecond), target: '-', baseline: 'openssl speed' },
    { figure: 'openssl P-256 verify (1 core)', measured: perSecond(ossl.verifyPerSecond), target: '-', baseline: 'openssl speed' },
    { figure: 'node crypto.sign P-256', measured: perSecond(nodeSign), target: '-', baseline: `${pct(nodeSign, ossl.signPerSecond)} of openssl sign` },
    {
      figure: 'node floor: import key + verify + sign',
      measured: perSecond(nodeFloor),
      target: '-',
      baseline: `${perSecond(osslVerifyPlusSign)} openssl verify+sign (${pct(nodeFloor, osslVerifyPlusSign)})`,
    },
    {
      figure: 'leaf X509-SVID from CSR (verify CSR + sign)',
      measured: perSecond(fromCsr),
      target: '>= 75% of node floor',
      baseline: `${pct(fromCsr, nodeFloor)} of node floor; ${pct(fromCsr, ossl.signPerSecond)} of openssl sign`,
      pass: fromCsr >= 0.75 * nodeFloor,
    },
    {
      figure: `leaf X509-SVIDs from CSRs, signing pool (${workers} worker threads)`,
      measured: perSecond(pooled),
      target: '-',
      baseline: `${pct(pooled, fromCsr)} of one thread; ${pct(pooled, ossl.signPerSecond)} of openssl sign`,
    },
    { figure: 'CSR parse + signature check alone', measured: perSecond(csrOnly), target: '-', baseline: `${pct(csrOnly, ossl.verifyPerSecond)} of openssl verify` },
    {
      figure: 'leaf X509-SVID from public key (sign only)',
      measured: perSecond(fromKey),
      target: '>= 50% of openssl sign',
      baseline: `${pct(fromKey, ossl.signPerSecond)} of openssl sign`,
      pass: fromKey >= 0.5 * ossl.signPerSecond,
    },
    { figure: 'JWT-SVID mint, sequential (node:crypto)', measured: perSecond(jwtSequential), target: '-', baseline: `${pct(jwtSequential, ossl.signPerSecond)} of openssl sign` },
    {
      figure: 'JWT-SVID mint, 32 in flight (node:crypto)',
      measured: perSecond(jwtConcurrent),
      target: '>= 50% of openssl sign',
      baseline: `${pct(jwtConcurrent, ossl.signPerSecond)} of openssl sign`,
      pass: jwtConcurrent >= 0.5 * ossl.signPerSecond,
    },
  ];
}
