import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Bundle, marshalBundle, parseBundle } from '../../spiffe/bundle.js';
import { isSpiffeError } from '../../spiffe/errors.js';
import { parseSpiffeId, type SpiffeId } from '../../spiffe/id.js';
import { DEFAULT_LEEWAY_SECONDS, validateJwtSvid } from '../../spiffe/jwtsvid.js';
import { exportPrivateKeyPkcs8, generateKeyPair } from '../../spiffe/keys.js';
import { pemToPrivateKey, privateKeyToPem } from '../../spiffe/pem.js';
import { createCsr, parseCertificate, parseX509Svid, verifyX509Svid } from '../../spiffe/x509/index.js';
import { parseJournal } from './journal.js';
import { DiskKeyManager, MemoryKeyManager, type KeyManager } from './keymanager.js';
import { parseServerConfig } from '../config/config.js';
import { ACTIVATE_AT, CaManager, caOptionsFromConfig, DEFAULT_PRUNE_GRACE_SECONDS, PREPARE_AT, randomKid, type CaLogger, type CaStatus } from './manager.js';
import type { ServerSvid } from './serveridentity.js';
import { DataStoreError, isDataStoreUnavailable, type DataStore } from '../datastore/types.js';
import { Clock, TD, TempDirs, captureLogger, freshCsr, isCaError, openssl, prng, startCa } from './testkit.js';

const dirs = new TempDirs();
after(() => dirs.cleanup());

const WORKLOAD = parseSpiffeId('spiffe://example.org/workload') as SpiffeId;
const GRACE_MS = DEFAULT_PRUNE_GRACE_SECONDS * 1000;

async function env(km?: KeyManager): Promise<{ dir: string; ds: DataStore; km: KeyManager; clock: Clock }> {
  const dir = dirs.make();
  return { dir, ds: await dirs.store(dir), km: km ?? new DiskKeyManager(join(dir, 'keys')), clock: new Clock() };
}

const serialOf = (der: Buffer): string => parseCertificate(der).serialHex;
const x509Ids = (b: Bundle): string[] => b.x509Authorities().map(serialOf).sort();
const jwtIds = (b: Bundle): string[] => [...b.jwtAuthorities().keys()].sort();

function sameAuthorities(a: Bundle, b: Bundle): boolean {
  const c = b.clone();
  c.sequence = a.sequence;
  return a.equals(c);
}

function active(st: CaStatus, kind: 'x509' | 'jwt') {
  const list = st[kind].filter((r) => r.status === 'active');
  assert.equal(list.length, 1, `exactly one active ${kind}`);
  assert.ok(st[kind].filter((r) => r.status === 'prepared').length <= 1, `at most one prepared ${kind}`);
  return list[0]!;
}

describe('CaManager start', () => {
  it('makes and publishes a self-signed CA, a JWT key and the server SVID', async () => {
    const { ds, km, clock } = await env();
    const ca = await startCa({ datastore: ds, keyManager: km, now: clock.now });
    const b = ca.bundle();
    assert.equal(b.sequence, 1n);
    assert.equal(b.x509Authorities().length, 1);
    assert.equal(b.jwtAuthorities().size, 1);
    const stored = await ds.getBundle(TD);
    assert.ok(stored);
    assert.equal(stored.sequence, 1n);
    assert.equal(stored.document, marshalBundle(b));
    assert.ok(parseBundle(TD, stored.document).equals(b));

    const caCert = parseCertificate(b.x509Authorities()[0]!);
    assert.ok(caCert.isCa && caCert.selfIssued);
    assert.deepEqual(caCert.uriSans, ['spiffe://example.org']);
    assert.equal(caCert.notAfter.getTime(), clock.now().getTime() + 3600_000);

    const st = ca.status();
    assert.equal(active(st, 'x509').id, caCert.serialHex);
    assert.match(active(st, 'jwt').id, /^[A-Za-z0-9]{32}$/);
    assert.equal(st.bundleSequence, 1n);

    const journal = parseJournal((await ds.getCaJournal())!);
    assert.equal(journal.sequence, '1');
    assert.equal(journal.x509[0]!.keyId, 'x509-CA-A');
    assert.equal(journal.jwt[0]!.keyId, 'JWT-Signer-A');
    assert.doesNotMatch(JSON.stringify(journal), /PRIVATE/);

    const svid = ca.serverSvid();
    assert.equal(svid.id, 'spiffe://example.org/spire/server');
    assert.equal(verifyX509Svid(svid.chain, b, { now: clock.now() }).id, 'spiffe://example.org/spire/server');
    const parsed = parseX509Svid(svid.chain, pemToPrivateKey(svid.privateKeyPem));
    assert.equal(parsed.id, svid.id);
    assert.doesNotMatch(JSON.stringify(svid), /PRIVATE/, 'a logged ServerSvid shows no key');
  });

  it('rejects bad options and a journal of another trust domain or format', async () => {
    const { ds, km, clock } = await env();
    await assert.rejects(startCa({ datastore: ds, keyManager: km, now: clock.now, caTtlSeconds: 0 }), (e: Error) => isCaError(e, 'config'));
    await assert.rejects(startCa({ datastore: ds, keyManager: km, now: clock.now, defaultJwtSvidTtlSeconds: 1.5 }), (e: Error) => isCaError(e, 'config'));
    await startCa({ datastore: ds, keyManager: km, now: clock.now });
    await assert.rejects(
      startCa({ datastore: ds, keyManager: km, now: clock.now, trustDomain: 'other.org' as typeof TD }),
      (e: Error) => isCaError(e, 'journal') && /other\.org/.test(e.message) && /example\.org/.test(e.message),
    );
    await ds.setCaJournal('{"version":99}');
    await assert.rejects(startCa({ datastore: ds, keyManager: km, now: clock.now }), (e: Error) => isCaError(e, 'journal') && /version/.test(e.message));
  });

  it('accepts a pino logger: its lines carry the CA\'s messages as JSON', async () => {
    const { ds, km, clock } = await env();
    const lines: Array<Record<string, unknown>> = [];
    const logger: CaLogger = pino({ level: 'debug' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    await startCa({ datastore: ds, keyManager: km, now: clock.now, logger });
    assert.ok(lines.length > 0, 'the CA logged nothing through the pino logger');
    for (const l of lines) assert.equal(typeof l['msg'], 'string', JSON.stringify(l));
  });

  it('signs with the configured key types (RSA CA, P-384 JWT key)', async () => {
    const { ds, km, clock } = await env();
    const ca = await startCa({ datastore: ds, keyManager: km, now: clock.now, caKeyType: 'rsa-2048', jwtKeyType: 'ec-p384' });
    const caCert = parseCertificate(ca.bundle().x509Authorities()[0]!);
    assert.equal(caCert.publicKeyAlgorithmOid, '1.2.840.113549.1.1.1');
    verifyX509Svid(ca.signX509Svid({ id: WORKLOAD, csr: await freshCsr() }).chain, ca.bundle(), { now: clock.now() });
    const jwt = await ca.mintJwtSvid({ id: WORKLOAD, audience: ['a'] });
    assert.equal(JSON.parse(Buffer.from(jwt.token.split('.')[0]!, 'base64url').toString()).alg, 'ES384');
    await validateJwtSvid(jwt.token, { audience: 'a', bundles: ca.bundle(), now: clock.now() });
  });

  it('caOptionsFromConfig wires a server config (ca_ttl, key types, subject, key manager, upstream)', async () => {
    const { dir, ds, clock } = await env();
    const config = parseServerConfig(
      {
        server: {
          trust_domain: 'example.org', data_dir: dir, ca_ttl: '2h', default_x509_svid_ttl: '20m', default_jwt_svid_ttl: '2m',
          ca_key_type: 'ec-p384', ca_subject: { country: ['DE'], organization: ['Acme'], common_name: 'Acme CA' },
        },
        plugins: { KeyManager: { disk: { plugin_data: { keys_path: join(dir, 'k') } } } },
      },
      {},
      { cwd: dir },
    );
    const opts = caOptionsFromConfig(config, { datastore: ds, now: clock.now });
    assert.equal(opts.caTtlSeconds, 7200);
    assert.equal(opts.defaultX509SvidTtlSeconds, 1200);
    assert.equal(opts.defaultJwtSvidTtlSeconds, 120);
    assert.equal(opts.caKeyType, 'ec-p384');
    assert.deepEqual(opts.caSubject, { country: 'DE', organization: 'Acme', commonName: 'Acme CA' });
    assert.equal(opts.upstream, undefined);
    assert.ok(opts.keyManager instanceof DiskKeyManager && opts.keyManager.keysPath === join(dir, 'k'));
    const ca = await CaManager.start(opts);
    const caCert = parseCertificate(ca.bundle().x509Authorities()[0]!);
    assert.ok(caCert.subject.some((a) => a.value === 'Acme CA'));
    assert.equal(statSync(join(dir, 'k', 'x509-CA-A.key')).isFile(), true);
    // No jwt_issuer: JWT-SVIDs carry no iss (as SPIRE).
    assert.equal(opts.jwtIssuer, undefined);
    const plain = await ca.mintJwtSvid({ id: WORKLOAD, audience: ['a'] });
    assert.equal('iss' in JSON.parse(Buffer.from(plain.token.split('.')[1]!, 'base64url').toString()), false);
    await ca.stop();
  });

  it('jwt_issuer becomes the iss of every JWT-SVID minted', async () => {
    const { dir, ds, clock } = await env();
    const config = parseServerConfig({ server: { trust_domain: 'example.org', data_dir: dir, jwt_issuer: 'https://oidc.example.org/td' } }, {}, { cwd: dir });
    const opts = caOptionsFromConfig(config, { datastore: ds, now: clock.now, keyManager: new MemoryKeyManager() });
    assert.equal(opts.jwtIssuer, 'https://oidc.example.org/td');
    const ca = await CaManager.start(opts);
    try {
      const jwt = await ca.mintJwtSvid({ id: WORKLOAD, audience: ['a', 'b'] });
      const claims = JSON.parse(Buffer.from(jwt.token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
      assert.equal(claims['iss'], 'https://oidc.example.org/td');
      assert.deepEqual(claims['aud'], ['a', 'b']);
      await validateJwtSvid(jwt.token, { audience: 'b', bundles: ca.bundle(), now: clock.now() });
    } finally {
      await ca.stop();
    }
  });

  it('kid format is 32 base62 characters and random', () => {
    const kids = new Set(Array.from({ length: 200 }, () => randomKid()));
    assert.equal(kids.size, 200);
    for (const k of kids) assert.match(k, /^[A-Za-z0-9]{32}$/);
  });
});

describe('CaManager restart', () => {
  it('disk key manager: key files 0600 / dir 0700 and a restart keeps the same CA, JWT key and bundle sequence', async () => {
    const oldUmask = process.umask(0);
    try {
      const { dir, ds, clock } = await env();
      const keysPath = join(dir, 'keys');
      const ca1 = await startCa({ datastore: ds, keyManager: new DiskKeyManager(keysPath), now: clock.now });
      clock.advance(0.55 * 3600); // past half-life: the next CA and JWT key are prepared
      const r = await ca1.rotate();
      assert.deepEqual(r.events.map((e) => `${e.kind}:${e.action}`).sort(), ['jwt:prepared', 'x509:prepared']);
      for (const f of ['x509-CA-A', 'x509-CA-B', 'JWT-Signer-A', 'JWT-Signer-B']) {
        assert.equal(statSync(join(keysPath, `${f}.key`)).mode & 0o777, 0o600, f);
      }
      assert.equal(statSync(keysPath).mode & 0o777, 0o700);
      const st1 = ca1.status();
      const b1 = ca1.bundle();
      const svid1 = ca1.signX509Svid({ id: WORKLOAD, csr: await freshCsr() });
      await ca1.stop();
      await ds.close();

      // New process: fresh datastore handle, fresh key manager over the same directory.
      const ds2 = await dirs.store(dir);
      const ca2 = await startCa({ datastore: ds2, keyManager: new DiskKeyManager(keysPath), now: clock.now });
      const st2 = ca2.status();
      assert.deepEqual(st2.x509, st1.x509);
      assert.deepEqual(st2.jwt, st1.jwt);
      const b2 = ca2.bundle();
      assert.ok(b2.equals(b1), 'same bundle, same sequence');
      assert.equal((await ds2.getBundle(TD))!.sequence, b1.sequence);

      // The restarted server signs with the same CA: its SVIDs verify against the old CA alone.
      const onlyOldActive = new Bundle(TD, {
        x509Authorities: b1.x509Authorities().filter((d) => serialOf(d) === active(st1, 'x509').id),
      });
      verifyX509Svid(ca2.signX509Svid({ id: WORKLOAD, csr: await freshCsr() }).chain, onlyOldActive, { now: clock.now() });
      verifyX509Svid(svid1.chain, b2, { now: clock.now() });
      const jwt = await ca2.mintJwtSvid({ id: WORKLOAD, audience: ['a'] });
      const onlyOldKid = new Bundle(TD, { jwtAuthorities: [[active(st1, 'jwt').id, b1.jwtAuthority(active(st1, 'jwt').id)!]] });
      await validateJwtSvid(jwt.token, { audience: 'a', bundles: onlyOldKid, now: clock.now() });

      // And the prepared ones still activate on schedule.
      clock.advance((ACTIVATE_AT - 0.55) * 3600 + 1);
      const r2 = await ca2.rotate();
      assert.deepEqual(r2.events.map((e) => `${e.kind}:${e.action}`).sort(), ['jwt:activated', 'jwt:demoted', 'x509:activated', 'x509:demoted']);
      assert.equal(r2.bundleChanged, false, 'activation publishes nothing new');
    } finally {
      process.umask(oldUmask);
    }
  });

  it('memory key manager: a restart makes a new CA; the old one stays in the bundle until it expires', async () => {
    const { ds, clock } = await env();
    const ca1 = await startCa({ datastore: ds, keyManager: new MemoryKeyManager(), now: clock.now });
    clock.advance(0.6 * 3600);
    await ca1.rotate(); // prepares next X.509 CA + JWT key (published, never active)
    const st1 = ca1.status();
    const b1 = ca1.bundle();
    assert.equal(b1.x509Authorities().length, 2);
    const oldSvid = ca1.signX509Svid({ id: WORKLOAD, csr: await freshCsr() });
    const oldJwt = await ca1.mintJwtSvid({ id: WORKLOAD, audience: ['a'] });
    await ca1.stop();

    clock.advance(60);
    const logger = captureLogger();
    const ca2 = await startCa({ datastore: ds, keyManager: new MemoryKeyManager(), now: clock.now, logger });
    const st2 = ca2.status();
    const b2 = ca2.bundle();
    const oldActive = active(st1, 'x509');
    const newActive = active(st2, 'x509');
    assert.notEqual(newActive.id, oldActive.id);
    assert.notEqual(active(st2, 'jwt').id, active(st1, 'jwt').id);
    assert.equal(st2.x509.find((r) => r.id === oldActive.id)?.status, 'old');
    const oldPrepared = st1.x509.find((r) => r.status === 'prepared')!;
    assert.equal(st2.x509.find((r) => r.id === oldPrepared.id), undefined, 'a keyless prepared CA that never signed is dropped');
    assert.deepEqual(x509Ids(b2), [oldActive.id, newActive.id].sort());
    assert.equal(b2.sequence, b1.sequence + 1n);
    assert.ok(logger.lines.some((l) => l.level === 'warn' && /key is missing/.test(l.msg)));

    // What the old CA signed still verifies against the new bundle.
    verifyX509Svid(oldSvid.chain, b2, { now: clock.now() });
    await validateJwtSvid(oldJwt.token, { audience: 'a', bundles: b2, now: clock.now() });

    // Until the old CA's expiry (+ grace) it stays; then it is pruned with a sequence bump.
    clock.set(new Date(oldActive.notAfter.getTime() + GRACE_MS));
    const r1 = await ca2.rotate();
    assert.ok(ca2.bundle().hasX509Authority(b1.x509Authorities().find((d) => serialOf(d) === oldActive.id)!));
    assert.ok(!r1.events.some((e) => e.action === 'pruned' && e.kind === 'x509'));
    clock.advance(1);
    const r2 = await ca2.rotate();
    assert.ok(r2.events.some((e) => e.action === 'pruned' && e.kind === 'x509' && e.id === oldActive.id));
    assert.ok(r2.bundleChanged);
    assert.deepEqual(x509Ids(ca2.bundle()).includes(oldActive.id), false);
    assert.equal(ca2.bundle().sequence, ca2.status().bundleSequence);
  });

  it('a disk key file that disappeared: new CA, old one kept in the bundle', async () => {
    const { dir, ds, km, clock } = await env();
    const ca1 = await startCa({ datastore: ds, keyManager: km, now: clock.now });
    const old = active(ca1.status(), 'x509');
    await ca1.stop();
    unlinkSync(join(dir, 'keys', 'x509-CA-A.key'));
    const ca2 = await startCa({ datastore: ds, keyManager: new DiskKeyManager(join(dir, 'keys')), now: clock.now });
    const st = ca2.status();
    assert.notEqual(active(st, 'x509').id, old.id);
    assert.equal(active(st, 'x509').slot, 'B');
    assert.equal(active(st, 'jwt').id, active(ca1.status(), 'jwt').id, 'the JWT key was fine and is kept');
    assert.deepEqual(x509Ids(ca2.bundle()), [old.id, active(st, 'x509').id].sort());
  });

  it('a disk key file readable by others stops the start, naming the file', async () => {
    const { dir, ds, km, clock } = await env();
    const ca1 = await startCa({ datastore: ds, keyManager: km, now: clock.now });
    await ca1.stop();
    const file = join(dir, 'keys', 'JWT-Signer-A.key');
    writeFileSync(file, readFileSync(file), { mode: 0o600 });
    (await import('node:fs')).chmodSync(file, 0o644);
    await assert.rejects(
      startCa({ datastore: ds, keyManager: new DiskKeyManager(join(dir, 'keys')), now: clock.now }),
      (e: Error) => isCaError(e, 'key_manager') && e.message.includes(file),
    );
  });

  it('republishes the bundle when the journal was written but the bundle was not (crash between the two)', async () => {
    const { ds, km, clock } = await env();
    const ca1 = await startCa({ datastore: ds, keyManager: km, now: clock.now });
    const b1 = ca1.bundle();
    await ca1.stop();
    // Simulate a stale stored bundle (an older document with a lower sequence).
    await ds.setBundle({ trustDomain: TD, document: '{"keys":[],"spiffe_sequence":0}', sequence: 0n }, 0);
    const ca2 = await startCa({ datastore: ds, keyManager: km, now: clock.now });
    const b2 = ca2.bundle();
    assert.ok(sameAuthorities(b1, b2));
    assert.equal(b2.sequence, b1.sequence + 1n, 'sequence moves past both the journal and the stored bundle');
    assert.equal((await ds.getBundle(TD))!.document, marshalBundle(b2));
  });
});

describe('CaManager signing', () => {
  it('takes identity and DNS names from the request only, never from the CSR', async () => {
    const { dir, ds, km, clock } = await env();
    const ca = await startCa({ datastore: ds, keyManager: km, now: clock.now });
    const { privateKey } = await generateKeyPair('ec-p256');
    writeFileSync(join(dir, 'evil.key'), privateKeyToPem(exportPrivateKeyPkcs8(privateKey)), { mode: 0o600 });
    openssl([
      'req', '-new', '-key', 'evil.key', '-subj', '/CN=evil/O=Evil', '-outform', 'DER', '-out', 'evil.csr',
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-addext', 'subjectAltName=URI:spiffe://example.org/admin,URI:spiffe://other.org/x,DNS:evil.example.com',
    ], dir);
    const csr = readFileSync(join(dir, 'evil.csr'));
    const svid = ca.signX509Svid({ id: WORKLOAD, csr, dnsNames: ['web.example.org'] });
    const leaf = parseCertificate(svid.chain[0]!);
    assert.deepEqual(leaf.uriSans, [WORKLOAD]);
    assert.deepEqual(leaf.dnsSans, ['web.example.org']);
    assert.equal(leaf.isCa, false);
    assert.equal(leaf.keyUsage?.keyCertSign, false);
    assert.equal(leaf.subject.length, 0, 'subject not copied from the CSR');
    assert.equal(svid.chain.length, 1, 'self-signed mode: the chain is the leaf alone');
    assert.equal(verifyX509Svid(svid.chain, ca.bundle(), { now: clock.now() }).id, WORKLOAD);
  });

  it('applies default TTLs, caps at the CA notAfter and refuses other trust domains', async () => {
    const { ds, km, clock } = await env();
    const ca = await startCa({ datastore: ds, keyManager: km, now: clock.now });
    const t0 = clock.now().getTime();
    const d = ca.signX509Svid({ id: WORKLOAD, csr: await freshCsr(), ttlSeconds: 0 });
    assert.equal(d.notAfter.getTime(), t0 + 600_000);
    const caNotAfter = active(ca.status(), 'x509').notAfter;
    const long = ca.signX509Svid({ id: WORKLOAD, csr: await freshCsr(), ttlSeconds: 10 * 86400 });
    assert.equal(long.notAfter.getTime(), caNotAfter.getTime());
    const j = await ca.mintJwtSvid({ id: WORKLOAD, audience: ['x', 'y'] });
    assert.equal(j.expiresAt.getTime(), t0 + 300_000);
    const jLong = await ca.mintJwtSvid({ id: WORKLOAD, audience: ['x'], ttlSeconds: 10 * 86400 });
    assert.equal(jLong.expiresAt.getTime(), active(ca.status(), 'jwt').notAfter.getTime());

    const other = parseSpiffeId('spiffe://other.org/w');
    assert.throws(() => ca.signX509Svid({ id: other, csr: Buffer.alloc(0) }), (e: Error) => isSpiffeError(e));
    await assert.rejects(ca.mintJwtSvid({ id: other, audience: ['x'] }), (e: Error) => isCaError(e, 'trust_domain'));
    await assert.rejects(ca.mintJwtSvid({ id: parseSpiffeId('spiffe://example.org'), audience: ['x'] }), (e: Error) => isSpiffeError(e));
    assert.throws(() => ca.signX509Svid({ id: WORKLOAD, csr: Buffer.from('not a csr') }), (e: Error) => isSpiffeError(e));
  });

  it('rotate() does not run twice at once', async () => {
    const { ds, km, clock } = await env();
    const ca = await startCa({ datastore: ds, keyManager: km, now: clock.now });
    clock.advance(0.5 * 3600);
    const p1 = ca.rotate();
    const p2 = ca.rotate();
    assert.equal(p1, p2);
    const r = await p1;
    assert.equal(r.events.filter((e) => e.action === 'prepared').length, 2);
    const r3 = await ca.rotate();
    assert.equal(r3.events.length, 0);
  });

  it('startTimers/stop drive rotate() and leave nothing running', async () => {
    const { ds, km, clock } = await env();
    const ca = await CaManager.start({
      trustDomain: TD, datastore: ds, keyManager: km, now: clock.now,
      caTtlSeconds: 3600, defaultX509SvidTtlSeconds: 600, defaultJwtSvidTtlSeconds: 300, rotateIntervalMs: 5,
    });
    clock.advance(0.5 * 3600);
    const changed = new Promise<Bundle>((resolve) => ca.onBundleChange(resolve));
    ca.startTimers();
    // The rotation timer is unref'd (it must not keep a server process alive by itself): hold
    // the event loop open while waiting for its first tick.
    const keepAlive = setTimeout(() => undefined, 30_000);
    const b = await changed; // the timer's rotate prepared and published the next authorities
    clearTimeout(keepAlive);
    await ca.stop();
    assert.equal(b.x509Authorities().length, 2);
  });
});

describe('CaManager rotation', () => {
  it('across 5 CA lifetimes (1-5 minute steps): every SVID verifies against the bundle of its time and stays valid until it expires', async () => {
    const { ds, km, clock } = await env();
    const logger = captureLogger();
    const ca = await startCa({ datastore: ds, keyManager: km, now: clock.now, logger });
    const start = clock.now().getTime();
    const rand = prng(20300101);
    const listenerSeqs: bigint[] = [];
    ca.onBundleChange((b) => listenerSeqs.push(b.sequence));
    const serverSvids: ServerSvid[] = [];
    ca.onServerSvidChange((s) => serverSvids.push(s));

    const firstSeen = new Map<string, number>(); // authority (CA serial / kid) -> step first published
    const firstActive = new Map<string, number>();
    const notAfterOf = new Map<string, number>();
    const x509Issued: Array<{ chain: Buffer[]; notAfter: Date }> = [];
    const jwtIssued: Array<{ token: string; expiresAt: Date }> = [];
    const seen = (b: Bundle, step: number): void => {
      for (const id of [...x509Ids(b), ...jwtIds(b)]) if (!firstSeen.has(id)) firstSeen.set(id, step);
    };
    seen(ca.bundle(), 0);
    let step = 0;
    let checkedOld = 0;
    let caId = active(ca.status(), 'x509').id;
    const activeCas = new Set<string>();
    while (clock.now().getTime() < start + 5 * 3600_000) {
      step++;
      clock.advance(60 + Math.floor(rand() * 241));
      const now = clock.now();
      const before = ca.bundle();
      const result = await ca.rotate();
      const b = ca.bundle();

      // Sequence: +1 on every change, unchanged otherwise; the datastore holds exactly this bundle.
      const changed = !sameAuthorities(before, b);
      assert.equal(result.bundleChanged, changed, `step ${step}`);
      assert.equal(b.sequence, changed ? before.sequence + 1n : before.sequence, `step ${step}`);
      const stored = (await ds.getBundle(TD))!;
      assert.equal(stored.sequence, b.sequence);
      assert.equal(stored.document, marshalBundle(b));

      // Bundle == journal authorities; nothing in it is past notAfter + grace; one active each.
      seen(b, step);
      const st = ca.status();
      assert.deepEqual(x509Ids(b), st.x509.map((r) => r.id).sort());
      assert.deepEqual(jwtIds(b), st.jwt.map((r) => r.id).sort());
      for (const r of [...st.x509, ...st.jwt]) {
        notAfterOf.set(r.id, r.notAfter.getTime());
        assert.ok(now.getTime() <= r.notAfter.getTime() + GRACE_MS, `step ${step}: ${r.id} should have been pruned`);
      }
      for (const [id, na] of notAfterOf) {
        if (now.getTime() > na + GRACE_MS) assert.ok(!x509Ids(b).includes(id) && !jwtIds(b).includes(id), `step ${step}: expired ${id} still published`);
      }
      const ax = active(st, 'x509');
      const aj = active(st, 'jwt');
      activeCas.add(ax.id);
      for (const a of [ax, aj]) {
        if (!firstActive.has(a.id)) {
          firstActive.set(a.id, step);
          const published = firstSeen.get(a.id);
          assert.ok(published !== undefined && published < step, `step ${step}: ${a.id} active before it was published`);
        }
      }

      // Sign now; verify against the bundle of this time.
      const svid = ca.signX509Svid({ id: WORKLOAD, csr: await freshCsr() });
      assert.ok(svid.notAfter.getTime() <= ax.notAfter.getTime(), 'SVID notAfter within the CA notAfter');
      assert.equal(verifyX509Svid(svid.chain, b, { now }).id, WORKLOAD);
      const jwt = await ca.mintJwtSvid({ id: WORKLOAD, audience: ['spiffe://example.org/db'] });
      assert.ok(jwt.expiresAt.getTime() <= aj.notAfter.getTime(), 'JWT exp within the key notAfter');
      await validateJwtSvid(jwt.token, { audience: 'spiffe://example.org/db', bundles: b, now });

      // Everything issued earlier and still valid verifies against the CURRENT bundle.
      for (const old of x509Issued) {
        if (now.getTime() > old.notAfter.getTime()) continue;
        verifyX509Svid(old.chain, b, { now });
        checkedOld++;
      }
      for (const old of jwtIssued) {
        if (now.getTime() >= old.expiresAt.getTime() + DEFAULT_LEEWAY_SECONDS * 1000) continue;
        await validateJwtSvid(old.token, { audience: 'spiffe://example.org/db', bundles: b, now });
        checkedOld++;
      }
      x509Issued.push(svid);
      jwtIssued.push(jwt);

      // The server SVID is always valid and signed by the active CA.
      const server = ca.serverSvid();
      verifyX509Svid(server.chain, b, { now });
      assert.equal(server.caId, ax.id);
      if (ax.id !== caId) {
        assert.ok(result.serverSvidRenewed, 'server SVID renewed when the active CA changed');
        caId = ax.id;
      }
    }

    // Five lifetimes: at least 5 CAs and JWT keys activated, and the early ones pruned.
    assert.ok(activeCas.size >= 5, `only ${activeCas.size} CAs were active`);
    assert.ok(firstActive.size - activeCas.size >= 5, 'and as many JWT keys');
    assert.ok(ca.bundle().x509Authorities().length <= 3);
    assert.ok(checkedOld > step, 'earlier SVIDs were re-verified');
    // Listeners saw every change, in order, once.
    const final = ca.bundle().sequence;
    assert.deepEqual(listenerSeqs, Array.from({ length: Number(final - 1n) }, (_, i) => BigInt(i + 2)));
    assert.ok(serverSvids.length >= 5);
    assert.doesNotMatch(JSON.stringify(logger.lines), /PRIVATE KEY|"d":/, 'no key material in logs');
    assert.ok(logger.lines.some((l) => l.msg === 'CA authority activated'));
    assert.ok(logger.lines.some((l) => l.msg === 'CA authority pruned'));
  });

  it('prepares at 1/2 and activates at 5/6 of the active lifetime, publishing first', async () => {
    const { ds, km, clock } = await env();
    const ca = await startCa({ datastore: ds, keyManager: km, now: clock.now });
    const t0 = clock.now().getTime();
    const L = 3600_000;
    clock.set(new Date(t0 + PREPARE_AT * L - 1000));
    assert.equal((await ca.rotate()).events.length, 0);
    clock.set(new Date(t0 + PREPARE_AT * L));
    const r1 = await ca.rotate();
    assert.deepEqual(r1.events.map((e) => `${e.kind}:${e.action}`).sort(), ['jwt:prepared', 'x509:prepared']);
    assert.ok(r1.bundleChanged);
    const prepared = ca.status().x509.find((r) => r.status === 'prepared')!;
    assert.equal(prepared.slot, 'B');
    assert.equal(prepared.notAfter.getTime(), t0 + PREPARE_AT * L + L);
    clock.set(new Date(t0 + ACTIVATE_AT * L - 1000));
    assert.equal((await ca.rotate()).events.length, 0);
    clock.set(new Date(t0 + ACTIVATE_AT * L));
    const r2 = await ca.rotate();
    assert.equal(r2.bundleChanged, false);
    assert.equal(active(ca.status(), 'x509').id, prepared.id);
    assert.ok(r2.serverSvidRenewed);
    // The old CA's key is gone once it stops signing.
    assert.equal(await km.load('x509-CA-A'), undefined);
    assert.ok(await km.load('x509-CA-B'));
  });

  it('a clock jump past the active CA expiry activates the prepared one, or makes one at once', async () => {
    const { ds, km, clock } = await env();
    const ca = await startCa({ datastore: ds, keyManager: km, now: clock.now });
    const first = active(ca.status(), 'x509');
    clock.advance(2 * 3600); // server suspended: the active CA expired, nothing prepared
    const r = await ca.rotate();
    assert.deepEqual(r.events.filter((e) => e.kind === 'x509').map((e) => e.action), ['demoted', 'prepared', 'activated']);
    const second = active(ca.status(), 'x509');
    assert.notEqual(second.id, first.id);
    verifyX509Svid(ca.signX509Svid({ id: WORKLOAD, csr: await freshCsr() }).chain, ca.bundle(), { now: clock.now() });
    verifyX509Svid(ca.serverSvid().chain, ca.bundle(), { now: clock.now() });
  });

  it('a server left running for 10 days keeps issuing valid SVIDs', async () => {
    const { ds, km, clock } = await env();
    const ca = await startCa({
      datastore: ds, keyManager: km, now: clock.now,
      caTtlSeconds: 86400, defaultX509SvidTtlSeconds: 3600, defaultJwtSvidTtlSeconds: 300,
    });
    const start = clock.now().getTime();
    const rand = prng(10);
    let issued: Array<{ chain: Buffer[]; notAfter: Date }> = [];
    let steps = 0;
    const { privateKey: workloadKey } = await generateKeyPair('ec-p256');
    const cas = new Set<string>();
    while (clock.now().getTime() < start + 10 * 86400_000) {
      steps++;
      clock.advance(900 + Math.floor(rand() * 900));
      await ca.rotate();
      const now = clock.now();
      const b = ca.bundle();
      const svid = ca.signX509Svid({ id: WORKLOAD, csr: createCsr(workloadKey) });
      verifyX509Svid(svid.chain, b, { now });
      assert.equal(svid.notAfter.getTime() - now.getTime(), 3600_000, 'the active CA always has room for a full-length SVID');
      const jwt = await ca.mintJwtSvid({ id: WORKLOAD, audience: ['a'] });
      await validateJwtSvid(jwt.token, { audience: 'a', bundles: b, now });
      verifyX509Svid(ca.serverSvid().chain, b, { now });
      issued = issued.filter((s) => now.getTime() <= s.notAfter.getTime());
      for (const s of issued) verifyX509Svid(s.chain, b, { now });
      issued.push(svid);
      cas.add(active(ca.status(), 'x509').id);
      assert.ok(b.x509Authorities().length <= 3 && b.jwtAuthorities().size <= 3);
    }
    assert.ok(cas.size >= 10, `${cas.size} CAs in 10 days`);
    assert.ok(steps > 500);
  });
});

describe('CaManager during a datastore outage', () => {
  it('a step that cannot commit is deferred: the current authorities keep signing, nothing signs with an unpublished one, and the step commits once the datastore is back', async () => {
    const { ds, km, clock } = await env();
    let down = false;
    // Every datastore call fails as a PostgreSQL outage does while `down`.
    const flaky = new Proxy(ds, {
      get(target, prop) {
        const v: unknown = Reflect.get(target, prop);
        if (typeof v !== 'function') return v;
        return (...args: unknown[]) =>
          down && prop !== 'close'
            ? Promise.reject(new DataStoreError('unavailable', 'datastore unavailable: cannot reach PostgreSQL at 127.0.0.1:1 (connection refused); nothing was written'))
            : (v as (...a: unknown[]) => unknown).apply(target, args);
      },
    });
    const logger = captureLogger();
    const ca = await startCa({ datastore: flaky, keyManager: km, now: clock.now, logger });
    const st0 = ca.status();
    const b0 = ca.bundle();
    const storedSerials = async (): Promise<string[]> => x509Ids(parseBundle(TD, (await ds.getBundle(TD))!.document));

    down = true;
    clock.advance(0.55 * 3600); // due: prepare the next CA and JWT key
    await assert.rejects(ca.rotate(), (e: unknown) => isDataStoreUnavailable(e));
    clock.advance(10);
    await assert.rejects(ca.rotate(), (e: unknown) => isDataStoreUnavailable(e));
    assert.deepEqual(ca.status().x509, st0.x509, 'nothing prepared in memory');
    assert.deepEqual(ca.status().jwt, st0.jwt);
    assert.ok(ca.bundle().equals(b0), 'the bundle served is unchanged');
    // The active authorities keep signing: an SVID verifies against the old CA alone.
    const onlyOld = new Bundle(TD, { x509Authorities: b0.x509Authorities() });
    verifyX509Svid(ca.signX509Svid({ id: WORKLOAD, csr: await freshCsr() }).chain, onlyOld, { now: clock.now() });
    const jwt = await ca.mintJwtSvid({ id: WORKLOAD, audience: ['a'] });
    await validateJwtSvid(jwt.token, { audience: 'a', bundles: b0, now: clock.now() });

    // Past the activation time, still down: the old CA stays active.
    clock.advance((ACTIVATE_AT - 0.55) * 3600);
    await assert.rejects(ca.rotate(), (e: unknown) => isDataStoreUnavailable(e));
    assert.equal(active(ca.status(), 'x509').id, active(st0, 'x509').id);
    const deferred = logger.lines.filter((l) => /deferred/.test(l.msg));
    assert.deepEqual(
      deferred.map((l) => l.level),
      ['warn', 'debug', 'debug'],
      'the first deferral of the outage is a warning, the others debug',
    );
    assert.equal(logger.lines.filter((l) => l.level === 'error').length, 0, 'an outage is not an error per step');

    // Back: the deferred steps commit; whatever is active is in the stored bundle when it signs.
    down = false;
    for (let i = 0; i < 4; i++) {
      await ca.rotate();
      const act = active(ca.status(), 'x509').id;
      assert.ok((await storedSerials()).includes(act), `step ${i}: the active CA ${act} is published`);
      const svid = ca.signX509Svid({ id: WORKLOAD, csr: await freshCsr() });
      verifyX509Svid(svid.chain, parseBundle(TD, (await ds.getBundle(TD))!.document), { now: clock.now() });
      clock.advance(60);
    }
    assert.ok(ca.status().x509.length >= 2, 'the next CA was prepared once the datastore was back');
    assert.ok(logger.lines.some((l) => l.level === 'info' && /deferred CA rotation step committed/.test(l.msg)));
    await ca.stop();
  });
});
