/**
 * The bundle refresher against real HTTPS bundle endpoints on loopback (node:https servers in
 * this process): https_web with a test web CA, https_spiffe with a test trust domain CA, rotation
 * on the far side, and hostile endpoints. Each hostile case must be refused with a recorded error
 * while the last good bundle stays stored.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { Bundle, marshalBundle, parseBundle } from '../../spiffe/bundle.js';
import { parseTrustDomain, type TrustDomain } from '../../spiffe/id.js';
import { certificatesToPem } from '../../spiffe/pem.js';
import { openTestDataStore } from '../../test/support/datastore.js';
import { TestCa, privateKeyPem, type TestSvid } from '../../test/support/testca.js';
import type { DataStore } from '../datastore/types.js';
import { MAX_BUNDLE_BYTES } from './fetch.js';
import { FederationMetrics } from './metrics.js';
import { BundleRefresher, type RelationshipSpec } from './refresher.js';

const FOREIGN = parseTrustDomain('foreign.test');
const OWN = parseTrustDomain('own.test');
const ENDPOINT_ID = 'spiffe://foreign.test/spire/server';

interface Endpoint {
  port: number;
  /** What the next requests get. */
  respond: (req: IncomingMessage, res: ServerResponse) => void;
  setCert(svid: TestSvid): void;
  requests: number;
  close(): Promise<void>;
}

async function startEndpoint(svid: TestSvid): Promise<Endpoint> {
  const tlsOf = (s: TestSvid) => ({ cert: certificatesToPem(s.chain), key: privateKeyPem(s.privateKey) });
  const server = https.createServer({ ...tlsOf(svid) });
  const ep: Endpoint = {
    port: 0,
    respond: (_req, res) => res.end('{}'),
    setCert: (s) => server.setSecureContext(tlsOf(s)),
    requests: 0,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  server.on('request', (req, res) => {
    ep.requests++;
    ep.respond(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  ep.port = (server.address() as net.AddressInfo).port;
  return ep;
}

function doc(td: TrustDomain, roots: Buffer[], sequence: bigint, refreshHintSeconds?: number): string {
  return marshalBundle(new Bundle(td, { x509Authorities: roots, sequence, ...(refreshHintSeconds === undefined ? {} : { refreshHintSeconds }) }));
}

const serve = (body: string) => (_req: unknown, res: ServerResponse) => {
  res.setHeader('content-type', 'application/json');
  res.end(body);
};

describe('bundle refresher', () => {
  let dir: string;
  let ds: DataStore;
  let webCa: TestCa;
  let foreignCa: TestCa;
  let rotatedCa: TestCa;
  let strangerCa: TestCa;
  let otherTdCa: TestCa;
  let webEp: Endpoint;
  let spiffeEp: Endpoint;
  const logs: string[] = [];
  const logger = {
    info: (_o: object, m: string) => logs.push(m),
    warn: (_o: object, m: string) => logs.push(m),
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'spindle-refresher-'));
    ds = await openTestDataStore(join(dir, 'ds.sqlite3'));
    webCa = await TestCa.create({ trustDomain: 'webpki.test' });
    foreignCa = await TestCa.create({ trustDomain: 'foreign.test' });
    rotatedCa = await TestCa.create({ trustDomain: 'foreign.test' });
    strangerCa = await TestCa.create({ trustDomain: 'foreign.test' });
    otherTdCa = await TestCa.create({ trustDomain: 'other.test' });
    webEp = await startEndpoint(await webCa.issueSvid('spiffe://webpki.test/web', { dnsNames: ['localhost'] }));
    spiffeEp = await startEndpoint(await foreignCa.issueSvid(ENDPOINT_ID));
  });

  after(async () => {
    await webEp.close();
    await spiffeEp.close();
    await ds.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const webSpec = (td = FOREIGN): RelationshipSpec => ({ trustDomain: td, bundleEndpointUrl: `https://localhost:${webEp.port}/`, bundleEndpointProfile: 'https_web', endpointSpiffeId: '' });
  const spiffeSpec = (id = ENDPOINT_ID): RelationshipSpec => ({
    trustDomain: FOREIGN,
    bundleEndpointUrl: `https://127.0.0.1:${spiffeEp.port}`,
    bundleEndpointProfile: 'https_spiffe',
    endpointSpiffeId: id,
  });
  const refresher = (spec: RelationshipSpec, extra: Partial<ConstructorParameters<typeof BundleRefresher>[0]> = {}): BundleRefresher =>
    new BundleRefresher({
      datastore: ds,
      trustDomain: OWN,
      staticRelationships: [spec],
      logger,
      fetch: { webRoots: certificatesToPem([webCa.rootDer]), connectAddress: '127.0.0.1', connectTimeoutMs: 2000, totalTimeoutMs: 2000 },
      ...extra,
    });
  const held = async (): Promise<{ sequence: bigint; roots: Buffer[] } | undefined> => {
    const b = await ds.getBundle(FOREIGN);
    return b === undefined ? undefined : { sequence: b.sequence, roots: parseBundle(FOREIGN, b.document).x509Authorities() };
  };
  const reset = async (roots: Buffer[], sequence: bigint): Promise<void> => {
    await ds.deleteBundle(FOREIGN, 1);
    await ds.setBundle({ trustDomain: FOREIGN, document: doc(FOREIGN, roots, sequence), sequence }, 1);
  };

  it('https_web: fetches the bundle, stores it as the federated bundle (an event agents are pushed), records the refresh and the metrics', async () => {
    await ds.deleteBundle(FOREIGN, 1);
    webEp.respond = serve(doc(FOREIGN, [foreignCa.rootDer], 7n, 120));
    const registry = new Registry();
    const r = refresher(webSpec(), { metrics: new FederationMetrics(registry) });
    const before = await ds.latestEventId();
    const out = await r.refreshNow(FOREIGN);
    assert.equal(out.ok, true, out.error);
    assert.equal(out.updated, true);
    assert.equal(out.nextInSeconds, 120, 'the refresh hint, within the bounds');
    assert.deepEqual(await held(), { sequence: 7n, roots: [foreignCa.rootDer] });
    const events = await ds.listEventsSince(before, 10);
    assert.deepEqual(events.map((e) => [e.kind, e.key]), [['bundle_updated', 'foreign.test']]);
    const st = r.refreshState(FOREIGN)!;
    assert.equal(st.lastError, '');
    assert.equal(st.lastSequence, 7n);
    assert.ok(st.lastSuccessAt > 0 && st.lastAttemptAt > 0);
    const text = await registry.metrics();
    assert.match(text, /spindle_server_federation_bundle_sequence\{trust_domain="foreign\.test"\} 7/);
    assert.match(text, /spindle_server_federation_last_refresh_success\{trust_domain="foreign\.test"\} 1/);

    const again = await r.refreshNow(FOREIGN);
    assert.equal(again.ok, true);
    assert.equal(again.updated, false, 'the same sequence and keys: nothing written');
    assert.equal((await ds.listEventsSince(before, 10)).length, 1);
  });

  it('a bundle held without a refresh hint (bootstrapped from `bundle show -format spiffe`) and served with one, same sequence and keys: the refresh succeeds and writes nothing', async () => {
    await reset([foreignCa.rootDer], 9n);
    webEp.respond = serve(doc(FOREIGN, [foreignCa.rootDer], 9n, 120));
    const before = await ds.latestEventId();
    const out = await refresher(webSpec()).refreshNow(FOREIGN);
    assert.equal(out.ok, true, out.error);
    assert.equal(out.updated, false);
    assert.deepEqual(await held(), { sequence: 9n, roots: [foreignCa.rootDer] });
    assert.equal(await ds.latestEventId(), before, 'nothing written');
  });

  it('the refresh hint is bounded: below the minimum it is raised, absent it is the 5 minute default', async () => {
    await ds.deleteBundle(FOREIGN, 1);
    const r = refresher(webSpec());
    webEp.respond = serve(doc(FOREIGN, [foreignCa.rootDer], 1n, 1));
    assert.equal((await r.refreshNow(FOREIGN)).nextInSeconds, 30);
    webEp.respond = serve(doc(FOREIGN, [foreignCa.rootDer], 2n));
    assert.equal((await r.refreshNow(FOREIGN)).nextInSeconds, 300);
    webEp.respond = serve(doc(FOREIGN, [foreignCa.rootDer], 3n, 86_400));
    assert.equal((await r.refreshNow(FOREIGN)).nextInSeconds, 3600);
  });

  it('a document without a sequence: other keys are stored under the next local sequence, the same keys change nothing', async () => {
    await reset([foreignCa.rootDer], 4n);
    const r = refresher(webSpec());
    webEp.respond = serve('{"keys":[]}'.replace('[]', JSON.stringify(JSON.parse(doc(FOREIGN, [rotatedCa.rootDer], 0n)).keys)));
    const out = await r.refreshNow(FOREIGN);
    assert.equal(out.ok, true, out.error);
    assert.equal(out.updated, true);
    assert.deepEqual(await held(), { sequence: 5n, roots: [rotatedCa.rootDer] });
    const again = await r.refreshNow(FOREIGN);
    assert.equal(again.updated, false);
    assert.equal((await held())?.sequence, 5n);
  });

  it('https_spiffe: authenticates the endpoint with the held bundle and follows a rotation on the far side', async () => {
    await reset([foreignCa.rootDer], 1n);
    const r = refresher(spiffeSpec());
    // The far side adds its next CA; the endpoint still presents an SVID of the old one.
    spiffeEp.setCert(await foreignCa.issueSvid(ENDPOINT_ID));
    spiffeEp.respond = serve(doc(FOREIGN, [foreignCa.rootDer, rotatedCa.rootDer], 2n));
    const first = await r.refreshNow(FOREIGN);
    assert.equal(first.ok, true, first.error);
    assert.deepEqual(await held(), { sequence: 2n, roots: [foreignCa.rootDer, rotatedCa.rootDer] });
    // The endpoint moves to the new CA and the old one leaves the bundle: verified by the new root now held.
    spiffeEp.setCert(await rotatedCa.issueSvid(ENDPOINT_ID));
    spiffeEp.respond = serve(doc(FOREIGN, [rotatedCa.rootDer], 3n));
    const second = await r.refreshNow(FOREIGN);
    assert.equal(second.ok, true, second.error);
    assert.deepEqual(await held(), { sequence: 3n, roots: [rotatedCa.rootDer] });
    spiffeEp.setCert(await foreignCa.issueSvid(ENDPOINT_ID));
  });

  it('https_spiffe without a held bundle says how to bootstrap it', async () => {
    await ds.deleteBundle(FOREIGN, 1);
    const requests = spiffeEp.requests;
    const out = await refresher(spiffeSpec()).refreshNow(FOREIGN);
    assert.equal(out.ok, false);
    assert.match(out.error!, /no bundle is held for trust domain "foreign\.test".*bundle set.*-trustDomainBundlePath/);
    assert.equal(spiffeEp.requests, requests, 'nothing was asked of the endpoint');
  });

  describe('hostile endpoints: refused with a clear recorded error, the last good bundle kept', () => {
    const GOOD_SEQ = 5n;
    const refusedWith = async (r: BundleRefresher, pattern: RegExp, roots: Buffer[] = [foreignCa.rootDer]): Promise<void> => {
      const out = await r.refreshNow(FOREIGN);
      assert.equal(out.ok, false, 'refused');
      assert.match(out.error!, pattern);
      assert.equal(r.refreshState(FOREIGN)!.lastError, out.error, 'recorded');
      assert.deepEqual(await held(), { sequence: GOOD_SEQ, roots }, 'the last good bundle is kept');
      assert.ok(out.nextInSeconds <= 5, 'retried after a backoff');
    };

    it('a bundle for another trust domain', async () => {
      await reset([foreignCa.rootDer], GOOD_SEQ);
      webEp.respond = serve(doc(parseTrustDomain('other.test'), [otherTdCa.rootDer], 9n));
      await refusedWith(refresher(webSpec()), /not for trust domain "foreign\.test": an X\.509 authority names "spiffe:\/\/other\.test"/);
    });

    it('a document that is not a SPIFFE bundle', async () => {
      await reset([foreignCa.rootDer], GOOD_SEQ);
      webEp.respond = serve('<html><body>hello</body></html>');
      await refusedWith(refresher(webSpec()), /did not serve a valid SPIFFE bundle document/);
      webEp.respond = serve('{"keys":[{"use":"x509-svid","kty":"EC","x5c":["bm90IGEgY2VydA=="]}],"spiffe_sequence":9}');
      await refusedWith(refresher(webSpec()), /did not serve a valid SPIFFE bundle document/);
    });

    it('a 100 MB response: reading stops at the cap', async (t) => {
      await reset([foreignCa.rootDer], GOOD_SEQ);
      let written = 0;
      const TOTAL = 100 * 1024 * 1024;
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      webEp.respond = (_req, res) => {
        res.setHeader('content-type', 'application/json');
        const pump = (): void => {
          while (written < TOTAL && !res.destroyed) {
            written += chunk.length;
            if (!res.write(chunk)) {
              res.once('drain', pump);
              return;
            }
          }
          if (!res.destroyed) res.end();
        };
        res.on('close', () => undefined);
        pump();
      };
      await refusedWith(refresher(webSpec()), /larger than the 1048576 bytes accepted \(stopped reading\)/);
      // The client closed the connection: the server could only push what the socket buffers hold beyond the cap.
      await new Promise((r) => setTimeout(r, 100));
      t.diagnostic(`the endpoint wrote ${written} bytes before the refresher closed the connection`);
      assert.ok(written < 16 * MAX_BUNDLE_BYTES, `the server wrote ${written} bytes of ${TOTAL} before the client went away`);
    });

    it('a declared Content-Length above the cap is refused before reading', async () => {
      await reset([foreignCa.rootDer], GOOD_SEQ);
      webEp.respond = (_req, res) => {
        res.setHeader('content-length', String(100 * 1024 * 1024));
        res.write('{');
      };
      await refusedWith(refresher(webSpec()), /response is 104857600 bytes, more than the 1048576 accepted/);
    });

    it('a slow endpoint: the total timeout', async () => {
      await reset([foreignCa.rootDer], GOOD_SEQ);
      webEp.respond = () => undefined; // never answers
      await refusedWith(refresher(webSpec(), { fetch: { webRoots: certificatesToPem([webCa.rootDer]), connectAddress: '127.0.0.1', totalTimeoutMs: 300 } }), /did not answer within 300 ms/);
    });

    it('an endpoint that accepts TCP but never completes TLS: the connect timeout', async () => {
      await reset([foreignCa.rootDer], GOOD_SEQ);
      const sockets: net.Socket[] = [];
      const silent = net.createServer((s) => sockets.push(s));
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      try {
        const port = (silent.address() as net.AddressInfo).port;
        const r = refresher({ ...webSpec(), bundleEndpointUrl: `https://localhost:${port}/` }, { fetch: { connectAddress: '127.0.0.1', connectTimeoutMs: 300, totalTimeoutMs: 5000 } });
        await refusedWith(r, /connecting to the bundle endpoint took longer than 300 ms/);
      } finally {
        for (const s of sockets) s.destroy();
        silent.close();
      }
    });

    it('https_web: a certificate for another host name', async () => {
      await reset([foreignCa.rootDer], GOOD_SEQ);
      const other = await startEndpoint(await webCa.issueSvid('spiffe://webpki.test/web', { dnsNames: ['other.example'] }));
      try {
        other.respond = serve(doc(FOREIGN, [foreignCa.rootDer], 9n));
        await refusedWith(refresher({ ...webSpec(), bundleEndpointUrl: `https://localhost:${other.port}/` }), /Hostname\/IP does not match certificate's altnames/);
        assert.equal(other.requests, 0, 'no request reached an endpoint that failed authentication');
      } finally {
        await other.close();
      }
    });

    it('https_web: a certificate no trusted root signed', async () => {
      await reset([foreignCa.rootDer], GOOD_SEQ);
      webEp.respond = serve(doc(FOREIGN, [foreignCa.rootDer], 9n));
      await refusedWith(refresher(webSpec(), { fetch: { connectAddress: '127.0.0.1' } }), /unable to verify the first certificate|self.signed|unable to get local issuer/i);
    });

    it('https_spiffe: the endpoint presents another SPIFFE ID', async () => {
      await reset([foreignCa.rootDer], GOOD_SEQ);
      spiffeEp.respond = serve(doc(FOREIGN, [foreignCa.rootDer], 9n));
      spiffeEp.setCert(await foreignCa.issueSvid('spiffe://foreign.test/not-the-server'));
      try {
        const requests = spiffeEp.requests;
        await refusedWith(refresher(spiffeSpec()), /presented SPIFFE ID "spiffe:\/\/foreign\.test\/not-the-server", expected "spiffe:\/\/foreign\.test\/spire\/server"/);
        assert.equal(spiffeEp.requests, requests, 'no request was sent');
      } finally {
        spiffeEp.setCert(await foreignCa.issueSvid(ENDPOINT_ID));
      }
    });

    it('https_spiffe: the right SPIFFE ID from a CA the held bundle does not hold', async () => {
      await reset([foreignCa.rootDer], GOOD_SEQ);
      spiffeEp.respond = serve(doc(FOREIGN, [strangerCa.rootDer], 9n));
      spiffeEp.setCert(await strangerCa.issueSvid(ENDPOINT_ID));
      try {
        await refusedWith(refresher(spiffeSpec()), /fetching the bundle from https:\/\/127\.0\.0\.1:\d+ failed: .*(unable to verify|unable to get local issuer|self.signed)/i);
      } finally {
        spiffeEp.setCert(await foreignCa.issueSvid(ENDPOINT_ID));
      }
    });

    it('a sequence going backwards, and other keys under the held sequence', async () => {
      await reset([foreignCa.rootDer], GOOD_SEQ);
      webEp.respond = serve(doc(FOREIGN, [rotatedCa.rootDer], GOOD_SEQ - 1n));
      await refusedWith(refresher(webSpec()), /served sequence 4, older than the held sequence 5: refused, keeping the held bundle/);
      webEp.respond = serve(doc(FOREIGN, [rotatedCa.rootDer], GOOD_SEQ));
      await refusedWith(refresher(webSpec()), /other keys under the held sequence 5/);
    });

    it('an HTTP status other than 200', async () => {
      await reset([foreignCa.rootDer], GOOD_SEQ);
      webEp.respond = (_req, res) => {
        res.statusCode = 302;
        res.setHeader('location', 'https://elsewhere.example/');
        res.end();
      };
      await refusedWith(refresher(webSpec()), /answered HTTP 302 \(expected 200\)/);
    });
  });

  it('scheduled: a failing endpoint is retried with backoff until it serves, and a dynamic relationship is refreshed with its state stored', async () => {
    await ds.deleteBundle(FOREIGN, 1);
    const dynamic = { ...webSpec() };
    await ds.createFederationRelationship(dynamic, 1);
    try {
      let calls = 0;
      webEp.respond = (req, res) => {
        calls++;
        if (calls < 3) {
          res.statusCode = 503;
          res.end();
        } else serve(doc(FOREIGN, [foreignCa.rootDer], 11n, 3600))(req, res);
      };
      const r = new BundleRefresher({
        datastore: ds,
        trustDomain: OWN,
        logger,
        fetch: { webRoots: certificatesToPem([webCa.rootDer]), connectAddress: '127.0.0.1' },
        timing: { retryFirstMs: 20, retryMaxMs: 100 },
      });
      await r.start();
      try {
        const deadline = Date.now() + 10_000;
        while ((await ds.getBundle(FOREIGN))?.sequence !== 11n && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
        assert.equal((await ds.getBundle(FOREIGN))?.sequence, 11n, 'stored after the retries');
        assert.equal(calls, 3, 'two failures, then the success; the next refresh is an hour away');
        const stored = (await ds.getFederationRelationship(FOREIGN))!;
        assert.equal(stored.refresh.lastError, '');
        assert.equal(stored.refresh.lastSequence, 11n);
        assert.ok(stored.refresh.lastSuccessAt > 0);
        assert.equal(r.isStatic(FOREIGN), false);
      } finally {
        await r.stop();
      }
    } finally {
      await ds.deleteFederationRelationship(FOREIGN);
    }
  });

  it('two servers on one database: a stale endpoint never writes an older sequence over a newer one', async () => {
    await ds.deleteBundle(FOREIGN, 1);
    const stale = await startEndpoint(await webCa.issueSvid('spiffe://webpki.test/web', { dnsNames: ['localhost'] }));
    try {
      webEp.respond = serve(doc(FOREIGN, [foreignCa.rootDer, rotatedCa.rootDer], 3n));
      stale.respond = serve(doc(FOREIGN, [foreignCa.rootDer], 2n));
      const a = refresher(webSpec());
      const b = refresher({ ...webSpec(), bundleEndpointUrl: `https://localhost:${stale.port}/` });
      const [ra, rb] = await Promise.all([a.refreshNow(FOREIGN), b.refreshNow(FOREIGN)]);
      assert.equal(ra.ok, true, ra.error);
      assert.equal((await ds.getBundle(FOREIGN))?.sequence, 3n, 'the newest sequence is what is stored');
      if (rb.ok) assert.equal(rb.updated, true, 'b stored sequence 2 before a stored 3');
      else assert.match(rb.error!, /older than the held sequence 3/);
      const late = await b.refreshNow(FOREIGN);
      assert.equal(late.ok, false);
      assert.match(late.error!, /served sequence 2, older than the held sequence 3/);
      assert.equal((await ds.getBundle(FOREIGN))?.sequence, 3n);
    } finally {
      await stale.close();
    }
  });

  it('stop() cancels a fetch in flight instead of waiting for its timeout', async () => {
    webEp.respond = () => undefined; // never answers
    const r = refresher(webSpec(), { fetch: { webRoots: certificatesToPem([webCa.rootDer]), connectAddress: '127.0.0.1', totalTimeoutMs: 600_000 } });
    const seen = webEp.requests;
    const pending = r.refreshNow(FOREIGN);
    const deadline = Date.now() + 10_000;
    while (webEp.requests === seen && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
    const requests = webEp.requests;
    assert.equal(requests, seen + 1, 'the request reached the endpoint');
    await r.stop();
    const out = await pending;
    assert.equal(out.ok, false);
    assert.match(out.error!, /cancelled: the server is stopping/);
    assert.equal(webEp.requests, requests);
  });
});
