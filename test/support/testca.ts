/**
 * A small test CA for test suites: a root for one trust domain, leaves and intermediates made
 * by the production issuance code, and "evil" certificates built field by field (with the same
 * DER writer) for negative tests. Plus openssl helpers for independent checks.
 *
 *   const ca = await TestCa.create({ trustDomain: 'example.org' });
 *   const svid = await ca.issueSvid('spiffe://example.org/web');     // { certDer, privateKey, chain }
 *   verifyX509Svid(svid.chain, ca.bundle());
 *   const evil = await ca.evilLeaf('ca_leaf');                        // CA=true leaf, else valid
 *   const raw = await ca.issueRaw({ uris: [...], keyUsage: ['keyEncipherment'], ... });
 *
 * Test-only: keys live in memory, nothing is hardened.
 */
import { spawnSync } from 'node:child_process';
import { sign as cryptoSign, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSpiffeId, parseTrustDomain, trustDomainId, type SpiffeId, type TrustDomain } from '../../spiffe/id.js';
import { exportPrivateKeyPkcs8, generateKeyPair, keyTypeOf, type KeyPair, type KeyType } from '../../spiffe/keys.js';
import { certificatesToPem, toPem } from '../../spiffe/pem.js';
import type { X509BundleSource } from '../../spiffe/source.js';
import * as der from '../../spiffe/x509/der.js';
import {
  authorityKeyIdentifierExt,
  basicConstraintsExt,
  extKeyUsageExt,
  keyIdentifier,
  keyUsageExt,
  nameConstraintsExt,
  subjectAltNameExt,
  subjectKeyIdentifierExt,
  type KeyUsageName,
  type NameConstraintsSpec,
} from '../../spiffe/x509/extensions.js';
import { createIssuer, signatureAlgorithmFor, type Issuer } from '../../spiffe/x509/issuer.js';
import { createSelfSignedCa, issueIntermediateCa, issueX509Svid } from '../../spiffe/x509/issue.js';
import { encodeName, type X509Subject } from '../../spiffe/x509/name.js';
import { OID } from '../../spiffe/x509/oids.js';
import { parseCertificate } from '../../spiffe/x509/parse.js';
import { spkiKeyBits, spkiOf } from '../../spiffe/x509/spki.js';

/** Something that can sign certificates in tests: a CA certificate, its key and its chain. */
export interface TestSigner {
  certDer: Buffer;
  privateKey: KeyObject;
  /** This signer's certificate and its parents, excluding the root. Empty for the root. */
  chain: Buffer[];
}

export interface TestIntermediate extends TestSigner {
  /** Production Issuer over this intermediate (undefined when it is not a usable CA). */
  issuer: Issuer | undefined;
}

export interface TestSvid {
  id: SpiffeId;
  certDer: Buffer;
  privateKey: KeyObject;
  keyPkcs8: Buffer;
  /** What a peer presents: leaf first, then intermediates (root excluded). */
  chain: Buffer[];
}

/** Every field of a certificate, for building malformed or policy-breaking certificates. */
export interface RawCertTemplate {
  /** Signing CA; default the root. `self` signs with the certificate's own key. */
  signer?: TestSigner | 'self';
  /** Subject key; generated with `keyType` (default the CA's) when absent. */
  keyPair?: KeyPair;
  keyType?: KeyType;
  subject?: X509Subject;
  serial?: Buffer;
  notBefore?: Date;
  notAfter?: Date;
  uris?: string[];
  dnsNames?: string[];
  /** Default: critical when the subject is empty. */
  sanCritical?: boolean;
  /** undefined: no basicConstraints extension at all. */
  ca?: boolean;
  pathLen?: number;
  /** null: no keyUsage extension. Default: a leaf's usages (or CA usages when ca). */
  keyUsage?: KeyUsageName[] | null;
  /** null: no extKeyUsage. Default serverAuth+clientAuth for leaves, none for CAs. */
  extKeyUsage?: string[] | null;
  nameConstraints?: NameConstraintsSpec;
  /** Encoded Extension DERs appended as-is (see extensions.ts `extension`). */
  extraExtensions?: Buffer[];
  omitSki?: boolean;
  omitAki?: boolean;
  /** Flip a bit in the signature. */
  tamperSignature?: boolean;
}

export type EvilKind =
  | 'ca_leaf'
  | 'two_uri_sans'
  | 'no_uri_san'
  | 'root_path'
  | 'invalid_uri'
  | 'key_cert_sign'
  | 'crl_sign'
  | 'no_digital_signature'
  | 'no_key_usage'
  | 'expired'
  | 'not_yet_valid'
  | 'bad_signature';

const HOUR = 3600_000;

export class TestCa {
  readonly trustDomain: TrustDomain;
  readonly keyType: KeyType;
  readonly keyPair: KeyPair;
  readonly rootDer: Buffer;
  readonly issuer: Issuer;
  /** The root as a TestSigner. */
  readonly root: TestSigner;

  private constructor(trustDomain: TrustDomain, keyType: KeyType, keyPair: KeyPair, rootDer: Buffer) {
    this.trustDomain = trustDomain;
    this.keyType = keyType;
    this.keyPair = keyPair;
    this.rootDer = rootDer;
    this.issuer = createIssuer([rootDer], keyPair.privateKey);
    this.root = { certDer: rootDer, privateKey: keyPair.privateKey, chain: [] };
  }

  static async create(opts: { trustDomain: string; keyType?: KeyType; ttlSeconds?: number; now?: Date; subject?: X509Subject }): Promise<TestCa> {
    const td = parseTrustDomain(opts.trustDomain);
    const keyType = opts.keyType ?? 'ec-p256';
    const keyPair = await generateKeyPair(keyType);
    const rootDer = createSelfSignedCa({
      trustDomain: td,
      keyPair,
      ttlSeconds: opts.ttlSeconds ?? 24 * 3600,
      ...(opts.now ? { now: opts.now } : {}),
      ...(opts.subject ? { subject: opts.subject } : {}),
    });
    return new TestCa(td, keyType, keyPair, rootDer);
  }

  /** A bundle source trusting this CA's root (plus `extraAuthorities`) for its trust domain only. */
  bundle(extraAuthorities: Buffer[] = []): X509BundleSource {
    return TestCa.bundleOf([this.trustDomain, [this.rootDer, ...extraAuthorities]]);
  }

  /** A bundle source from (trust domain, authorities) pairs. */
  static bundleOf(...entries: [string, Buffer[]][]): X509BundleSource {
    const map = new Map<string, Buffer[]>(entries.map(([td, certs]) => [parseTrustDomain(td), certs]));
    return { getX509Authorities: (td) => map.get(td) };
  }

  /** A leaf X509-SVID made by the production issuer (issueX509Svid). */
  async issueSvid(
    id: string,
    opts: { dnsNames?: string[]; ttlSeconds?: number; keyType?: KeyType; now?: Date; via?: TestIntermediate; subject?: X509Subject } = {},
  ): Promise<TestSvid> {
    const keyPair = await generateKeyPair(opts.keyType ?? 'ec-p256');
    const issuer = opts.via?.issuer ?? this.issuer;
    const issued = issueX509Svid({
      id: parseSpiffeId(id),
      publicKey: keyPair.publicKey,
      ttlSeconds: opts.ttlSeconds ?? 3600,
      issuer,
      ...(opts.dnsNames ? { dnsNames: opts.dnsNames } : {}),
      ...(opts.now ? { now: opts.now } : {}),
      ...(opts.subject ? { subject: opts.subject } : {}),
    });
    return {
      id: parseSpiffeId(id),
      certDer: issued.der,
      privateKey: keyPair.privateKey,
      keyPkcs8: exportPrivateKeyPkcs8(keyPair.privateKey),
      chain: [issued.der, ...(opts.via?.chain ?? [])],
    };
  }

  /** An intermediate CA made by the production code (issueIntermediateCa), under the root or `via`. */
  async createIntermediate(opts: { ttlSeconds?: number; pathLen?: number; now?: Date; via?: TestIntermediate; keyType?: KeyType } = {}): Promise<TestIntermediate> {
    const keyPair = await generateKeyPair(opts.keyType ?? 'ec-p256');
    const parent = opts.via?.issuer ?? this.issuer;
    const certDer = issueIntermediateCa({
      trustDomain: this.trustDomain,
      publicKey: keyPair.publicKey,
      issuer: parent,
      ttlSeconds: opts.ttlSeconds ?? 12 * 3600,
      ...(opts.pathLen !== undefined ? { pathLen: opts.pathLen } : {}),
      ...(opts.now ? { now: opts.now } : {}),
    });
    const chain = [certDer, ...(opts.via?.chain ?? [])];
    return { certDer, privateKey: keyPair.privateKey, chain, issuer: createIssuer([...chain, this.rootDer], keyPair.privateKey) };
  }

  /**
   * A certificate built field by field from `t` (defaults: a valid leaf for
   * `spiffe://<td>/evil`). Signed by `t.signer` (default the root) with its key.
   */
  async issueRaw(t: RawCertTemplate = {}): Promise<{ certDer: Buffer; keyPair: KeyPair }> {
    const keyPair = t.keyPair ?? (await generateKeyPair(t.keyType ?? 'ec-p256'));
    const signer = t.signer === 'self' ? undefined : (t.signer ?? this.root);
    const signingKey = signer?.privateKey ?? keyPair.privateKey;
    const alg = signatureAlgorithmFor(keyTypeOf(signingKey));
    const spki = spkiOf(keyPair.publicKey);
    const ski = keyIdentifier(spkiKeyBits(spki));
    const subjectDer = encodeName(t.subject);
    let issuerDer = subjectDer;
    let aki = ski;
    if (signer !== undefined) {
      const info = parseCertificate(signer.certDer);
      issuerDer = info.subjectDer;
      aki = info.ski ?? keyIdentifier(spkiKeyBits(info.spki));
    }
    const now = Date.now();
    const isCa = t.ca === true;
    const uris = t.uris ?? [`spiffe://${this.trustDomain}/evil`];
    const dnsNames = t.dnsNames ?? [];
    const exts: Buffer[] = [];
    if (t.ca !== undefined) exts.push(basicConstraintsExt(t.ca, t.pathLen));
    const ku = t.keyUsage === undefined ? (isCa ? (['digitalSignature', 'keyCertSign', 'cRLSign'] as KeyUsageName[]) : (['digitalSignature'] as KeyUsageName[])) : t.keyUsage;
    if (ku !== null) exts.push(keyUsageExt(ku));
    const eku = t.extKeyUsage === undefined ? (isCa ? null : [OID.serverAuth, OID.clientAuth]) : t.extKeyUsage;
    if (eku !== null) exts.push(extKeyUsageExt(eku));
    if (!t.omitSki) exts.push(subjectKeyIdentifierExt(ski));
    if (!t.omitAki) exts.push(authorityKeyIdentifierExt(aki));
    if (uris.length > 0 || dnsNames.length > 0) exts.push(subjectAltNameExt({ uris, dnsNames }, t.sanCritical ?? subjectDer.length === 2));
    if (t.nameConstraints) exts.push(nameConstraintsExt(t.nameConstraints));
    exts.push(...(t.extraExtensions ?? []));
    const serial = t.serial ?? Buffer.from([0x40, ...Array.from({ length: 15 }, () => Math.floor(Math.random() * 256))]);
    const tbs = der.sequence(
      der.explicit(0, der.smallInt(2)),
      der.integer(serial),
      alg.der,
      issuerDer,
      der.sequence(der.time(t.notBefore ?? new Date(now - 10_000)), der.time(t.notAfter ?? new Date(now + HOUR))),
      subjectDer,
      spki,
      ...(exts.length > 0 ? [der.explicit(3, der.sequence(...exts))] : []),
    );
    const signature = cryptoSign(alg.hash, tbs, signingKey);
    if (t.tamperSignature) signature[signature.length - 1]! ^= 0x01;
    return { certDer: der.sequence(tbs, alg.der, der.bitString(signature)), keyPair };
  }

  /**
   * A raw CA certificate usable as a signer (e.g. an intermediate without keyCertSign); with
   * `signer: 'self'` a self-signed root (its `chain` is then empty).
   */
  async rawIntermediate(t: RawCertTemplate = {}): Promise<TestSigner> {
    const parent = t.signer === 'self' ? undefined : (t.signer ?? this.root);
    const { certDer, keyPair } = await this.issueRaw({
      ca: true,
      uris: [trustDomainId(this.trustDomain)],
      subject: { organization: 'Spindle Test', commonName: `intermediate ${Math.random().toString(16).slice(2)}` },
      ...t,
    });
    // A self-signed one is a root: nothing to present above the leaf's issuer chain.
    return { certDer, privateKey: keyPair.privateKey, chain: parent === undefined ? [] : [certDer, ...parent.chain] };
  }

  /** A leaf that breaks exactly one X509-SVID rule and is otherwise valid under the root. */
  async evilLeaf(kind: EvilKind, opts: { id?: string; signer?: TestSigner } = {}): Promise<TestSvid> {
    const id = opts.id ?? `spiffe://${this.trustDomain}/evil`;
    const now = Date.now();
    const t: RawCertTemplate = { uris: [id], ca: false, ...(opts.signer ? { signer: opts.signer } : {}) };
    switch (kind) {
      case 'ca_leaf':
        t.ca = true;
        t.keyUsage = ['digitalSignature'];
        t.extKeyUsage = [OID.serverAuth, OID.clientAuth];
        break;
      case 'two_uri_sans':
        t.uris = [id, `${id}-2`];
        break;
      case 'no_uri_san':
        t.uris = [];
        t.dnsNames = ['evil.example.org'];
        break;
      case 'root_path':
        t.uris = [trustDomainId(this.trustDomain)];
        break;
      case 'invalid_uri':
        t.uris = [`spiffe://${this.trustDomain}/a/../b`];
        break;
      case 'key_cert_sign':
        t.keyUsage = ['digitalSignature', 'keyCertSign'];
        break;
      case 'crl_sign':
        t.keyUsage = ['digitalSignature', 'cRLSign'];
        break;
      case 'no_digital_signature':
        t.keyUsage = ['keyEncipherment', 'keyAgreement'];
        break;
      case 'no_key_usage':
        t.keyUsage = null;
        break;
      case 'expired':
        t.notBefore = new Date(now - 2 * HOUR);
        t.notAfter = new Date(now - HOUR);
        break;
      case 'not_yet_valid':
        t.notBefore = new Date(now + HOUR);
        t.notAfter = new Date(now + 2 * HOUR);
        break;
      case 'bad_signature':
        t.tamperSignature = true;
        break;
    }
    const { certDer, keyPair } = await this.issueRaw(t);
    return {
      id: id as SpiffeId,
      certDer,
      privateKey: keyPair.privateKey,
      keyPkcs8: exportPrivateKeyPkcs8(keyPair.privateKey),
      chain: [certDer, ...(opts.signer?.chain ?? [])],
    };
  }
}

// --- openssl helpers (independent checks) ----------------------------------------------------

/** Runs `fn` with a fresh temp dir, removed afterwards. */
export function withTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-x509-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs openssl; returns stdout+stderr; throws (with the output) on a non-zero exit. */
export function openssl(args: string[], input?: Buffer | string): string {
  const r = spawnSync('openssl', args, { input, encoding: 'utf8' });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (r.error !== undefined || r.status !== 0) {
    throw new Error(`openssl ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}):\n${out}`);
  }
  return out;
}

/**
 * `openssl verify -x509_strict -CAfile <roots> [-untrusted <intermediates>] <leaf>`; returns the
 * output, throws when openssl rejects the chain.
 */
export function opensslVerify(roots: Buffer[], leaf: Buffer, intermediates: Buffer[] = [], extraArgs: string[] = []): string {
  return withTempDir((dir) => {
    const rootPem = join(dir, 'root.pem');
    const leafPem = join(dir, 'leaf.pem');
    writeFileSync(rootPem, certificatesToPem(roots));
    writeFileSync(leafPem, certificatesToPem([leaf]));
    const args = ['verify', '-x509_strict', ...extraArgs, '-CAfile', rootPem];
    if (intermediates.length > 0) {
      const interPem = join(dir, 'inter.pem');
      writeFileSync(interPem, certificatesToPem(intermediates));
      args.push('-untrusted', interPem);
    }
    args.push(leafPem);
    return openssl(args);
  });
}

/** `openssl x509 -noout -text` of a DER certificate. */
export function opensslText(certDer: Buffer): string {
  return openssl(['x509', '-noout', '-text', '-inform', 'DER'], certDer);
}

/** `openssl req -verify` of a DER CSR; returns the output (throws if the signature is bad). */
export function opensslVerifyCsr(csrDer: Buffer): string {
  return openssl(['req', '-verify', '-noout', '-text', '-inform', 'DER'], csrDer);
}

/** PEM of a private key (PKCS#8) for openssl commands. */
export function privateKeyPem(key: KeyObject): string {
  return toPem('PRIVATE KEY', exportPrivateKeyPkcs8(key));
}
