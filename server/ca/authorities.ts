/**
 * The key slots: turning journal records into usable ("live") signing authorities with their
 * keys from the KeyManager, making new ones in a slot, and deleting the keys of slots nothing
 * uses any more.
 *
 * An X.509 CA is live when its key loads, matches its certificate, and it fits the current
 * upstream mode (self-signed without an upstream authority; an intermediate signed by the
 * configured upstream CA with one). A JWT key is live when its key loads and matches the public
 * key in the journal. Anything else is logged and left out, so the rotation planner replaces it.
 * A key file the KeyManager does not trust throws: the operator must look.
 *
 * Keys never leave here except inside a live authority (for the Issuer, the JWT signer and the
 * signing pool); nothing here logs keys.
 */
import { X509Certificate, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import type { TrustDomain } from '../../spiffe/id.js';
import { exportPublicKeySpki, type KeyType } from '../../spiffe/keys.js';
import type { JwtSigner } from '../../spiffe/jwtsvid.js';
import { createIssuer, createSelfSignedCa, issueIntermediateCa, parseCertificate, type Issuer, type X509Subject } from '../../spiffe/x509/index.js';
import { CaError } from './errors.js';
import { JWT_KEY_IDS, X509_KEY_IDS, type Journal, type JwtRecord, type RecordBase, type SlotName, type X509Record } from './journal.js';
import type { KeyManager } from './keymanager.js';
import type { CaLogger } from './options.js';
import type { UpstreamAuthority } from './upstream.js';

/** A prepared or active X.509 CA whose key is loaded. */
export interface LiveX509 {
  record: X509Record;
  issuer: Issuer;
  /** The CA key, for the signing pool's workers only (never logged or written by this module). */
  privateKey: KeyObject;
  /** Identifies this issuer to the signing pool. */
  poolId: number;
  /** What follows the leaf in an SVID chain: [] (self-signed) or [our CA, ...upstream intermediates]. */
  chainTail: Buffer[];
}

/** A prepared or active JWT signing key that is loaded. */
export interface LiveJwt {
  record: JwtRecord;
  signer: JwtSigner;
  notAfter: Date;
}

const KID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const KID_LENGTH = 32;

/** 32 random base62 characters (as SPIRE's JWT key IDs), without modulo bias. */
export function randomKid(): string {
  let out = '';
  while (out.length < KID_LENGTH) {
    for (const b of randomBytes(48)) {
      if (b >= 248) continue; // 248 = 4 * 62
      out += KID_ALPHABET[b % 62];
      if (out.length === KID_LENGTH) break;
    }
  }
  return out;
}

let poolIds = 0;

const b64 = (s: string): Buffer => Buffer.from(s, 'base64');

function issuedBy(childDer: Buffer, parent: X509Certificate): boolean {
  try {
    const child = new X509Certificate(childDer);
    return child.checkIssued(parent) && child.verify(parent.publicKey);
  } catch {
    return false;
  }
}

export interface AuthoritySlotsOptions {
  trustDomain: TrustDomain;
  keyManager: KeyManager;
  log: CaLogger;
  caTtlSeconds: number;
  caKeyType: KeyType;
  jwtKeyType: KeyType;
  caSubject: X509Subject;
  /** The loaded upstream authority (fixed for the CA's lifetime); undefined: self-signed mode. */
  upstream: UpstreamAuthority | undefined;
}

export class AuthoritySlots {
  readonly #td: TrustDomain;
  readonly #km: KeyManager;
  readonly #log: CaLogger;
  readonly #caTtl: number;
  readonly #caKeyType: KeyType;
  readonly #jwtKeyType: KeyType;
  readonly #caSubject: X509Subject;
  readonly #upstream: UpstreamAuthority | undefined;
  /** Whether an intermediate (by record id) was signed by the current upstream CA (a cache). */
  readonly #issuedByUpstream = new Map<string, boolean>();

  constructor(o: AuthoritySlotsOptions) {
    this.#td = o.trustDomain;
    this.#km = o.keyManager;
    this.#log = o.log;
    this.#caTtl = o.caTtlSeconds;
    this.#caKeyType = o.caKeyType;
    this.#jwtKeyType = o.jwtKeyType;
    this.#caSubject = o.caSubject;
    this.#upstream = o.upstream;
  }

  /** The journal's X.509 CA with its key, or undefined (logged) when it cannot sign any more. */
  async loadX509(r: X509Record): Promise<LiveX509 | undefined> {
    const key = await this.#km.load(r.keyId); // throws for untrustworthy key files: the operator must look
    const what = { x509_ca_serial: r.id, slot: r.slot, status: r.status, key_id: r.keyId };
    if (key === undefined) {
      this.#log.warn(what, `X.509 CA key is missing (${this.#km.kind} key manager); the CA will be replaced`);
      return undefined;
    }
    try {
      return this.#liveX509(r, key);
    } catch (err) {
      this.#log.warn({ ...what, err }, 'X.509 CA from the journal is not usable; it will be replaced');
      return undefined;
    }
  }

  /** The journal's JWT key with its key, or undefined (logged) when it cannot sign any more. */
  async loadJwt(r: JwtRecord): Promise<LiveJwt | undefined> {
    const key = await this.#km.load(r.keyId);
    const what = { jwt_kid: r.kid, slot: r.slot, status: r.status, key_id: r.keyId };
    if (key === undefined) {
      this.#log.warn(what, `JWT signing key is missing (${this.#km.kind} key manager); the key will be replaced`);
      return undefined;
    }
    if (!exportPublicKeySpki(key).equals(b64(r.publicKeySpki))) {
      this.#log.warn(what, 'JWT signing key in the key manager does not match the journal; the key will be replaced');
      return undefined;
    }
    return { record: r, signer: { kid: r.kid, privateKey: key }, notAfter: new Date(r.notAfter) };
  }

  #liveX509(record: X509Record, key: KeyObject): LiveX509 {
    const der = b64(record.certDer);
    const up = this.#upstream;
    let chain: Buffer[];
    let chainTail: Buffer[];
    if (record.selfSigned) {
      if (up !== undefined) throw new CaError('upstream', 'self-signed CA, but an upstream authority is now configured');
      chain = [der];
      chainTail = [];
    } else {
      if (up === undefined) throw new CaError('upstream', 'intermediate CA, but no upstream authority is configured any more');
      if (!this.isFromCurrentUpstream(record)) throw new CaError('upstream', 'intermediate CA was not signed by the configured upstream CA');
      chain = [der, ...up.issuer.chain];
      chainTail = [der, ...up.intermediates];
    }
    const issuer = createIssuer(chain, key); // checks CA flags and that the key is the certificate's
    if (issuer.trustDomain !== this.#td) throw new CaError('journal', `CA certificate is not a CA of trust domain ${this.#td}`);
    return { record, issuer, chainTail, privateKey: key, poolId: ++poolIds };
  }

  /** An intermediate signed by the configured upstream CA (false in self-signed mode). */
  isFromCurrentUpstream(r: X509Record): boolean {
    const up = this.#upstream;
    if (up === undefined || r.selfSigned) return false;
    let v = this.#issuedByUpstream.get(r.id);
    if (v === undefined) {
      v = issuedBy(b64(r.certDer), up.certificate);
      this.#issuedByUpstream.set(r.id, v);
    }
    return v;
  }

  /** notAfter (ms) an X.509 CA made now would get: ca_ttl in whole seconds, capped by the upstream CA. */
  projectedX509NotAfter(now: Date): number {
    let na = Math.floor((now.getTime() + this.#caTtl * 1000) / 1000) * 1000;
    if (this.#upstream !== undefined) na = Math.min(na, this.#upstream.notAfter.getTime());
    return na;
  }

  /** notAfter (ms) a JWT key made now would get. */
  projectedJwtNotAfter(now: Date): number {
    return now.getTime() + this.#caTtl * 1000;
  }

  /** A new prepared X.509 CA in `slot` (a fresh key; self-signed, or signed by the upstream CA). */
  async createX509(now: Date, slot: SlotName): Promise<LiveX509> {
    const keyId = X509_KEY_IDS[slot];
    const privateKey = await this.#km.generate(keyId, this.#caKeyType);
    const publicKey = createPublicKey(privateKey);
    const up = this.#upstream;
    const der = up
      ? issueIntermediateCa({ trustDomain: this.#td, publicKey, issuer: up.issuer, ttlSeconds: this.#caTtl, now, subject: this.#caSubject })
      : createSelfSignedCa({ trustDomain: this.#td, keyPair: { privateKey, publicKey }, ttlSeconds: this.#caTtl, now, subject: this.#caSubject });
    const record: X509Record = {
      id: parseCertificate(der).serialHex,
      slot,
      keyId,
      status: 'prepared',
      selfSigned: up === undefined,
      certDer: der.toString('base64'),
      issuedAt: now.toISOString(),
      notAfter: '',
    };
    if (up !== undefined) this.#issuedByUpstream.set(record.id, true);
    const live = this.#liveX509(record, privateKey);
    record.notAfter = live.issuer.notAfter.toISOString();
    return live;
  }

  /** A new prepared JWT signing key in `slot`, valid for ca_ttl (whole seconds). */
  async createJwt(now: Date, slot: SlotName): Promise<LiveJwt> {
    const keyId = JWT_KEY_IDS[slot];
    const privateKey = await this.#km.generate(keyId, this.#jwtKeyType);
    const notAfter = new Date(Math.floor((now.getTime() + this.#caTtl * 1000) / 1000) * 1000);
    const record: JwtRecord = {
      kid: randomKid(),
      slot,
      keyId,
      status: 'prepared',
      publicKeySpki: exportPublicKeySpki(privateKey).toString('base64'),
      issuedAt: now.toISOString(),
      notAfter: notAfter.toISOString(),
    };
    return { record, signer: { kid: record.kid, privateKey }, notAfter };
  }

  /**
   * Deletes keys of slots that no prepared/active authority uses any more: slots that were live
   * in `before` and are not in `after`, or (`all`, at start) every slot not live in `after`.
   * A failed delete is logged, not thrown.
   */
  async deleteUnusedKeys(before: Journal, after: Journal, all: boolean): Promise<void> {
    const liveSlots = (rs: readonly RecordBase[]): Set<SlotName> => new Set(rs.filter((r) => r.status !== 'old').map((r) => r.slot));
    const kinds = [
      { ids: X509_KEY_IDS, was: liveSlots(before.x509), is: liveSlots(after.x509) },
      { ids: JWT_KEY_IDS, was: liveSlots(before.jwt), is: liveSlots(after.jwt) },
    ];
    for (const k of kinds) {
      for (const slot of ['A', 'B'] as const) {
        if (k.is.has(slot) || (!all && !k.was.has(slot))) continue;
        try {
          await this.#km.delete(k.ids[slot]);
        } catch (err) {
          this.#log.warn({ err, key_id: k.ids[slot] }, 'could not delete an unused CA key');
        }
      }
    }
  }
}
