import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isSpiffeError } from '../../spiffe/errors.js';
import { parseSpiffeId, type SpiffeId } from '../../spiffe/id.js';
import { generateKeyPair } from '../../spiffe/keys.js';
import { createCsr, parseCertificate, parseCsr, parseX509Svid, verifyX509Svid } from '../../spiffe/x509/index.js';
import { MemoryKeyManager } from './keymanager.js';
import { MIN_POOLED_BATCH, type CaManager } from './manager.js';
import { SignPool } from './signpool.js';
import { Clock, TempDirs, freshCsr, startCa } from './testkit.js';
import type { SignedX509Svid } from './types.js';

const dirs = new TempDirs();
const managers: CaManager[] = [];
after(async () => {
  for (const m of managers) await m.stop();
  await dirs.cleanup();
});

const WORKLOAD = parseSpiffeId('spiffe://example.org/workload') as SpiffeId;
const OTHER_TD = parseSpiffeId('spiffe://other.example/workload') as SpiffeId;

async function ca(signingWorkers: number): Promise<{ ca: CaManager; clock: Clock }> {
  const dir = dirs.make();
  const clock = new Clock();
  const m = await startCa({ datastore: await dirs.store(dir), keyManager: new MemoryKeyManager(), now: clock.now, signingWorkers });
  managers.push(m);
  return { ca: m, clock };
}

/** A CSR whose signature no longer verifies (last signature byte flipped). */
async function tamperedCsr(): Promise<Buffer> {
  const csr = Buffer.from(await freshCsr());
  csr[csr.length - 1]! ^= 0x01;
  return csr;
}

function ok(r: SignedX509Svid | Error): SignedX509Svid {
  if (r instanceof Error) throw r;
  return r;
}

describe('signX509SvidBatch through the signing pool', () => {
  for (const workers of [2, 0]) {
    it(`verifies every CSR and takes identity only from the request (${workers} workers)`, async () => {
      const { ca: m, clock } = await ca(workers);
      const n = MIN_POOLED_BATCH * 2 + 3;
      const reqs: Array<{ id: SpiffeId; csr: Buffer; dnsNames?: string[]; ttlSeconds?: number }> = [];
      for (let i = 0; i < n; i++) {
        // The CSR asks for another identity and DNS name; only the request's count.
        const csr = await freshCsr({ uris: ['spiffe://example.org/admin'], dnsNames: ['evil.example'] });
        reqs.push({ id: WORKLOAD, csr, dnsNames: i % 2 === 0 ? ['web.example.org'] : [], ttlSeconds: i === 3 ? 60 : undefined });
      }
      reqs[5] = { id: WORKLOAD, csr: await tamperedCsr() };
      reqs[7] = { id: OTHER_TD, csr: await freshCsr() };
      reqs[9] = { id: WORKLOAD, csr: Buffer.from('not a csr') };
      const results = await m.signX509SvidBatch(reqs);
      assert.equal(results.length, n);

      const err5 = results[5];
      assert.ok(isSpiffeError(err5), `tampered CSR: expected a SpiffeError, got ${String(err5)}`);
      assert.equal(`${err5.code}/${err5.reason}`, 'ERR_X509_CSR_INVALID/signature');
      const err7 = results[7];
      assert.ok(isSpiffeError(err7));
      assert.equal(err7.reason, 'trust_domain_mismatch');
      const err9 = results[9];
      assert.ok(isSpiffeError(err9));
      assert.equal(`${err9.code}/${err9.reason}`, 'ERR_X509_CSR_INVALID/der');

      const reference = parseCertificate(m.signX509Svid({ id: WORKLOAD, csr: await freshCsr() }).chain[0]!);
      for (let i = 0; i < n; i++) {
        if (i === 5 || i === 7 || i === 9) continue;
        const svid = ok(results[i]!);
        const v = verifyX509Svid(svid.chain, m.bundle(), { now: clock.now() });
        assert.equal(v.id, WORKLOAD);
        const leaf = parseCertificate(svid.chain[0]!);
        assert.deepEqual(leaf.uriSans, [WORKLOAD]);
        assert.deepEqual(leaf.dnsSans, i % 2 === 0 ? ['web.example.org'] : []);
        assert.equal(leaf.serialHex, svid.serialHex);
        assert.ok(leaf.issuerDer.equals(reference.issuerDer), 'signed by the active CA');
        // The CSR's key is the certificate's key.
        assert.ok(leaf.spki.equals(parseCsr(reqs[i]!.csr).spki));
        // Times from the injected clock: default TTL 600 s, or the request's.
        assert.equal(svid.notAfter.getTime(), clock.now().getTime() + (i === 3 ? 60 : 600) * 1000);
      }
      // Distinct serials.
      const serials = results.filter((r): r is SignedX509Svid => !(r instanceof Error)).map((r) => r.serialHex);
      assert.equal(new Set(serials).size, serials.length);
    });
  }

  it('signs with the new CA after an activation (workers get the new key)', async () => {
    const { ca: m, clock } = await ca(2);
    const batch = async (): Promise<SignedX509Svid[]> => {
      const reqs = [];
      for (let i = 0; i < MIN_POOLED_BATCH; i++) reqs.push({ id: WORKLOAD, csr: await freshCsr() });
      return (await m.signX509SvidBatch(reqs)).map(ok);
    };
    const before = await batch();
    clock.advance(1800);
    await m.rotate(); // prepares the next CA
    clock.advance(1200);
    await m.rotate(); // activates it
    const after = await batch();
    const issuerOf = (s: SignedX509Svid): Buffer => parseCertificate(s.chain[0]!).issuerDer;
    const inline = parseCertificate(m.signX509Svid({ id: WORKLOAD, csr: await freshCsr() }).chain[0]!).issuerDer;
    assert.ok(!issuerOf(before[0]!).equals(inline), 'the CA changed');
    for (const s of after) {
      assert.ok(issuerOf(s).equals(inline), 'pooled SVIDs come from the newly active CA');
      verifyX509Svid(s.chain, m.bundle(), { now: clock.now() });
    }
  });

  it('pooled SVIDs parse as X509-SVIDs with the private key of the CSR', async () => {
    const { ca: m } = await ca(2);
    const keys = await Promise.all(Array.from({ length: MIN_POOLED_BATCH }, () => generateKeyPair('ec-p384')));
    const res = await m.signX509SvidBatch(keys.map((k) => ({ id: WORKLOAD, csr: createCsr(k.privateKey) })));
    res.forEach((r, i) => {
      const svid = parseX509Svid(ok(r).chain, keys[i]!.privateKey.export({ format: 'der', type: 'pkcs8' }));
      assert.equal(svid.id, WORKLOAD);
    });
  });
});

describe('SignPool', () => {
  it('refuses bad sizes and work after close()', async () => {
    assert.throws(() => new SignPool(0), /positive whole number, got 0/);
    const pool = new SignPool(1);
    await pool.close();
    await assert.rejects(pool.sign({ issuerId: 1, chain: [], privateKey: (await generateKeyPair('ec-p256')).privateKey }, [], new Date()), /closed/);
  });

  it('an issuer the worker cannot load fails each item, and nothing is signed', async () => {
    const pool = new SignPool(1);
    try {
      const { privateKey } = await generateKeyPair('ec-p256');
      const out = await pool.sign({ issuerId: 7, chain: [Buffer.from('not a certificate')], privateKey }, [{ id: WORKLOAD, csr: await freshCsr(), dnsNames: [], ttlSeconds: 60 }], new Date());
      assert.equal(out.length, 1);
      assert.ok(!('der' in out[0]!));
      assert.match(out[0]!.message, /could not load issuer 7/);
    } finally {
      await pool.close();
    }
  });
});
