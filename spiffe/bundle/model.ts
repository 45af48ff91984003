/**
 * The bundle model: `Bundle`, the trust material of one trust domain (X.509 and JWT authorities,
 * `spiffe_sequence`, `spiffe_refresh_hint`), a plain value with validated setters. Encoding and
 * parsing live beside it (document.ts, x509.ts); `bundleEntries` is their read access to the
 * authorities and is not part of the public API (spiffe/bundle.ts does not re-export it).
 */
import type { KeyObject } from 'node:crypto';
import { quote } from '../errors.js';
import type { TrustDomain } from '../id.js';
import { certificatesToPem } from '../pem.js';
import type { JwtBundleSource, X509BundleSource } from '../source.js';
import { checkKid, jwtAuthority, x509Authority, type JwtAuthority, type X509Authority } from './authority.js';
import { bundleError } from './errors.js';

export const MAX_SEQUENCE = (1n << 64n) - 1n;

export interface BundleInit {
  x509Authorities?: Iterable<Uint8Array>;
  jwtAuthorities?: Iterable<readonly [string, KeyObject]>;
  sequence?: bigint;
  refreshHintSeconds?: number | undefined;
}

function checkSequence(value: bigint): bigint {
  if (typeof value !== 'bigint' || value < 0n || value > MAX_SEQUENCE) {
    throw bundleError('sequence', `bundle sequence must be an integer in [0, 2^64-1], got ${String(value)}`);
  }
  return value;
}

function checkRefreshHint(value: number | undefined): number | undefined {
  if (value !== undefined && (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)) {
    throw bundleError('refresh_hint', `refresh hint must be a non-negative integer number of seconds, got ${String(value)}`);
  }
  return value;
}

/** Module-private view of a bundle's authorities (JWT ones sorted by kid), set by Bundle's static block. */
let entriesOf: (bundle: Bundle) => { x509: readonly X509Authority[]; jwt: [string, JwtAuthority][] };

export class Bundle implements X509BundleSource, JwtBundleSource {
  readonly trustDomain: TrustDomain;
  #x509: X509Authority[] = [];
  #jwt = new Map<string, JwtAuthority>();
  #sequence = 0n;
  #refreshHint: number | undefined;

  constructor(trustDomain: TrustDomain, init: BundleInit = {}) {
    this.trustDomain = trustDomain;
    for (const der of init.x509Authorities ?? []) this.addX509Authority(der);
    for (const [kid, key] of init.jwtAuthorities ?? []) this.addJwtAuthority(kid, key);
    if (init.sequence !== undefined) this.sequence = init.sequence;
    this.refreshHintSeconds = init.refreshHintSeconds;
  }

  /** `spiffe_sequence`: 64-bit unsigned. Throws ERR_BUNDLE_INVALID `sequence` when out of range. */
  get sequence(): bigint {
    return this.#sequence;
  }
  set sequence(value: bigint) {
    this.#sequence = checkSequence(value);
  }

  /** `spiffe_refresh_hint` in seconds, or undefined (consumers use their default). */
  get refreshHintSeconds(): number | undefined {
    return this.#refreshHint;
  }
  set refreshHintSeconds(value: number | undefined) {
    this.#refreshHint = checkRefreshHint(value);
  }

  // ---- X.509 authorities ----

  /** Copies of the DER CA certificates, in insertion order. */
  x509Authorities(): Buffer[] {
    return this.#x509.map((a) => Buffer.from(a.der));
  }

  /**
   * Adds a DER CA certificate; returns false when it is already present. Throws ERR_BUNDLE_INVALID
   * `certificate` when it is not exactly one certificate with an EC or RSA key.
   */
  addX509Authority(der: Uint8Array): boolean {
    if (this.hasX509Authority(der)) return false;
    this.#x509.push(x509Authority(der, 'certificate'));
    return true;
  }

  removeX509Authority(der: Uint8Array): boolean {
    const i = this.#indexOfX509(der);
    if (i === -1) return false;
    this.#x509.splice(i, 1);
    return true;
  }

  hasX509Authority(der: Uint8Array): boolean {
    return this.#indexOfX509(der) !== -1;
  }

  #indexOfX509(der: Uint8Array): number {
    return this.#x509.findIndex((a) => a.der.equals(der));
  }

  /** Concatenated DER of every X.509 authority (Workload API bundle encoding). */
  x509AuthoritiesDer(): Buffer {
    return Buffer.concat(this.#x509.map((a) => a.der));
  }

  /** PEM CERTIFICATE blocks of every X.509 authority, in order. */
  x509AuthoritiesPem(): string {
    return certificatesToPem(this.#x509.map((a) => a.der));
  }

  // ---- JWT authorities ----

  /** A copy of the kid -> public key map, in insertion order. */
  jwtAuthorities(): Map<string, KeyObject> {
    return new Map([...this.#jwt].map(([kid, a]) => [kid, a.key]));
  }

  jwtAuthority(kid: string): KeyObject | undefined {
    return this.#jwt.get(kid)?.key;
  }

  /**
   * Adds a JWT authority; returns false when the same key is already present under `kid`.
   * Throws ERR_BUNDLE_INVALID `kid` (empty kid), `duplicate_kid` (kid taken by another key) or
   * `jwk` (not an EC/RSA key). A private key is reduced to its public half.
   */
  addJwtAuthority(kid: string, key: KeyObject): boolean {
    checkKid(kid);
    const authority = jwtAuthority(key);
    const existing = this.#jwt.get(kid);
    if (existing !== undefined) {
      if (existing.spki.equals(authority.spki)) return false;
      throw bundleError('duplicate_kid', `JWT authority kid ${quote(kid)} is already used by another key`);
    }
    this.#jwt.set(kid, authority);
    return true;
  }

  removeJwtAuthority(kid: string): boolean {
    return this.#jwt.delete(kid);
  }

  hasJwtAuthority(kid: string): boolean {
    return this.#jwt.has(kid);
  }

  // ---- whole bundle ----

  /** No authority of either kind: the bundle trusts nothing. */
  isEmpty(): boolean {
    return this.#x509.length === 0 && this.#jwt.size === 0;
  }

  /**
   * Same trust domain, sequence, refresh hint, X.509 authorities in the same order, and the same
   * kid -> key pairs (order of JWT authorities does not matter: it is not part of the encoding).
   */
  equals(other: Bundle): boolean {
    if (this === other) return true;
    if (this.trustDomain !== other.trustDomain || this.#sequence !== other.#sequence || this.#refreshHint !== other.#refreshHint) {
      return false;
    }
    if (this.#x509.length !== other.#x509.length || this.#jwt.size !== other.#jwt.size) return false;
    for (let i = 0; i < this.#x509.length; i++) {
      if (!this.#x509[i]!.der.equals(other.#x509[i]!.der)) return false;
    }
    for (const [kid, a] of this.#jwt) {
      const b = other.#jwt.get(kid);
      if (b === undefined || !a.spki.equals(b.spki)) return false;
    }
    return true;
  }

  /** A deep copy (its own buffers and maps; KeyObjects are immutable and shared). */
  clone(): Bundle {
    const copy = new Bundle(this.trustDomain);
    copy.#x509 = this.#x509.map((a) => ({ der: Buffer.from(a.der), jwk: a.jwk }));
    copy.#jwt = new Map(this.#jwt);
    copy.#sequence = this.#sequence;
    copy.#refreshHint = this.#refreshHint;
    return copy;
  }

  /** X509BundleSource: own authorities for own trust domain (possibly []: trust nothing), else undefined. */
  getX509Authorities(td: TrustDomain): readonly Buffer[] | undefined {
    return td === this.trustDomain ? this.x509Authorities() : undefined;
  }

  /** JwtBundleSource: own JWT authorities for own trust domain (possibly empty), else undefined. */
  getJwtAuthorities(td: TrustDomain): ReadonlyMap<string, KeyObject> | undefined {
    return td === this.trustDomain ? this.jwtAuthorities() : undefined;
  }

  static {
    entriesOf = (bundle) => ({
      x509: bundle.#x509,
      jwt: [...bundle.#jwt].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    });
  }
}

/** The X.509 authorities (insertion order) and the JWT authorities sorted by kid, for the encoders. */
export function bundleEntries(bundle: Bundle): { x509: readonly X509Authority[]; jwt: [string, JwtAuthority][] } {
  return entriesOf(bundle);
}
