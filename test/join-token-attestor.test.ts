// The join_token server attestor against a real SQLite datastore: a token is claimed once, only
// in its exact printed form, only before it expires, and yields the SPIRE-shaped agent ID.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTrustDomain } from '../spiffe/id.js';
import type { DataStore } from '../server/datastore/types.js';
import { openTestDataStore } from './support/datastore.js';
import { AttestationError, type ServerAttestorContext } from '../attestors/node/types.js';
import { JOIN_TOKEN, JoinTokenServerAttestor } from '../attestors/node/join_token/server.js';
import { generateJoinToken, hashJoinToken } from '../attestors/node/join_token/token.js';

const td = parseTrustDomain('example.org');
const NOW = Date.UTC(2030, 0, 1, 12, 0, 0);
const dir = mkdtempSync(join(tmpdir(), 'spindle-jointoken-'));
const store: DataStore = await openTestDataStore(join(dir, 'datastore.sqlite3'));
after(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

function ctx(nowMs = NOW): ServerAttestorContext {
  return {
    trustDomain: td,
    datastore: store,
    now: () => new Date(nowMs),
    challenge: async () => {
      throw new Error('join_token sends no challenge');
    },
  };
}

/** A fresh token stored with this expiry (seconds since the epoch). */
async function storedToken(expiresAtSeconds: number): Promise<string> {
  const value = generateJoinToken();
  await store.createJoinToken({ hash: hashJoinToken(value), expiresAt: expiresAtSeconds });
  return value;
}

async function refused(p: Promise<unknown>, reason: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof AttestationError, `expected an AttestationError, got ${String(e)}`);
    assert.equal(e.reason, reason);
    assert.match(e.message, message);
    return true;
  });
}

describe('join_token server attestor', () => {
  const attestor = new JoinTokenServerAttestor();

  test('a valid token yields spiffe://<td>/spire/agent/join_token/<token>, no selectors, no re-attestation', async () => {
    assert.equal(attestor.name, JOIN_TOKEN);
    const token = await storedToken(NOW / 1000 + 600);
    const res = await attestor.attest(Buffer.from(token), ctx());
    assert.deepEqual(res, { agentId: `spiffe://example.org/spire/agent/join_token/${token}`, selectors: [], canReattest: false });
  });

  test('a token is claimed once: the second attestation is refused as unknown', async () => {
    const token = await storedToken(NOW / 1000 + 600);
    await attestor.attest(Buffer.from(token), ctx());
    await refused(attestor.attest(Buffer.from(token), ctx()), 'unknown_token', /does not exist or has already been used/);
  });

  test('a token never stored is refused as unknown', async () => {
    await refused(attestor.attest(Buffer.from(generateJoinToken()), ctx()), 'unknown_token', /does not exist/);
  });

  test('variants of a stored token are refused as malformed and do not consume it', async () => {
    const token = await storedToken(NOW / 1000 + 600);
    for (const variant of [token.toUpperCase(), ` ${token}`, `${token}\n`, `${token}\0`, token.slice(1), '']) {
      await refused(attestor.attest(Buffer.from(variant), ctx()), 'malformed', /malformed/);
    }
    const res = await attestor.attest(Buffer.from(token), ctx());
    assert.equal(res.agentId, `spiffe://example.org/spire/agent/join_token/${token}`);
  });

  test('expiry: refused at and after expiresAt, accepted a millisecond before; an expired token is consumed', async () => {
    const exp = NOW / 1000 + 60;
    const atExpiry = await storedToken(exp);
    await refused(attestor.attest(Buffer.from(atExpiry), ctx(exp * 1000)), 'expired_token', /has expired/);
    // Claimed even though refused: it cannot be retried.
    await refused(attestor.attest(Buffer.from(atExpiry), ctx(exp * 1000 - 1)), 'unknown_token', /already been used/);
    const later = await storedToken(exp);
    await refused(attestor.attest(Buffer.from(later), ctx(exp * 1000 + 1000)), 'expired_token', /has expired/);
    const before = await storedToken(exp);
    const res = await attestor.attest(Buffer.from(before), ctx(exp * 1000 - 1));
    assert.equal(res.agentId, `spiffe://example.org/spire/agent/join_token/${before}`);
  });

  test('concurrent attestations with one token: exactly one succeeds', async () => {
    const token = await storedToken(NOW / 1000 + 600);
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => attestor.attest(Buffer.from(token), ctx())));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as AttestationError).reason, 'unknown_token');
  });
});

describe('datastore join-token claim (consumeJoinToken)', () => {
  test('a hash that is not a string is refused, naming the argument', async () => {
    await assert.rejects(store.consumeJoinToken(42 as unknown as string), /join token hash must be a string, got/);
  });

  test('a closed datastore refuses the claim, naming the operation', async () => {
    const closed = await openTestDataStore(join(dir, 'closed.sqlite3'));
    await closed.close();
    await assert.rejects(closed.consumeJoinToken(hashJoinToken(generateJoinToken())), /consume join token/);
  });
});
