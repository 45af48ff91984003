import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Bundle } from '../../spiffe/bundle.js';
import { parseSpiffeId, type SpiffeId } from '../../spiffe/id.js';
import { validateJwtSvid } from '../../spiffe/jwtsvid.js';
import { certificatesToPem, pemToCertificates } from '../../spiffe/pem.js';
import { parseCertificate, verifyX509Svid } from '../../spiffe/x509/index.js';
import { DiskKeyManager, MemoryKeyManager } from './keymanager.js';
import { DEFAULT_PRUNE_GRACE_SECONDS, type CaManager } from './manager.js';
import { Clock, TempDirs, captureLogger, freshCsr, isCaError, openssl, startCa } from './testkit.js';
import type { UpstreamDiskOptions } from './upstream.js';

const dirs = new TempDirs();
after(() => dirs.cleanup());

const WORKLOAD = parseSpiffeId('spiffe://example.org/workload') as SpiffeId;

const CNF = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[v3_int]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

/** An upstream PKI made with openssl: a root, an intermediate under it (valid 2 days), a non-CA leaf, a stray key. */
let pki: { dir: string; root: string; rootKey: string; int: string; intKey: string; intSec1Key: string; leaf: string; leafKey: string; strayKey: string; otherRoot: string };

before(() => {
  const dir = dirs.make('spindle-upstream-');
  writeFileSync(join(dir, 'ca.cnf'), CNF);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', '-config', 'ca.cnf', '-extensions', 'v3_root', ...ec, '-keyout', 'root.key', '-out', 'root.pem', '-days', '3650', '-subj', '/O=Upstream/CN=Upstream Root'], dir);
  openssl(['req', '-x509', '-config', 'ca.cnf', '-extensions', 'v3_root', ...ec, '-keyout', 'other-root.key', '-out', 'other-root.pem', '-days', '3650', '-subj', '/O=Other/CN=Other Root'], dir);
  openssl(['req', '-new', '-config', 'ca.cnf', ...ec, '-keyout', 'int.key', '-out', 'int.csr', '-subj', '/O=Upstream/CN=Upstream Intermediate'], dir);
  openssl(['x509', '-req', '-in', 'int.csr', '-CA', 'root.pem', '-CAkey', 'root.key', '-CAcreateserial', '-days', '2', '-extfile', 'ca.cnf', '-extensions', 'v3_int', '-out', 'int.pem'], dir);
  openssl(['ec', '-in', 'int.key', '-out', 'int-sec1.key'], dir);
  openssl(['req', '-new', '-config', 'ca.cnf', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=Not A CA'], dir);
  openssl(['x509', '-req', '-in', 'leaf.csr', '-CA', 'root.pem', '-CAkey', 'root.key', '-CAcreateserial', '-days', '2', '-extfile', 'ca.cnf', '-extensions', 'v3_leaf', '-out', 'leaf.pem'], dir);
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'stray.key'], dir);
  const p = (f: string): string => join(dir, f);
  assert.match(readFileSync(p('int-sec1.key'), 'utf8'), /BEGIN EC PRIVATE KEY/);
  pki = {
    dir, root: p('root.pem'), rootKey: p('root.key'), int: p('int.pem'), intKey: p('int.key'), intSec1Key: p('int-sec1.key'),
    leaf: p('leaf.pem'), leafKey: p('leaf.key'), strayKey: p('stray.key'), otherRoot: p('other-root.pem'),
  };
});

const der = (pemFile: string): Buffer[] => pemToCertificates(readFileSync(pemFile, 'utf8'));
/** The clock starts at the real (whole-second) time: openssl's certificates are valid from now. */
const realClock = (): Clock => new Clock(Math.floor(Date.now() / 1000) * 1000);

function write(name: string, certs: Buffer[]): string {
  const f = join(pki.dir, name);
  writeFileSync(f, certificatesToPem(certs));
  return f;
}

/** `openssl verify -x509_strict -attime <t> -CAfile <roots> -untrusted <intermediates> leaf.pem`. */
function opensslVerify(roots: string, chain: Buffer[], at: Date, tag: string): string {
  const leaf = write(`${tag}-leaf.pem`, [chain[0]!]);
  const args = ['verify', '-x509_strict', '-attime', String(Math.floor(at.getTime() / 1000)), '-CAfile', roots];
  if (chain.length > 1) args.push('-untrusted', write(`${tag}-untrusted.pem`, chain.slice(1)));
  args.push(leaf);
  return openssl(args);
}

async function upstreamCa(upstream: UpstreamDiskOptions, clock: Clock, over: { caTtlSeconds?: number; dir?: string } = {}): Promise<{ ca: CaManager; dir: string; ds: Awaited<ReturnType<TempDirs['store']>> }> {
  const dir = over.dir ?? dirs.make();
  const ds = await dirs.store(dir);
  const logger = captureLogger();
  const ca = await startCa({
    datastore: ds, keyManager: new DiskKeyManager(join(dir, 'keys')), now: clock.now, upstream, logger,
    ...(over.caTtlSeconds ? { caTtlSeconds: over.caTtlSeconds } : {}),
  });
  return { ca, dir, ds };
}

const x509Only = (b: Bundle): Buffer[] => b.x509Authorities();

describe('UpstreamAuthority disk', () => {
  it('self-signed upstream root: our CA is an intermediate, the bundle holds only the root, openssl verifies the chains', async () => {
    const clock = realClock();
    const { ca, dir, ds } = await upstreamCa({ keyFilePath: pki.rootKey, certFilePath: pki.root }, clock);
    const root = der(pki.root)[0]!;
    assert.deepEqual(x509Only(ca.bundle()), [root]);
    assert.equal(ca.bundle().jwtAuthorities().size, 1);

    const svid = ca.signX509Svid({ id: WORKLOAD, csr: await freshCsr() });
    assert.equal(svid.chain.length, 2, '[leaf, our intermediate]');
    const ours = parseCertificate(svid.chain[1]!);
    assert.ok(ours.isCa && !ours.selfIssued);
    assert.ok(ours.issuerDer.equals(parseCertificate(root).subjectDer));
    assert.deepEqual(ours.uriSans, ['spiffe://example.org']);
    assert.deepEqual(ca.intermediates(), [svid.chain[1]]);
    assert.equal(verifyX509Svid(svid.chain, ca.bundle(), { now: clock.now() }).id, WORKLOAD);
    assert.match(opensslVerify(pki.root, svid.chain, clock.now(), 'u1'), /OK/);
    assert.match(opensslVerify(pki.root, ca.serverSvid().chain, clock.now(), 'u1s'), /OK/);
    assert.equal(ca.status().upstream?.certFilePath, pki.root);
    assert.equal(ca.status().x509[0]!.selfSigned, false);

    // Rotation under the upstream: intermediates change, the X.509 part of the bundle never does.
    const issued: Array<{ chain: Buffer[]; notAfter: Date }> = [];
    const ids = new Set<string>();
    for (let i = 0; i < 3 * 12; i++) {
      clock.advance(300);
      await ca.rotate();
      const b = ca.bundle();
      const now = clock.now();
      assert.deepEqual(x509Only(b), [root]);
      const s = ca.signX509Svid({ id: WORKLOAD, csr: await freshCsr() });
      verifyX509Svid(s.chain, b, { now });
      for (const old of issued) if (now <= old.notAfter) verifyX509Svid(old.chain, b, { now });
      issued.push(s);
      ids.add(parseCertificate(s.chain[1]!).serialHex);
      const jwt = await ca.mintJwtSvid({ id: WORKLOAD, audience: ['a'] });
      await validateJwtSvid(jwt.token, { audience: 'a', bundles: b, now });
    }
    assert.ok(ids.size >= 3, 'several intermediates were used');
    assert.match(opensslVerify(pki.root, issued[issued.length - 1]!.chain, clock.now(), 'u1b'), /OK/);

    // Restart with the same keys: same intermediate.
    const activeBefore = ca.status().x509.find((r) => r.status === 'active')!.id;
    await ca.stop();
    await ds.close();
    const again = await upstreamCa({ keyFilePath: pki.rootKey, certFilePath: pki.root }, clock, { dir });
    assert.equal(again.ca.status().x509.find((r) => r.status === 'active')!.id, activeBefore);
  });

  it('upstream intermediate with its chain (PKCS#8 or SEC1 key, chain in cert_file_path or root in bundle_file_path)', async () => {
    const [intDer] = der(pki.int);
    const root = der(pki.root)[0]!;
    const chainFile = write('int-chain.pem', [intDer!, root]);
    const variants: UpstreamDiskOptions[] = [
      { keyFilePath: pki.intKey, certFilePath: chainFile },
      { keyFilePath: pki.intSec1Key, certFilePath: pki.int, bundleFilePath: pki.root },
    ];
    for (const [i, upstream] of variants.entries()) {
      const clock = realClock();
      const { ca } = await upstreamCa(upstream, clock);
      assert.deepEqual(x509Only(ca.bundle()), [root], `variant ${i}`);
      const svid = ca.signX509Svid({ id: WORKLOAD, csr: await freshCsr() });
      assert.equal(svid.chain.length, 3, '[leaf, our intermediate, upstream intermediate]');
      assert.ok(svid.chain[2]!.equals(intDer!));
      verifyX509Svid(svid.chain, ca.bundle(), { now: clock.now() });
      assert.match(opensslVerify(pki.root, svid.chain, clock.now(), `u2-${i}`), /OK/);
      assert.equal(ca.intermediates().length, 2);
      await ca.stop();
    }
  });

  it('caps our CA at the upstream notAfter, warns when no successor can outlive it, and fails loudly once it expired', async () => {
    const intNotAfter = parseCertificate(der(pki.int)[0]!).notAfter;
    const clock = realClock();
    const logger = captureLogger();
    const dir = dirs.make();
    const ca = await startCa({
      datastore: await dirs.store(dir), keyManager: new MemoryKeyManager(), now: clock.now, logger,
      upstream: { keyFilePath: pki.intKey, certFilePath: pki.int, bundleFilePath: pki.root },
      caTtlSeconds: 3 * 86400, defaultX509SvidTtlSeconds: 3600,
    });
    const ours = ca.status().x509[0]!;
    assert.equal(ours.notAfter.getTime(), intNotAfter.getTime(), 'capped at the upstream certificate');
    const svid = ca.signX509Svid({ id: WORKLOAD, csr: await freshCsr(), ttlSeconds: 5 * 86400 });
    assert.equal(svid.notAfter.getTime(), intNotAfter.getTime());

    clock.set(new Date(ours.issuedAt.getTime() + (ours.notAfter.getTime() - ours.issuedAt.getTime()) * 0.6));
    const r = await ca.rotate();
    assert.ok(!r.events.some((e) => e.kind === 'x509'), 'no successor that would expire with the current CA');
    assert.ok(logger.lines.some((l) => l.level === 'warn' && /renew the upstream CA/.test(l.msg)));

    clock.set(new Date(intNotAfter.getTime() + 1000));
    await assert.rejects(ca.rotate(), /expired/);
    assert.match(ca.status().lastRotation?.error ?? '', /expired/);
  });

  it('refuses bad upstream files with errors naming the file', async () => {
    const clock = realClock();
    const attempt = (upstream: UpstreamDiskOptions): Promise<unknown> => upstreamCa(upstream, clock);
    const rejectsWith = async (upstream: UpstreamDiskOptions, ...parts: (string | RegExp)[]): Promise<void> => {
      await assert.rejects(attempt(upstream), (e: Error) => {
        assert.ok(isCaError(e, 'upstream'), e.message);
        for (const p of parts) {
          if (typeof p === 'string') assert.ok(e.message.includes(p), `${JSON.stringify(e.message)} should name ${p}`);
          else assert.match(e.message, p);
        }
        assert.doesNotMatch(e.message, /BEGIN/);
        return true;
      });
    };
    await rejectsWith({ keyFilePath: pki.strayKey, certFilePath: pki.root }, pki.strayKey, pki.root, /does not match/);
    await rejectsWith({ keyFilePath: pki.leafKey, certFilePath: pki.leaf }, pki.leaf, /not a CA/);
    await rejectsWith({ keyFilePath: pki.intKey, certFilePath: pki.int }, pki.int, /bundle_file_path/);
    await rejectsWith({ keyFilePath: pki.intKey, certFilePath: pki.int, bundleFilePath: pki.otherRoot }, pki.otherRoot, /does not lead to a root/);
    await rejectsWith({ keyFilePath: join(pki.dir, 'missing.key'), certFilePath: pki.root }, 'missing.key');
    await rejectsWith({ keyFilePath: pki.root, certFilePath: pki.root }, pki.root, /private key/);
    await rejectsWith({ keyFilePath: pki.rootKey, certFilePath: pki.rootKey }, pki.rootKey, /CERTIFICATE/);
  });

  it('switching between self-signed and upstream keeps the previous authorities published until their SVIDs expire', async () => {
    const clock = realClock();
    const dir = dirs.make();
    const ds = await dirs.store(dir);
    const km = (): DiskKeyManager => new DiskKeyManager(join(dir, 'keys'));
    const root = der(pki.root)[0]!;
    const grace = DEFAULT_PRUNE_GRACE_SECONDS;

    const selfSigned = await startCa({ datastore: ds, keyManager: km(), now: clock.now });
    const selfCaDer = x509Only(selfSigned.bundle())[0]!;
    const oldSvid = selfSigned.signX509Svid({ id: WORKLOAD, csr: await freshCsr() });
    await selfSigned.stop();

    // Now with an upstream: the self-signed CA stays (old) next to the root.
    const up = await startCa({ datastore: ds, keyManager: km(), now: clock.now, upstream: { keyFilePath: pki.rootKey, certFilePath: pki.root } });
    assert.deepEqual(x509Only(up.bundle()), [root, selfCaDer]);
    verifyX509Svid(oldSvid.chain, up.bundle(), { now: clock.now() });
    verifyX509Svid(up.signX509Svid({ id: WORKLOAD, csr: await freshCsr() }).chain, up.bundle(), { now: clock.now() });
    clock.set(new Date(parseCertificate(selfCaDer).notAfter.getTime() + (grace + 1) * 1000));
    await up.rotate();
    assert.deepEqual(x509Only(up.bundle()), [root], 'self-signed CA pruned after its expiry');
    const upSvid = up.signX509Svid({ id: WORKLOAD, csr: await freshCsr() });
    const upCaNotAfter = up.status().x509.find((r) => r.status === 'active')!.notAfter;
    await up.stop();

    // And back to self-signed: the root stays while an intermediate it signed may have valid SVIDs.
    const back = await startCa({ datastore: ds, keyManager: km(), now: clock.now });
    const b = back.bundle();
    assert.ok(b.hasX509Authority(root));
    assert.equal(b.x509Authorities().length, 2);
    verifyX509Svid(upSvid.chain, b, { now: clock.now() });
    clock.set(new Date(upCaNotAfter.getTime() + (grace + 1) * 1000));
    await back.rotate();
    assert.ok(!back.bundle().hasX509Authority(root), 'upstream root dropped once no intermediate under it remains');
    assert.ok(back.status().x509.every((r) => r.selfSigned));
  });
});
