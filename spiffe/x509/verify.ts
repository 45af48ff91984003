/**
 * Validation of a peer's X509-SVID against trust bundles, and parsing of
 * one's own X509-SVID + key (agent / SDK side).
 *
 * verifyX509Svid order: leaf rules first, then the bundle of the leaf ID's trust domain, then
 * RFC 5280-style path building and validation. A path runs from the leaf through the supplied
 * intermediates to a certificate that is in the bundle (a root or an intermediate authority
 * placed in the bundle: either is a trust anchor). Issuers are found by subject == issuer Name
 * bytes AND a verifying signature; loops are impossible (no certificate twice), paths hold at
 * most MAX_PATH_CERTIFICATES certificates and the search at most MAX_SIGNATURE_CHECKS signature
 * checks. Every complete path is validated: validity windows of every certificate at `now`,
 * CA=true and keyCertSign on every certificate after the leaf (anchor included), pathLen, and
 * name constraints (URI and dNSName subtrees enforced; subtrees of other types fail closed when
 * the path holds names of that type). The first valid path wins; otherwise the first complete
 * path's error is thrown; with no complete path, `bad_signature` when a Name-matching issuer's
 * signature failed, else `unknown_authority`.
 *
 * Stable reasons. ERR_X509_SVID_INVALID (the certificate chain itself is not an SVID):
 *   empty_chain                   no certificate
 *   no_uri_san                    leaf has no URI SAN
 *   multiple_uri_sans             leaf has more than one URI SAN
 *   invalid_spiffe_id             leaf URI SAN is not a valid SPIFFE ID (cause: ERR_SPIFFE_ID_INVALID)
 *   root_path                     leaf SPIFFE ID has no path
 *   leaf_is_ca                    leaf basicConstraints CA=true
 *   leaf_key_cert_sign            leaf keyUsage has keyCertSign
 *   leaf_crl_sign                 leaf keyUsage has cRLSign
 *   leaf_no_digital_signature     leaf keyUsage missing or without digitalSignature
 *   too_many_certificates         more than MAX_CHAIN_CERTIFICATES certificates supplied
 *   key                           (parseX509Svid) private key is not valid PKCS#8
 *   key_mismatch                  (parseX509Svid) private key does not match the leaf
 *   intermediate_not_ca           (parseX509Svid) a chain certificate is not a CA
 *   intermediate_no_key_cert_sign (parseX509Svid) a chain certificate lacks keyCertSign
 * ERR_X509_SVID_UNTRUSTED (no valid path to the trust domain's bundle):
 *   no_bundle                     no bundle for the leaf's trust domain
 *   unknown_authority             no path to a certificate in the bundle
 *   bad_signature                 a certificate's signature does not verify with the key of the
 *                                 certificate named as its issuer (and no other path exists)
 *   expired / not_yet_valid       a certificate of the path is outside its validity at `now`
 *   intermediate_not_ca           a certificate after the leaf is not a CA
 *   intermediate_no_key_cert_sign a certificate after the leaf lacks keyCertSign
 *   path_len                      a CA's pathLen constraint is exceeded
 *   name_constraints              a name in the path violates a CA's name constraints
 * Certificates that do not parse throw ERR_X509_CERT_INVALID (see parse.ts).
 */
import { createHash, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { ErrorCode, SpiffeError, quote } from '../errors.js';
import { parseSpiffeId, pathOf, trustDomainOf, type SpiffeId } from '../id.js';
import { importPrivateKeyPkcs8 } from '../keys.js';
import { splitConcatenatedDer } from '../pem.js';
import type { X509BundleSource } from '../source.js';
import { nameToString } from './name.js';
import { SIGNATURE_HASH } from './oids.js';
import { certificateMatchesKey, parseCertificate, type CertificateInfo, type NameConstraints, type NameSubtree } from './parse.js';

/** Longest accepted path, leaf and trust anchor included. */
export const MAX_PATH_CERTIFICATES = 10;
/** Most certificates accepted in a presented chain. */
export const MAX_CHAIN_CERTIFICATES = 32;
/** Most signature verifications one path search may spend. */
export const MAX_SIGNATURE_CHECKS = 64;

export interface VerifyX509SvidOptions {
  /** Validation time; default: the current time. */
  now?: Date;
}

export interface VerifiedX509Svid {
  id: SpiffeId;
  /** The verified path: leaf, intermediates, trust anchor (from the bundle). */
  chain: Buffer[];
  /** The same path, parsed. */
  certificates: CertificateInfo[];
}

export interface X509Svid {
  id: SpiffeId;
  /** Leaf first, then intermediates. */
  certificates: Buffer[];
  privateKey: KeyObject;
}

function invalid(reason: string, message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(ErrorCode.X509_SVID_INVALID, reason, message, cause === undefined ? undefined : { cause });
}

function untrusted(reason: string, message: string): SpiffeError {
  return new SpiffeError(ErrorCode.X509_SVID_UNTRUSTED, reason, message);
}

/**
 * Small LRU caches keyed by SHA-256 of certificate DER: parsed CA certificates (their imported
 * public keys included) and signature checks that succeeded. Both are pure functions of the
 * bytes, so caching cannot change a verdict; it spares the repeated parse, key import (~110 us
 * per EC key under OpenSSL 3) and signature check of the same intermediates and roots.
 */
class Lru<V> {
  readonly #max: number;
  readonly #map = new Map<string, V>();
  constructor(max: number) {
    this.#max = max;
  }
  get(key: string): V | undefined {
    const v = this.#map.get(key);
    if (v !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, v);
    }
    return v;
  }
  set(key: string, v: V): void {
    this.#map.delete(key);
    this.#map.set(key, v);
    if (this.#map.size > this.#max) this.#map.delete(this.#map.keys().next().value!);
  }
}

const parsedCas = new Lru<CertificateInfo>(256);
const goodSignatures = new Lru<true>(1024);

function derHash(der: Buffer): string {
  return createHash('sha256').update(der).digest('base64');
}

function toChain(chain: readonly Buffer[] | Buffer): Buffer[] {
  return Buffer.isBuffer(chain) ? splitConcatenatedDer(chain) : [...chain];
}

/**
 * The leaf rules of an X509-SVID; returns the leaf's SPIFFE ID. Throws ERR_X509_SVID_INVALID.
 */
export function checkX509SvidLeaf(leaf: CertificateInfo): SpiffeId {
  if (leaf.uriSans.length === 0) throw invalid('no_uri_san', 'leaf certificate has no URI SAN: an X509-SVID has exactly one');
  if (leaf.uriSans.length > 1) {
    throw invalid('multiple_uri_sans', `leaf certificate has ${leaf.uriSans.length} URI SANs: an X509-SVID has exactly one`);
  }
  const uri = leaf.uriSans[0]!;
  let id: SpiffeId;
  try {
    id = parseSpiffeId(uri);
  } catch (cause) {
    throw invalid('invalid_spiffe_id', `leaf URI SAN ${quote(uri)} is not a valid SPIFFE ID: ${(cause as Error).message}`, cause);
  }
  if (pathOf(id) === '') throw invalid('root_path', `leaf SPIFFE ID ${quote(id)} has no path: it names a trust domain, not a workload`);
  if (leaf.isCa) throw invalid('leaf_is_ca', `leaf certificate for ${quote(id)} is a CA (basicConstraints CA=true)`);
  if (leaf.keyUsage?.keyCertSign) throw invalid('leaf_key_cert_sign', `leaf certificate for ${quote(id)} has keyUsage keyCertSign`);
  if (leaf.keyUsage?.cRLSign) throw invalid('leaf_crl_sign', `leaf certificate for ${quote(id)} has keyUsage cRLSign`);
  if (!leaf.keyUsage?.digitalSignature) {
    throw invalid('leaf_no_digital_signature', `leaf certificate for ${quote(id)} lacks keyUsage digitalSignature`);
  }
  return id;
}

interface Node {
  info: CertificateInfo;
  /** SHA-256 of the DER, base64. */
  hash: string;
  anchor: boolean;
}

function describe(info: CertificateInfo): string {
  const subject = nameToString(info.subject);
  return `certificate ${info.serialHex}${subject ? ` (${subject})` : ''}`;
}

/** Signature of `child` by `parent`'s key. False for unsupported algorithms or key mismatch. */
function signedBy(child: CertificateInfo, parent: CertificateInfo): boolean {
  const alg = SIGNATURE_HASH[child.signatureAlgorithmOid];
  if (alg === undefined) return false;
  let key: KeyObject;
  try {
    key = parent.publicKey;
  } catch {
    return false;
  }
  if (key.asymmetricKeyType !== alg.key) return false;
  try {
    return cryptoVerify(alg.hash, child.tbs, key, child.signature);
  } catch {
    return false;
  }
}

// --- Name constraints (RFC 5280 4.2.1.10) ----------------------------------------------------

/** Host of a URI for constraint matching: lowercase, no userinfo or port; undefined if none. */
function uriHost(uri: string): string | undefined {
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(uri);
  if (m === null) return undefined;
  let authority = m[1]!;
  const at = authority.lastIndexOf('@');
  if (at !== -1) authority = authority.slice(at + 1);
  if (authority.startsWith('[')) return undefined; // IP literal: cannot match a domain constraint
  const colon = authority.indexOf(':');
  if (colon !== -1) authority = authority.slice(0, colon);
  return authority.length === 0 ? undefined : authority.toLowerCase();
}

/** URI constraint: `host` exact, `.domain` any subdomain (not the domain itself); `` all. */
function uriHostMatches(host: string, constraint: string): boolean {
  const c = constraint.toLowerCase();
  if (c === '') return true;
  if (c.startsWith('.')) return host.length > c.length && host.endsWith(c);
  return host === c;
}

/** dNSName constraint: `example.com` matches it and its subdomains; `.example.com` subdomains only. */
function dnsMatches(name: string, constraint: string): boolean {
  const n = name.toLowerCase();
  const c = constraint.toLowerCase();
  if (c === '') return true;
  if (c.startsWith('.')) return n.length > c.length && n.endsWith(c);
  return n === c || n.endsWith(`.${c}`);
}

const EMAIL_ADDRESS_OID = '1.2.840.113549.1.9.1';

function hasNamesOfType(info: CertificateInfo, type: NameSubtree['type']): boolean {
  switch (type) {
    case 'email':
      return info.emailSans.length > 0 || info.subject.some((a) => a.oid === EMAIL_ADDRESS_OID);
    case 'ip':
      return info.ipSans.length > 0;
    case 'directoryName':
      return info.subject.length > 0;
    case 'other':
      return info.otherSanCount > 0;
    default:
      return false;
  }
}

/** Why `info` violates `nc`, or undefined. */
function nameConstraintViolation(info: CertificateInfo, nc: NameConstraints): string | undefined {
  const permittedOf = (t: NameSubtree['type']): NameSubtree[] => nc.permitted.filter((s) => s.type === t);
  const excludedOf = (t: NameSubtree['type']): NameSubtree[] => nc.excluded.filter((s) => s.type === t);

  const pUri = permittedOf('uri');
  const xUri = excludedOf('uri');
  if (pUri.length > 0 || xUri.length > 0) {
    for (const uri of info.uriSans) {
      const host = uriHost(uri);
      if (host === undefined) return `URI SAN ${quote(uri)} has no host to match URI name constraints`;
      if (pUri.length > 0 && !pUri.some((s) => uriHostMatches(host, s.value))) {
        return `URI SAN ${quote(uri)} is outside the permitted URI subtrees`;
      }
      const hit = xUri.find((s) => uriHostMatches(host, s.value));
      if (hit !== undefined) return `URI SAN ${quote(uri)} is in the excluded URI subtree ${quote(hit.value)}`;
    }
  }
  const pDns = permittedOf('dns');
  const xDns = excludedOf('dns');
  for (const dns of info.dnsSans) {
    if (pDns.length > 0 && !pDns.some((s) => dnsMatches(dns, s.value))) return `DNS SAN ${quote(dns)} is outside the permitted DNS subtrees`;
    const hit = xDns.find((s) => dnsMatches(dns, s.value));
    if (hit !== undefined) return `DNS SAN ${quote(dns)} is in the excluded DNS subtree ${quote(hit.value)}`;
  }
  for (const type of ['email', 'ip', 'directoryName', 'other'] as const) {
    const constrained = nc.permitted.some((s) => s.type === type) || nc.excluded.some((s) => s.type === type);
    if (constrained && hasNamesOfType(info, type)) return `${type} name constraints are not supported and the certificate has ${type} names`;
  }
  return undefined;
}

// --- Path validation ----------------------------------------------------------------------------

function validatePath(path: readonly Node[], now: Date): SpiffeError | undefined {
  const t = now.getTime();
  for (const { info } of path) {
    if (t < info.notBefore.getTime()) {
      return untrusted('not_yet_valid', `${describe(info)} is not valid before ${info.notBefore.toISOString()}`);
    }
    if (t > info.notAfter.getTime()) return untrusted('expired', `${describe(info)} expired at ${info.notAfter.toISOString()}`);
  }
  for (let k = 1; k < path.length; k++) {
    const ca = path[k]!.info;
    if (!ca.isCa) return untrusted('intermediate_not_ca', `${describe(ca)} signs certificates but is not a CA`);
    if (!ca.keyUsage?.keyCertSign) return untrusted('intermediate_no_key_cert_sign', `${describe(ca)} lacks keyUsage keyCertSign`);
    if (ca.pathLen !== undefined) {
      let below = 0;
      for (let j = 1; j < k; j++) if (!path[j]!.info.selfIssued) below++;
      if (below > ca.pathLen) return untrusted('path_len', `${describe(ca)} allows ${ca.pathLen} CA certificates below it, the path has ${below}`);
    }
    const nc = ca.nameConstraints;
    if (nc !== undefined) {
      for (let j = 0; j < k; j++) {
        const sub = path[j]!.info;
        if (j > 0 && sub.selfIssued) continue; // RFC 5280 6.1.3 (b), (c)
        const why = nameConstraintViolation(sub, nc);
        if (why !== undefined) return untrusted('name_constraints', `${describe(sub)} violates the name constraints of ${describe(ca)}: ${why}`);
      }
    }
  }
  return undefined;
}

/**
 * Validates a peer's X509-SVID chain (leaf first; a concatenated DER Buffer is accepted too)
 * against the bundle of the leaf's trust domain. Returns the leaf's SPIFFE ID and the verified
 * path. Throws SpiffeError with the reasons listed at the top of this file.
 */
export function verifyX509Svid(chain: readonly Buffer[] | Buffer, bundles: X509BundleSource, opts: VerifyX509SvidOptions = {}): VerifiedX509Svid {
  const ders = toChain(chain);
  if (ders.length === 0) throw invalid('empty_chain', 'no certificates presented');
  if (ders.length > MAX_CHAIN_CERTIFICATES) {
    throw invalid('too_many_certificates', `${ders.length} certificates presented, at most ${MAX_CHAIN_CERTIFICATES} accepted`);
  }
  const leaf = parseCertificate(ders[0]!);
  const id = checkX509SvidLeaf(leaf);
  const td = trustDomainOf(id);
  const authorities = bundles.getX509Authorities(td);
  if (authorities === undefined) throw untrusted('no_bundle', `no X.509 bundle for trust domain ${quote(td)} of ${quote(id)}`);
  const now = opts.now ?? new Date();

  // Candidate issuers: bundle authorities (anchors) first, then presented intermediates;
  // duplicates by DER collapse into one node (an intermediate that is also in the bundle is an anchor).
  const leafNode: Node = { info: leaf, hash: derHash(leaf.der), anchor: false };
  const nodes: Node[] = [];
  const byHash = new Map<string, Node>([[leafNode.hash, leafNode]]);
  const add = (der: Buffer, anchor: boolean): void => {
    const hash = derHash(der);
    const seen = byHash.get(hash);
    if (seen !== undefined) {
      if (seen !== leafNode) seen.anchor ||= anchor;
      return;
    }
    let info = parsedCas.get(hash);
    if (info === undefined) {
      try {
        info = parseCertificate(der);
      } catch (err) {
        if (anchor) return; // an unparseable bundle entry anchors nothing
        throw err;
      }
      parsedCas.set(hash, info);
    }
    const node = { info, hash, anchor };
    byHash.set(hash, node);
    nodes.push(node);
  };
  for (const a of authorities) add(a, true);
  for (const d of ders.slice(1)) add(d, false);

  let budget = MAX_SIGNATURE_CHECKS;
  let sawBadSignature = false;
  let firstError: SpiffeError | undefined;
  const badSignatures = new Set<string>();

  const search = (path: Node[]): Node[] | undefined => {
    const cur = path[path.length - 1]!;
    if (path.length >= MAX_PATH_CERTIFICATES) return undefined;
    for (const cand of nodes) {
      if (path.includes(cand)) continue; // no loops
      if (!cand.info.subjectDer.equals(cur.info.issuerDer)) continue;
      const sigKey = `${cur.hash}>${cand.hash}`;
      if (badSignatures.has(sigKey)) continue;
      if (goodSignatures.get(sigKey) === undefined) {
        if (budget-- <= 0) return undefined;
        if (!signedBy(cur.info, cand.info)) {
          badSignatures.add(sigKey);
          sawBadSignature = true;
          continue;
        }
        goodSignatures.set(sigKey, true);
      }
      const next = [...path, cand];
      if (cand.anchor) {
        const err = validatePath(next, now);
        if (err === undefined) return next;
        firstError ??= err;
        continue; // anchors end paths
      }
      const found = search(next);
      if (found !== undefined) return found;
    }
    return undefined;
  };

  const found = search([leafNode]);
  if (found !== undefined) return { id, chain: found.map((n) => n.info.der), certificates: found.map((n) => n.info) };
  if (firstError !== undefined) throw firstError;
  if (sawBadSignature) {
    throw untrusted('bad_signature', `a certificate in the chain of ${quote(id)} has a signature that does not verify with its issuer's key`);
  }
  throw untrusted('unknown_authority', `no path from ${quote(id)} to an authority in the bundle of ${quote(td)}`);
}

/**
 * Parses one's own X509-SVID: certificates (leaf first; array or concatenated DER) and the
 * PKCS#8 DER private key. Checks the leaf rules, that later certificates are CAs with
 * keyCertSign, and that the key matches the leaf. Does not check trust (see verifyX509Svid).
 */
export function parseX509Svid(certsDer: readonly Buffer[] | Buffer, keyPkcs8Der: Uint8Array): X509Svid {
  const certificates = toChain(certsDer);
  if (certificates.length === 0) throw invalid('empty_chain', 'no certificates in the X509-SVID');
  if (certificates.length > MAX_CHAIN_CERTIFICATES) {
    throw invalid('too_many_certificates', `${certificates.length} certificates, at most ${MAX_CHAIN_CERTIFICATES} accepted`);
  }
  const infos = certificates.map((c) => parseCertificate(c));
  const leaf = infos[0]!;
  const id = checkX509SvidLeaf(leaf);
  for (const ca of infos.slice(1)) {
    if (!ca.isCa) throw invalid('intermediate_not_ca', `${describe(ca)} in the X509-SVID chain is not a CA`);
    if (!ca.keyUsage?.keyCertSign) throw invalid('intermediate_no_key_cert_sign', `${describe(ca)} in the X509-SVID chain lacks keyCertSign`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = importPrivateKeyPkcs8(keyPkcs8Der);
  } catch (cause) {
    throw invalid('key', 'X509-SVID private key is not valid PKCS#8 DER', cause);
  }
  if (!certificateMatchesKey(leaf, privateKey)) throw invalid('key_mismatch', `the private key does not match the X509-SVID of ${quote(id)}`);
  return { id, certificates: infos.map((i) => i.der), privateKey };
}
