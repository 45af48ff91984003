/**
 * Fetching a foreign trust domain's bundle from its SPIFFE bundle endpoint (the client side of
 * the SPIFFE Trust Domain and Bundle specification, section 5), as the refresher does it:
 *
 * - One GET over HTTPS; redirects are not followed and any status but 200 is a failure.
 * - https_web: the server is authenticated by the system's CA roots (Node's, plus
 *   NODE_EXTRA_CA_CERTS) or the roots given in `webRoots`, with the usual hostname check.
 * - https_spiffe: the server must present an X509-SVID that chains to the bundle already held
 *   for the endpoint SPIFFE ID's trust domain (`heldBundles`), with exactly the expected SPIFFE ID
 *   as its URI SAN; no hostname check. It is checked during the TLS handshake (OpenSSL against
 *   the held roots, then the SPIFFE rules of spiffe/x509 verifyX509Svid), so nothing is sent to an
 *   endpoint that fails.
 * - Bounded: a connect timeout (TCP and TLS), a total timeout for the whole exchange, and a size
 *   cap: a Content-Length above it is refused before reading, and reading stops (the connection is
 *   destroyed) as soon as the body passes it, so memory stays bounded whatever the far side sends.
 * - The body must be a SPIFFE bundle document that parses strictly (spiffe/bundle parseBundle),
 *   and every X.509 authority that names a SPIFFE trust domain (a URI SAN) must name the
 *   expected one: a bundle served for another trust domain is refused.
 *
 * Failures are `BundleFetchError` with a message meant for operators (it ends up in
 * `federation show` and the logs).
 */
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { LookupFunction } from 'node:net';
import { rootCertificates, type PeerCertificate, type TLSSocket } from 'node:tls';
import { parseBundle, type Bundle } from '../../spiffe/bundle.js';
import { parseSpiffeId, trustDomainOf, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import { certificatesToPem } from '../../spiffe/pem.js';
import type { X509BundleSource } from '../../spiffe/source.js';
import { parseCertificate, verifyX509Svid } from '../../spiffe/x509/index.js';

/** Largest bundle document accepted (bytes). */
export const MAX_BUNDLE_BYTES = 1024 * 1024;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_TOTAL_TIMEOUT_MS = 30_000;

export class BundleFetchError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BundleFetchError';
  }
}

export interface FetchBundleOptions {
  /** The trust domain whose bundle is fetched. */
  trustDomain: TrustDomain;
  url: string;
  profile: 'https_web' | 'https_spiffe';
  /** https_spiffe: the endpoint server's SPIFFE ID. */
  endpointSpiffeId?: string;
  /** https_spiffe: the bundles held now (the endpoint SPIFFE ID's trust domain is looked up). */
  heldBundles?: X509BundleSource;
  /** https_web: CA roots (PEM) trusted beside the system's (tests; a private web PKI). */
  webRoots?: string;
  maxBytes?: number;
  connectTimeoutMs?: number;
  totalTimeoutMs?: number;
  /** Aborts the fetch (the server is stopping). */
  signal?: AbortSignal;
  /** Connect to this IPv4 address whatever the URL's host resolves to (tests: `localhost` names in certificates). */
  connectAddress?: string;
}

function describeTlsError(err: NodeJS.ErrnoException): string {
  return err.code !== undefined && !err.message.includes(err.code) ? `${err.message} (${err.code})` : err.message;
}

/** The presented chain (leaf first) from a peer certificate object with its issuer links. */
function chainOf(cert: PeerCertificate & { issuerCertificate?: PeerCertificate }): Buffer[] {
  const out: Buffer[] = [];
  let c: (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined = cert;
  while (c !== undefined && c.raw !== undefined && out.length < 16) {
    if (out.some((d) => d.equals(c!.raw))) break; // a self-signed root links to itself
    out.push(c.raw);
    c = c.issuerCertificate as typeof c;
  }
  return out;
}

/** Refuses a bundle whose X.509 authorities name another SPIFFE trust domain. */
function checkTrustDomainOfAuthorities(td: TrustDomain, bundle: Bundle): void {
  for (const der of bundle.x509Authorities()) {
    let uris: string[] = [];
    try {
      uris = parseCertificate(der).uriSans ?? [];
    } catch {
      continue; // admitted by the bundle parser; nothing more to learn here
    }
    for (const uri of uris) {
      if (!uri.startsWith('spiffe://')) continue;
      let other: TrustDomain;
      try {
        other = trustDomainOf(parseSpiffeId(uri));
      } catch {
        continue;
      }
      if (other !== td) {
        throw new BundleFetchError(`the bundle served is not for trust domain "${td}": an X.509 authority names "${uri}"`);
      }
    }
  }
}

/** Fetches and strictly parses the bundle; throws BundleFetchError. */
export async function fetchBundle(o: FetchBundleOptions): Promise<Bundle> {
  const maxBytes = o.maxBytes ?? MAX_BUNDLE_BYTES;
  let url: URL;
  try {
    url = new URL(o.url);
  } catch (err) {
    throw new BundleFetchError(`invalid bundle endpoint URL "${o.url}"`, { cause: err });
  }
  if (url.protocol !== 'https:') throw new BundleFetchError(`bundle endpoint URL "${o.url}" is not https`);

  const tlsOptions: https.RequestOptions = {};
  if (o.profile === 'https_web') {
    if (o.webRoots !== undefined) tlsOptions.ca = [...rootCertificates, o.webRoots];
  } else {
    if (o.endpointSpiffeId === undefined || o.endpointSpiffeId === '') throw new BundleFetchError('https_spiffe needs an endpoint SPIFFE ID');
    let expected: SpiffeId;
    try {
      expected = parseSpiffeId(o.endpointSpiffeId);
    } catch (err) {
      throw new BundleFetchError(`invalid endpoint SPIFFE ID "${o.endpointSpiffeId}"`, { cause: err });
    }
    const endpointTd = trustDomainOf(expected);
    const roots = o.heldBundles?.getX509Authorities(endpointTd);
    if (roots === undefined || roots.length === 0) {
      throw new BundleFetchError(
        `no bundle is held for trust domain "${endpointTd}" to authenticate the endpoint ${expected} (https_spiffe): ` +
          'bootstrap it with `spindle-server bundle set` or -trustDomainBundlePath',
      );
    }
    tlsOptions.ca = certificatesToPem(roots);
    tlsOptions.checkServerIdentity = (_host: string, cert: PeerCertificate): Error | undefined => {
      try {
        const verified = verifyX509Svid(chainOf(cert), o.heldBundles!);
        if (verified.id !== expected) return new Error(`the endpoint presented SPIFFE ID "${verified.id}", expected "${expected}"`);
      } catch (err) {
        return new Error(`the endpoint's certificate is not an X509-SVID of the held bundle: ${(err as Error).message}`);
      }
      return undefined;
    };
  }
  if (o.connectAddress !== undefined) {
    const address = o.connectAddress;
    tlsOptions.lookup = ((_host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void) => {
      if (opts?.all === true) cb(null, [{ address, family: 4 }]);
      else cb(null, address, 4);
    }) as unknown as LookupFunction;
  }

  const connectMs = o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const totalMs = o.totalTimeoutMs ?? DEFAULT_TOTAL_TIMEOUT_MS;

  const body = await new Promise<Buffer>((resolve, reject) => {
    let settled = false;
    const timers: NodeJS.Timeout[] = [];
    const cleanups: Array<() => void> = [];
    const finish = (err: Error | undefined, value?: Buffer): void => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      for (const c of cleanups) c();
      if (err !== undefined) {
        req.destroy();
        reject(err);
      } else resolve(value!);
    };
    const req = https.request(
      url,
      { method: 'GET', agent: false, headers: { accept: 'application/json' }, ...tlsOptions, rejectUnauthorized: true },
      (res: IncomingMessage) => {
        if (res.statusCode !== 200) {
          finish(new BundleFetchError(`the bundle endpoint answered HTTP ${res.statusCode ?? '?'} (expected 200)`));
          return;
        }
        const declared = Number(res.headers['content-length']);
        if (Number.isFinite(declared) && declared > maxBytes) {
          finish(new BundleFetchError(`the bundle endpoint's response is ${declared} bytes, more than the ${maxBytes} accepted`));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBytes) {
            finish(new BundleFetchError(`the bundle endpoint's response is larger than the ${maxBytes} bytes accepted (stopped reading)`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => finish(undefined, Buffer.concat(chunks)));
        res.on('error', (err) => finish(new BundleFetchError(`reading the bundle endpoint's response failed: ${err.message}`, { cause: err })));
      },
    );
    timers.push(
      setTimeout(() => finish(new BundleFetchError(`the bundle endpoint did not answer within ${totalMs} ms`)), totalMs),
      setTimeout(() => finish(new BundleFetchError(`connecting to the bundle endpoint took longer than ${connectMs} ms`)), connectMs),
    );
    if (o.signal !== undefined) {
      const signal = o.signal;
      const onAbort = (): void => finish(new BundleFetchError('the fetch was cancelled: the server is stopping'));
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        cleanups.push(() => signal.removeEventListener('abort', onAbort));
      }
    }
    req.on('socket', (socket) => {
      (socket as TLSSocket).once('secureConnect', () => clearTimeout(timers[1]!));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      finish(new BundleFetchError(`fetching the bundle from ${url.origin} failed: ${describeTlsError(err)}`, { cause: err }));
    });
    req.end();
  });

  let bundle: Bundle;
  try {
    bundle = parseBundle(o.trustDomain, body);
  } catch (err) {
    throw new BundleFetchError(`the bundle endpoint did not serve a valid SPIFFE bundle document: ${(err as Error).message}`, { cause: err });
  }
  checkTrustDomainOfAuthorities(o.trustDomain, bundle);
  return bundle;
}
