/**
 * The processes of the SDK TLS benchmark (bench/scenarios/sdk.ts), forked by it: `--sdk-server`
 * runs four servers side by side (plain node:tls / node:https mutual TLS, and the same built with
 * the SDK's createMtlsServer / createMtlsHttpsServer) with the same certificates; `--sdk-client`
 * drives load at one of them when asked, for a bounded time, and reports what it completed.
 * Both take their SVID and bundle from an X509Source on a Workload API (the parent's test-kit
 * agent), as a workload would; the plain servers and clients get the same certificates as PEM.
 */
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { trustDomainOf } from '../../spiffe/id.js';
import { exportPrivateKeyPkcs8 } from '../../spiffe/keys.js';
import { toPem } from '../../spiffe/pem.js';
import { authorizeID } from '../../spiffe/sdk/authorizer.js';
import { createMtlsHttpsServer, createMtlsServer, mtlsClientOptions, SpiffeHttpsAgent } from '../../spiffe/sdk/tlsconfig.js';
import { X509Source } from '../../spiffe/sdk/x509source.js';

export interface Ports {
  plainTls: number;
  libTls: number;
  plainHttps: number;
  libHttps: number;
}

export type PeerMsg =
  | { op: 'serve'; agentAddress: string; ownId: string; peerId: string }
  | { op: 'run'; kind: 'handshake' | 'keepalive'; lib: boolean; port: number; seconds: number; concurrency: number; agentAddress: string; ownId: string; peerId: string };

export type PeerReply =
  | { op: 'serving'; ports: Ports }
  | { op: 'done'; completed: number; seconds: number; errors: string[] }
  | { op: 'fatal'; error: string };

const BODY = Buffer.from('ok\n');
/** Errors kept per run (the count is what matters; a few messages say why). */
const MAX_ERRORS = 5;

let source: X509Source | undefined;

/** This process's X509Source (created once), choosing the SVID of `id`. */
async function sourceOf(agentAddress: string, id: string): Promise<X509Source> {
  source ??= await X509Source.create({ socketPath: agentAddress, picker: (svids) => svids.find((v) => v.id === id) ?? svids[0]! });
  if (source.getX509Svid().id !== id) throw new Error(`the Workload API has no SVID ${id}`);
  return source;
}

/** The same SVID and trust domain bundle as PEM, for the plain servers and clients. */
function pems(src: X509Source): { key: string; cert: string; ca: string[] } {
  const svid = src.getX509Svid();
  const td = trustDomainOf(svid.id);
  return {
    key: toPem('PRIVATE KEY', exportPrivateKeyPkcs8(svid.privateKey)),
    cert: svid.certificates.map((c) => toPem('CERTIFICATE', c)).join(''),
    ca: (src.getX509Authorities(td) ?? []).map((d) => toPem('CERTIFICATE', d)),
  };
}

async function listen(server: tls.Server): Promise<number> {
  await new Promise<void>((ok, bad) => {
    server.once('error', bad);
    server.listen(0, '127.0.0.1', () => ok());
  });
  return (server.address() as AddressInfo).port;
}

async function serve(m: Extract<PeerMsg, { op: 'serve' }>): Promise<Ports> {
  const src = await sourceOf(m.agentAddress, m.ownId);
  const { key, cert, ca } = pems(src);
  const authorizer = authorizeID(m.peerId);
  // Plain mutual TLS: OpenSSL verifies the client's chain to the trust domain's root.
  const plainOpts: tls.TlsOptions = { key, cert, ca, requestCert: true, rejectUnauthorized: true };
  const greet = (s: tls.TLSSocket): void => {
    s.on('error', () => {});
    s.end('k');
  };
  const answer = (_req: unknown, res: { setHeader(n: string, v: string): void; end(b: Buffer): void }): void => {
    res.setHeader('content-type', 'text/plain');
    res.end(BODY);
  };
  const plainTls = tls.createServer(plainOpts, greet);
  const libTls = createMtlsServer(src, src, authorizer, greet);
  const plainHttps = https.createServer(plainOpts, answer);
  const libHttps = createMtlsHttpsServer(src, src, authorizer, answer);
  for (const s of [plainTls, libTls, plainHttps, libHttps]) {
    s.on('tlsClientError', () => {});
    // The SDK servers report refused clients; none is expected, so count them as errors in the parent's view.
    s.on('spiffeRejected', (err: Error) => process.send!({ op: 'fatal', error: `server refused a bench client: ${err.message}` } satisfies PeerReply));
  }
  return { plainTls: await listen(plainTls), libTls: await listen(libTls), plainHttps: await listen(plainHttps), libHttps: await listen(libHttps) };
}

/** One full handshake: connect, wait for the server's byte (sent after its checks), close. */
function handshakeOnce(opts: tls.ConnectionOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = tls.connect(opts);
    const timer = setTimeout(() => done(new Error('handshake: no byte from the server in 10 s')), 10_000);
    function done(err?: Error): void {
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve();
    }
    s.once('data', () => done());
    s.once('error', (e) => done(e));
    s.once('close', () => done(new Error('handshake: closed before the server answered')));
  });
}

function requestOnce(opts: https.RequestOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = https.request({ ...opts, method: 'GET', path: '/' }, (res) => {
      let n = 0;
      res.on('data', (d: Buffer) => (n += d.length));
      res.on('end', () => (res.statusCode === 200 && n === BODY.length ? resolve() : reject(new Error(`status ${res.statusCode}, ${n} bytes`))));
      res.on('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error('request: no answer in 10 s')));
    req.on('error', reject);
    req.end();
  });
}

async function run(m: Extract<PeerMsg, { op: 'run' }>): Promise<Extract<PeerReply, { op: 'done' }>> {
  const src = await sourceOf(m.agentAddress, m.ownId);
  const { key, cert, ca } = pems(src);
  const errors: string[] = [];
  let failed = 0;
  let call: () => Promise<void>;
  let agent: https.Agent | undefined;
  if (m.kind === 'handshake') {
    // The same plain node:tls client for both servers, as cheap as it gets (one secure context
    // for every connection), so that the row measures the server. Peers are SPIFFE IDs, not
    // host names, so the host name check is off; the chain is checked by OpenSSL.
    const secureContext = tls.createSecureContext({ key, cert, ca });
    const opts: tls.ConnectionOptions = { host: '127.0.0.1', port: m.port, secureContext, checkServerIdentity: () => undefined };
    call = () => handshakeOnce(opts);
  } else if (m.lib) {
    const opts = mtlsClientOptions(src, src, authorizeID(m.peerId));
    // The SDK's options with the SDK's agent (each new connection verified before use), kept alive.
    agent = new SpiffeHttpsAgent(src, authorizeID(m.peerId), { keepAlive: true, maxSockets: m.concurrency });
    call = () => requestOnce({ ...opts, agent, host: '127.0.0.1', port: m.port });
  } else {
    agent = new https.Agent({ keepAlive: true, maxSockets: m.concurrency, maxCachedSessions: 0 });
    const opts: https.RequestOptions = { agent, host: '127.0.0.1', port: m.port, key, cert, ca, checkServerIdentity: () => undefined };
    call = () => requestOnce(opts);
  }
  // Keep-alive: open every connection first (not counted).
  if (m.kind === 'keepalive') await Promise.all(Array.from({ length: m.concurrency }, () => call()));
  let completed = 0;
  const start = performance.now();
  const end = start + m.seconds * 1000;
  const loop = async (): Promise<void> => {
    // Bounded by time, and by count as a safety net.
    for (let i = 0; i < 10_000_000 && performance.now() < end; i++) {
      try {
        await call();
        completed++;
      } catch (err) {
        failed++;
        if (errors.length < MAX_ERRORS) errors.push((err as Error).message);
        if (failed > 1000) return;
      }
    }
  };
  await Promise.all(Array.from({ length: m.concurrency }, loop));
  const seconds = (performance.now() - start) / 1000;
  agent?.destroy();
  if (failed > errors.length) errors.push(`... ${failed} failures in all`);
  return { op: 'done', completed, seconds, errors };
}

if (process.argv.includes('--sdk-server') || process.argv.includes('--sdk-client')) {
  process.on('message', (m: PeerMsg) => {
    const work = m.op === 'serve' ? serve(m).then((ports): PeerReply => ({ op: 'serving', ports })) : run(m);
    work.then(
      (r) => process.send!(r),
      (err: Error) => process.send!({ op: 'fatal', error: err.stack ?? err.message } satisfies PeerReply),
    );
  });
  process.on('disconnect', () => process.exit(0));
}
