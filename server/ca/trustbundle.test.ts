import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { KeyObject } from 'node:crypto';
import { Bundle } from '../../spiffe/bundle.js';
import { exportPublicKeySpki, generateKeyPair } from '../../spiffe/keys.js';
import { createSelfSignedCa, parseCertificate } from '../../spiffe/x509/index.js';
import { emptyJournal, serializeJournal, type JwtRecord } from './journal.js';
import { randomKid } from './authorities.js';
import { journalJwtKeys, mergeShared, unexpiredAuthorities, type ForeignExpiry, type RecordedJwtKey } from './trustbundle.js';
import { TD } from './testkit.js';

const GRACE_MS = 60_000;
const T0 = new Date(Date.UTC(2030, 0, 1));

async function ca(ttlSeconds: number): Promise<{ der: Buffer; serial: string; notAfter: Date }> {
  const keyPair = await generateKeyPair('ec-p256');
  const der = createSelfSignedCa({ trustDomain: TD, keyPair, ttlSeconds, now: T0 });
  const info = parseCertificate(der);
  return { der, serial: info.serialHex, notAfter: info.notAfter };
}

async function jwtKey(): Promise<{ kid: string; key: KeyObject }> {
  return { kid: randomKid(), key: (await generateKeyPair('ec-p256')).publicKey };
}

function bundleOf(x509: Buffer[], jwt: Array<{ kid: string; key: KeyObject }>, sequence = 0n): Bundle {
  const b = new Bundle(TD, { sequence });
  for (const d of x509) b.addX509Authority(d);
  for (const j of jwt) b.addJwtAuthority(j.kid, j.key);
  return b;
}

const at = (t: number, jwtKeys: ReadonlyMap<string, RecordedJwtKey> = new Map()): ForeignExpiry => ({ now: new Date(t), graceMs: GRACE_MS, jwtKeys });

describe('mergeShared: authorities of other servers', () => {
  it('drops another server\'s X.509 authority only when its notAfter is more than the grace in the past', async () => {
    const mine = await ca(3600);
    const theirs = await ca(600); // expires first
    const stored = bundleOf([mine.der, theirs.der], [], 5n);
    const ours = bundleOf([mine.der], []);
    const none = new Bundle(TD);
    const edge = theirs.notAfter.getTime() + GRACE_MS;

    for (const t of [theirs.notAfter.getTime(), edge]) {
      const kept = mergeShared(TD, stored, ours, none, at(t));
      assert.equal(kept.changed, false, `at notAfter + ${t - theirs.notAfter.getTime()} ms: kept`);
      assert.deepEqual(kept.pruned, []);
      assert.ok(kept.bundle.hasX509Authority(theirs.der));
      assert.equal(kept.bundle.sequence, 5n);
    }

    const pruned = mergeShared(TD, stored, ours, none, at(edge + 1));
    assert.equal(pruned.changed, true);
    assert.deepEqual(pruned.pruned, [{ kind: 'x509', id: theirs.serial, notAfter: theirs.notAfter }]);
    assert.ok(!pruned.bundle.hasX509Authority(theirs.der));
    assert.deepEqual(pruned.bundle.x509Authorities(), [mine.der]);

    // Without expiry evidence (as before) nothing of another server is dropped.
    assert.equal(mergeShared(TD, stored, ours, none).changed, false);
  });

  it('never drops our own authorities by expiry (the journal prunes those) and still removes what we withdrew', async () => {
    const mineOld = await ca(600);
    const mineNew = await ca(3600);
    const withdrawnCa = await ca(3600);
    const myKey = await jwtKey();
    const stored = bundleOf([mineOld.der, mineNew.der, withdrawnCa.der], [myKey], 2n);
    const ours = bundleOf([mineOld.der, mineNew.der], [myKey]);
    const far = mineNew.notAfter.getTime() + 10 * GRACE_MS;
    const r = mergeShared(TD, stored, ours, bundleOf([withdrawnCa.der], []), at(far, new Map([[myKey.kid, { key: myKey.key, notAfterMs: T0.getTime() }]])));
    assert.deepEqual(r.pruned, [], 'ours and what we withdrew are not "pruned authorities of another server"');
    assert.deepEqual(r.bundle.x509Authorities(), [mineOld.der, mineNew.der]);
    assert.ok(r.bundle.hasJwtAuthority(myKey.kid));
    assert.equal(r.changed, true);
  });

  it('drops another server\'s JWT key only on a journal record of that kid and key expired more than the grace ago', async () => {
    const mine = await ca(3600);
    const recorded = await jwtKey();
    const unrecorded = await jwtKey();
    const otherKey = await jwtKey();
    const notAfterMs = T0.getTime() + 600_000;
    const keys = new Map<string, RecordedJwtKey>([
      [recorded.kid, { key: recorded.key, notAfterMs }],
      // The same kid in the bundle with another key than the journal records: no evidence about it.
      [otherKey.kid, { key: unrecorded.key, notAfterMs }],
    ]);
    const stored = bundleOf([mine.der], [recorded, unrecorded, otherKey], 9n);
    const ours = bundleOf([mine.der], []);
    const none = new Bundle(TD);

    const kept = mergeShared(TD, stored, ours, none, at(notAfterMs + GRACE_MS, keys));
    assert.equal(kept.changed, false, 'at notAfter + grace: kept');
    assert.deepEqual(kept.pruned, []);

    const r = mergeShared(TD, stored, ours, none, at(notAfterMs + GRACE_MS + 1, keys));
    assert.equal(r.changed, true);
    assert.deepEqual(r.pruned, [{ kind: 'jwt', id: recorded.kid, notAfter: new Date(notAfterMs) }]);
    assert.ok(!r.bundle.hasJwtAuthority(recorded.kid));
    assert.ok(r.bundle.hasJwtAuthority(unrecorded.kid), 'a kid no journal records is kept, however late');
    assert.ok(r.bundle.hasJwtAuthority(otherKey.kid), 'a kid recorded with another key is kept');

    const years = mergeShared(TD, stored, ours, none, at(notAfterMs + 10 * 365 * 86_400_000, new Map()));
    assert.deepEqual(years.pruned, [], 'no journal read (empty evidence): nothing is pruned');
  });

  it('a first publish (nothing stored) prunes nothing', async () => {
    const mine = await ca(3600);
    const r = mergeShared(TD, undefined, bundleOf([mine.der], []), new Bundle(TD), at(mine.notAfter.getTime() + 10 * GRACE_MS));
    assert.equal(r.changed, true);
    assert.deepEqual(r.pruned, []);
  });
});

describe('journalJwtKeys', () => {
  it('reads every JWT key of the other servers\' journals, skips ours and reports a journal that does not parse', async () => {
    const a = await jwtKey();
    const b = await jwtKey();
    const mine = await jwtKey();
    const record = (k: { kid: string; key: KeyObject }, notAfter: Date, slot: 'A' | 'B' = 'A'): JwtRecord => ({
      kid: k.kid,
      slot,
      keyId: slot === 'A' ? 'JWT-Signer-A' : 'JWT-Signer-B',
      status: 'old',
      issuedAt: T0.toISOString(),
      notAfter: notAfter.toISOString(),
      publicKeySpki: exportPublicKeySpki(k.key).toString('base64'),
    });
    const doc = (...jwt: JwtRecord[]): string => serializeJournal({ ...emptyJournal(TD), jwt });
    const later = new Date(T0.getTime() + 7200_000);
    const unreadable: string[] = [];
    const keys = journalJwtKeys(
      [
        { serverId: '', document: doc(record(a, T0)) },
        { serverId: 'me', document: doc(record(mine, T0)) },
        { serverId: 'server-b', document: doc(record(b, T0), record(a, later, 'B')) },
        { serverId: 'broken', document: '{"version":1}' },
      ],
      'me',
      (serverId) => unreadable.push(serverId),
    );
    assert.deepEqual([...keys.keys()].sort(), [a.kid, b.kid].sort());
    assert.equal(keys.get(a.kid)!.notAfterMs, later.getTime(), 'a kid in two journals keeps the later notAfter');
    assert.ok(keys.get(b.kid)!.key.equals(b.key));
    assert.deepEqual(unreadable, ['broken']);
  });
});

describe('unexpiredAuthorities', () => {
  it('keeps what has not expired past the grace: X.509 by certificate, JWT by the notAfter given', async () => {
    const short = await ca(600);
    const long = await ca(3600);
    const k1 = await jwtKey();
    const k2 = await jwtKey();
    const b = bundleOf([short.der, long.der], [k1, k2], 3n);
    const t = new Date(short.notAfter.getTime() + GRACE_MS + 1);
    const u = unexpiredAuthorities(TD, b, t, GRACE_MS, new Map([[k1.kid, short.notAfter.getTime()]]));
    assert.deepEqual(u.x509Authorities(), [long.der]);
    assert.deepEqual([...u.jwtAuthorities().keys()], [k2.kid]);
    assert.equal(unexpiredAuthorities(TD, b, new Date(t.getTime() - 1), GRACE_MS, new Map([[k1.kid, short.notAfter.getTime()]])).x509Authorities().length, 2);
  });
});
