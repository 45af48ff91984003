/**
 * UpstreamAuthority "disk" (SPIRE's plugin of that name): the server's X.509 CAs become
 * intermediates signed by an upstream CA whose key and certificate are files.
 *
 * - key_file_path: the upstream CA's private key, PEM (PKCS#8, SEC1 "EC PRIVATE KEY" or PKCS#1).
 * - cert_file_path: the upstream CA certificate first, optionally followed by its chain.
 * - bundle_file_path (optional): the upstream root certificate(s) that go into the trust bundle.
 *   Default: the last certificate of cert_file_path, which must then be self-signed.
 *
 * Checked at load (CaError `upstream`, the message names the file): files readable and of the
 * right kind; the first certificate is a CA with keyCertSign, currently valid, not pathLen 0,
 * not a CA of another trust domain; the key is that certificate's key; cert_file_path is in
 * issuing order; the chain ends at one of the roots (by issuer Name and signature).
 *
 * SVID chains under an upstream: [leaf, our intermediate, ...cert_file_path certificates that are
 * not roots]; the bundle holds only the roots.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { TrustDomain } from '../../spiffe/id.js';
import { pemToCertificates } from '../../spiffe/pem.js';
import { certificateMatchesKey, createIssuer, parseCertificate, type CertificateInfo, type Issuer } from '../../spiffe/x509/index.js';
import { CaError } from './errors.js';

export interface UpstreamDiskOptions {
  keyFilePath: string;
  certFilePath: string;
  bundleFilePath?: string;
}

export interface UpstreamAuthority {
  /** Signs our intermediates (the upstream CA certificate and its key). */
  readonly issuer: Issuer;
  /** The upstream CA certificate. */
  readonly certificate: X509Certificate;
  /** cert_file_path certificates that are not roots: appended after our intermediate in SVID chains. */
  readonly intermediates: readonly Buffer[];
  /** The trust bundle's X.509 authorities. */
  readonly roots: readonly Buffer[];
  readonly notAfter: Date;
  readonly certFilePath: string;
}

function upstreamError(message: string, cause?: unknown): CaError {
  return new CaError('upstream', `UpstreamAuthority "disk": ${message}`, cause === undefined ? undefined : { cause });
}

async function readText(path: string, key: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (cause) {
    throw upstreamError(`cannot read ${key} ${path}: ${(cause as Error).message}`, cause);
  }
}

function readCertificates(text: string, path: string, key: string): { der: Buffer[]; info: CertificateInfo[]; x509: X509Certificate[] } {
  let der: Buffer[];
  try {
    der = pemToCertificates(text);
  } catch (cause) {
    throw upstreamError(`${key} ${path} must hold PEM CERTIFICATE blocks: ${(cause as Error).message}`, cause);
  }
  try {
    return { der, info: der.map((d) => parseCertificate(d)), x509: der.map((d) => new X509Certificate(d)) };
  } catch (cause) {
    throw upstreamError(`${key} ${path} holds a certificate that does not parse: ${(cause as Error).message}`, cause);
  }
}

function issued(child: X509Certificate, parent: X509Certificate): boolean {
  try {
    return child.checkIssued(parent) && child.verify(parent.publicKey);
  } catch {
    return false;
  }
}

/** Reads and validates the upstream files. `now` is the CA's clock. */
export async function loadUpstreamDisk(opts: UpstreamDiskOptions, trustDomain: TrustDomain, now: Date): Promise<UpstreamAuthority> {
  const { keyFilePath, certFilePath, bundleFilePath } = opts;
  if (!keyFilePath || !certFilePath) throw upstreamError('key_file_path and cert_file_path are required');

  let key: KeyObject;
  const keyText = await readText(keyFilePath, 'key_file_path');
  try {
    key = createPrivateKey({ key: keyText, format: 'pem' });
  } catch (cause) {
    throw upstreamError(`key_file_path ${keyFilePath} does not hold a PEM private key`, cause);
  }

  const chain = readCertificates(await readText(certFilePath, 'cert_file_path'), certFilePath, 'cert_file_path');
  const ca = chain.info[0]!;
  const where = `the first certificate in cert_file_path ${certFilePath} (serial ${ca.serialHex})`;
  if (!ca.isCa) throw upstreamError(`${where} is not a CA (basicConstraints CA=true missing)`);
  if (ca.keyUsage === undefined) throw upstreamError(`${where} has no keyUsage extension (keyCertSign required)`);
  if (!ca.keyUsage.keyCertSign) throw upstreamError(`${where} lacks keyUsage keyCertSign`);
  if (ca.pathLen === 0) throw upstreamError(`${where} has pathLen 0: it cannot sign the server's intermediate CA`);
  if (!certificateMatchesKey(ca, key)) {
    throw upstreamError(`the private key in key_file_path ${keyFilePath} does not match ${where}`);
  }
  if (now.getTime() < ca.notBefore.getTime()) throw upstreamError(`${where} is not valid before ${ca.notBefore.toISOString()}`);
  if (now.getTime() >= ca.notAfter.getTime()) throw upstreamError(`${where} expired at ${ca.notAfter.toISOString()}`);
  for (let i = 1; i < chain.x509.length; i++) {
    if (!issued(chain.x509[i - 1]!, chain.x509[i]!)) {
      throw upstreamError(`cert_file_path ${certFilePath}: certificate ${i + 1} did not issue certificate ${i} (expected the CA certificate first, then its chain in order)`);
    }
  }

  let roots: Buffer[];
  if (bundleFilePath) {
    roots = readCertificates(await readText(bundleFilePath, 'bundle_file_path'), bundleFilePath, 'bundle_file_path').der;
  } else {
    const last = chain.x509[chain.x509.length - 1]!;
    if (!issued(last, last)) {
      throw upstreamError(
        `cert_file_path ${certFilePath} does not end with a self-signed root certificate: set bundle_file_path to the upstream root certificate(s)`,
      );
    }
    roots = [chain.der[chain.der.length - 1]!];
  }
  const isRoot = (d: Buffer): boolean => roots.some((r) => r.equals(d));
  const intermediates = chain.der.filter((d) => !isRoot(d));
  // The path leaves the cert file at its last non-root certificate; a root must have issued it.
  const lastIndex = chain.der.findIndex((d) => isRoot(d));
  if (lastIndex !== 0) {
    const tail = chain.x509[(lastIndex === -1 ? chain.der.length : lastIndex) - 1]!;
    const rootCerts = roots.map((r) => new X509Certificate(r));
    if (!rootCerts.some((r) => issued(tail, r))) {
      throw upstreamError(
        `the chain in cert_file_path ${certFilePath} does not lead to a root in ${bundleFilePath ? `bundle_file_path ${bundleFilePath}` : 'cert_file_path'}`,
      );
    }
  }

  let issuer: Issuer;
  try {
    issuer = createIssuer(chain.der, key);
  } catch (cause) {
    throw upstreamError(`cert_file_path ${certFilePath} / key_file_path ${keyFilePath}: ${(cause as Error).message}`, cause);
  }
  if (issuer.trustDomain !== undefined && issuer.trustDomain !== trustDomain) {
    throw upstreamError(`${where} is a CA of trust domain ${JSON.stringify(issuer.trustDomain)}, not ${JSON.stringify(trustDomain)}`);
  }
  return { issuer, certificate: chain.x509[0]!, intermediates, roots, notAfter: ca.notAfter, certFilePath };
}
