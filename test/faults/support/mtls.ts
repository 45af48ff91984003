/**
 * Two workloads that verify each other continuously with node:tls: a TLS server presenting
 * SVID `serverId` and a client presenting SVID `clientId`, each taking its SVID and trust
 * bundle from its own Workload API watch (the latest update at the moment of each handshake),
 * each verifying the peer's chain against that bundle and its URI SAN against the expected ID.
 */
import { X509Certificate } from 'node:crypto';
import { createServer, connect, type Server, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { createWorkloadApiClient, type WorkloadApiClient, type X509Context } from '../../../spiffe/workloadapi/index.js';

const pem = (der: Uint8Array, label = 'CERTIFICATE'): string => `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;

function material(ctx: X509Context, id: string) {
  const svid = ctx.svids.find((s) => s.id.toString() === id);
  if (!svid) throw new Error(`no SVID ${id} in the current context (${ctx.svids.map((s) => s.id.toString()).join(', ')})`);
  const ca = ctx.bundles.bundles().flatMap((b) => b.x509Authorities().map((d) => pem(d)));
  // The issuer: the bundle root (by fingerprint) whose key signed the top of the chain.
  const top = new X509Certificate(svid.certificates.at(-1)!);
  const roots = ctx.bundles.bundles().flatMap((b) => b.x509Authorities().map((d) => new X509Certificate(d)));
  const root = roots.find((r) => top.checkIssued(r) && top.verify(r.publicKey));
  const issuer = root ? root.fingerprint256.replace(/:/g, '').slice(0, 16) : 'unknown';
  return { cert: svid.certificates.map((d) => pem(d)).join(''), key: svid.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, ca, issuer };
}

function uriSan(cert: { subjectaltname?: string } | undefined): string | undefined {
  return /URI:([^,\s]+)/.exec(cert?.subjectaltname ?? '')?.[1];
}

export interface MtlsPairStats {
  ok: number;
  failed: number;
  failures: string[];
  /** Distinct CA certificates (by subject key) seen signing the SVIDs used. */
  issuers: Set<string>;
  bundleSizes: Set<number>;
}

export interface MtlsPair {
  stats: MtlsPairStats;
  /** One handshake each way of verification; resolves true on success (failures are recorded). */
  handshake(): Promise<boolean>;
  close(): Promise<void>;
}

export async function startMtlsPair(opts: { address: string; serverId: string; clientId: string }): Promise<MtlsPair> {
  const clients: WorkloadApiClient[] = [];
  const latest = async (): Promise<() => X509Context> => {
    const c = createWorkloadApiClient({ address: opts.address, backoff: { initialMs: 200, maxMs: 1000 } });
    clients.push(c);
    let ctx: X509Context | undefined;
    let first: ((v: void) => void) | undefined;
    const ready = new Promise<void>((r) => (first = r));
    c.watchX509Context(
      (x) => {
        ctx = x;
        first?.();
      },
      () => {},
    );
    await ready;
    return () => ctx!;
  };
  const serverCtx = await latest();
  const clientCtx = await latest();
  const stats: MtlsPairStats = { ok: 0, failed: 0, failures: [], issuers: new Set(), bundleSizes: new Set() };
  const serverSide = (): ReturnType<typeof material> => material(serverCtx(), opts.serverId);

  // The server's key/cert/CA are chosen per connection (SNICallback) from its latest update.
  const { createSecureContext } = await import('node:tls');
  const tlsServer: Server = createServer({
    requestCert: true,
    rejectUnauthorized: true,
    SNICallback: (_name, cb) => {
      try {
        const m = serverSide();
        cb(null, createSecureContext({ cert: m.cert, key: m.key, ca: m.ca }));
      } catch (err) {
        cb(err as Error);
      }
    },
    ...(() => {
      const m = serverSide();
      return { cert: m.cert, key: m.key, ca: m.ca };
    })(),
  });
  const serverVerdicts: string[] = [];
  tlsServer.on('secureConnection', (s: TLSSocket) => {
    const peer = uriSan(s.getPeerCertificate());
    if (peer !== opts.clientId) serverVerdicts.push(`server saw peer ${peer}, expected ${opts.clientId}`);
    s.end('ok');
  });
  tlsServer.on('tlsClientError', (err) => serverVerdicts.push(`server rejected the client: ${err.message}`));
  await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r));
  const port = (tlsServer.address() as AddressInfo).port;

  const handshake = (): Promise<boolean> =>
    new Promise((resolve) => {
      let m: ReturnType<typeof material>;
      let sm: ReturnType<typeof material>;
      try {
        m = material(clientCtx(), opts.clientId);
        sm = serverSide();
      } catch (err) {
        stats.failed++;
        stats.failures.push((err as Error).message);
        return resolve(false);
      }
      stats.issuers.add(`${m.issuer} ${sm.issuer}`);
      stats.bundleSizes.add(m.ca.length);
      const before = serverVerdicts.length;
      const sock = connect({
        host: '127.0.0.1',
        port,
        servername: 'spiffe',
        cert: m.cert,
        key: m.key,
        ca: m.ca,
        rejectUnauthorized: true,
        checkServerIdentity: (_host, cert) => (uriSan(cert) === opts.serverId ? undefined : new Error(`server presented ${uriSan(cert)}, expected ${opts.serverId}`)),
      });
      let data = '';
      const done = (err?: string): void => {
        sock.destroy();
        setImmediate(() => {
          const srvErr = serverVerdicts.slice(before);
          if (err || srvErr.length > 0 || data !== 'ok') {
            stats.failed++;
            stats.failures.push(`${new Date().toISOString()} ${[err, ...srvErr, data !== 'ok' ? `reply ${JSON.stringify(data)}` : ''].filter(Boolean).join('; ')}`);
            resolve(false);
          } else {
            stats.ok++;
            resolve(true);
          }
        });
      };
      sock.setTimeout(5000, () => done('timeout'));
      sock.on('data', (d: Buffer) => (data += d.toString()));
      sock.on('end', () => done());
      sock.on('error', (e) => done(e.message));
    });

  return {
    stats,
    handshake,
    close: async () => {
      for (const c of clients) c.close();
      await new Promise<void>((r) => tlsServer.close(() => r()));
    },
  };
}
