/**
 * Test support for the admin API and CLI suites (not imported by production code): a small real
 * CaSigner built from spiffe/x509 and spiffe/jwtsvid, and an admin server on a real Unix socket
 * over a real SQLite file in a temp directory.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Bundle } from '../../../spiffe/bundle.js';
import { parseTrustDomain, type TrustDomain } from '../../../spiffe/id.js';
import { mintJwtSvid } from '../../../spiffe/jwtsvid.js';
import { generateKeyPair } from '../../../spiffe/keys.js';
import { createIssuer, createSelfSignedCa, issueX509SvidFromCsr } from '../../../spiffe/x509/index.js';
import type { CaSigner } from '../../ca/types.js';
import type { DataStore } from '../../datastore/types.js';
import { openTestDataStore } from '../../../test/support/datastore.js';
import { createAdminServices } from './service.js';
import { startAdminServer, type AdminServer } from './server.js';
import type { ApiLogger, FederationControl } from './types.js';

export interface TestCaSigner extends CaSigner {
  readonly rootDer: Buffer;
  readonly jwtKid: string;
}

/** A one-root CA: X509-SVIDs signed straight by a self-signed root, JWT-SVIDs by one ES256 key. */
export async function createTestCaSigner(trustDomain: TrustDomain): Promise<TestCaSigner> {
  const caKeys = await generateKeyPair('ec-p256');
  const rootDer = createSelfSignedCa({ trustDomain, keyPair: caKeys, ttlSeconds: 24 * 3600 });
  const issuer = createIssuer([rootDer], caKeys.privateKey);
  const jwtKeys = await generateKeyPair('ec-p256');
  const jwtKid = 'test-jwt-key';
  const bundle = new Bundle(trustDomain, { x509Authorities: [rootDer], jwtAuthorities: [[jwtKid, jwtKeys.publicKey]], sequence: 1n });
  return {
    trustDomain,
    rootDer,
    jwtKid,
    signX509Svid({ id, csr, dnsNames, ttlSeconds }) {
      const cert = issueX509SvidFromCsr({ csr, id, dnsNames: dnsNames ?? [], ttlSeconds: ttlSeconds ?? 3600, issuer });
      return { chain: [cert.der], notAfter: cert.notAfter, serialHex: cert.serialHex };
    },
    async mintJwtSvid({ id, audience, ttlSeconds }) {
      return mintJwtSvid({ id, audience, ttlSeconds: ttlSeconds ?? 300, signer: { kid: jwtKid, privateKey: jwtKeys.privateKey } });
    },
    bundle: () => bundle.clone(),
    onBundleChange: () => () => undefined,
  };
}

export const silentLogger: ApiLogger = pino({ level: 'silent' });

export interface TestAdmin {
  dir: string;
  socketPath: string;
  dbPath: string;
  trustDomain: TrustDomain;
  datastore: DataStore;
  ca: TestCaSigner;
  server: AdminServer;
  close(): Promise<void>;
}

/** A real admin server over a real SQLite file, both in a fresh temp directory. */
export async function startTestAdmin(
  options: { trustDomain?: string; now?: () => Date; federation?: (datastore: DataStore, trustDomain: TrustDomain) => FederationControl } = {},
): Promise<TestAdmin> {
  const trustDomain = parseTrustDomain(options.trustDomain ?? 'example.org');
  const dir = mkdtempSync(join(tmpdir(), 'spindle-admin-'));
  const dbPath = join(dir, 'data', 'datastore.sqlite3');
  const socketPath = join(dir, 'private', 'api.sock');
  const datastore = await openTestDataStore(dbPath);
  const ca = await createTestCaSigner(trustDomain);
  const services = createAdminServices({
    datastore,
    ca,
    trustDomain,
    now: options.now ?? (() => new Date()),
    logger: silentLogger,
    ...(options.federation === undefined ? {} : { federation: options.federation(datastore, trustDomain) }),
  });
  const server = await startAdminServer({ socketPath, services, logger: silentLogger });
  return {
    dir,
    socketPath,
    dbPath,
    trustDomain,
    datastore,
    ca,
    server,
    async close() {
      await server.close();
      await datastore.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
