/**
 * X.509 v3 extension encoders used for issuance (RFC 5280 4.2), plus the KeyUsage bit names.
 * Fixed extensions are encoded once at load time.
 */
import { createHash } from 'node:crypto';
import {
  boolean,
  contextPrimitive,
  explicit,
  namedBits,
  octetString,
  oid,
  sequence,
  smallInt,
} from './der.js';
import { OID } from './oids.js';

/** KeyUsage bit numbers (RFC 5280 4.2.1.3). */
export const KEY_USAGE_BITS = {
  digitalSignature: 0,
  nonRepudiation: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
  encipherOnly: 7,
  decipherOnly: 8,
} as const;
export type KeyUsageName = keyof typeof KEY_USAGE_BITS;

/** Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }. */
export function extension(extnId: string, critical: boolean, valueDer: Uint8Array): Buffer {
  return critical
    ? sequence(oid(extnId), boolean(true), octetString(valueDer))
    : sequence(oid(extnId), octetString(valueDer));
}

/** basicConstraints, always critical. CA=false encodes as an empty SEQUENCE (DEFAULT omitted). */
export function basicConstraintsExt(ca: boolean, pathLen?: number): Buffer {
  if (!ca) return extension(OID.basicConstraints, true, sequence());
  if (pathLen !== undefined && (!Number.isSafeInteger(pathLen) || pathLen < 0)) throw new RangeError(`invalid pathLen ${pathLen}`);
  const body = pathLen === undefined ? sequence(boolean(true)) : sequence(boolean(true), smallInt(pathLen));
  return extension(OID.basicConstraints, true, body);
}

/** keyUsage, always critical. */
export function keyUsageExt(usages: readonly KeyUsageName[]): Buffer {
  return extension(OID.keyUsage, true, namedBits(usages.map((u) => KEY_USAGE_BITS[u])));
}

export function extKeyUsageExt(oids: readonly string[]): Buffer {
  return extension(OID.extKeyUsage, false, sequence(...oids.map((o) => oid(o))));
}

/** subjectAltName with URI [6] and dNSName [2] entries (IA5, already validated by the caller). */
export function subjectAltNameExt(names: { uris?: readonly string[]; dnsNames?: readonly string[] }, critical: boolean): Buffer {
  const parts: Buffer[] = [];
  for (const d of names.dnsNames ?? []) parts.push(contextPrimitive(2, Buffer.from(d, 'latin1')));
  for (const u of names.uris ?? []) parts.push(contextPrimitive(6, Buffer.from(u, 'latin1')));
  return extension(OID.subjectAltName, critical, sequence(...parts));
}

/**
 * Key identifier by RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING value
 * (excluding tag, length and unused-bits octet). SHA-1 here is an identifier, not a signature.
 * `spkiKeyBits` are those value octets.
 */
export function keyIdentifier(spkiKeyBits: Uint8Array): Buffer {
  return createHash('sha1').update(spkiKeyBits).digest();
}

export function subjectKeyIdentifierExt(keyId: Uint8Array): Buffer {
  return extension(OID.subjectKeyIdentifier, false, octetString(keyId));
}

/** authorityKeyIdentifier with only keyIdentifier [0]. */
export function authorityKeyIdentifierExt(keyId: Uint8Array): Buffer {
  return extension(OID.authorityKeyIdentifier, false, sequence(contextPrimitive(0, keyId)));
}

export interface NameConstraintsSpec {
  permittedUris?: readonly string[];
  excludedUris?: readonly string[];
  permittedDns?: readonly string[];
  excludedDns?: readonly string[];
}

/** nameConstraints (critical) with URI [6] and dNSName [2] subtrees; minimum/maximum omitted. */
export function nameConstraintsExt(spec: NameConstraintsSpec): Buffer {
  const subtrees = (uris: readonly string[] = [], dns: readonly string[] = []): Buffer[] => [
    ...dns.map((d) => sequence(contextPrimitive(2, Buffer.from(d, 'latin1')))),
    ...uris.map((u) => sequence(contextPrimitive(6, Buffer.from(u, 'latin1')))),
  ];
  const permitted = subtrees(spec.permittedUris, spec.permittedDns);
  const excluded = subtrees(spec.excludedUris, spec.excludedDns);
  const parts: Buffer[] = [];
  // permittedSubtrees [0] / excludedSubtrees [1] are IMPLICIT SEQUENCE OF: a constructed
  // context tag directly around the GeneralSubtree elements.
  if (permitted.length > 0) parts.push(explicit(0, Buffer.concat(permitted)));
  if (excluded.length > 0) parts.push(explicit(1, Buffer.concat(excluded)));
  return extension(OID.nameConstraints, true, sequence(...parts));
}

/** Fixed extensions of every leaf X509-SVID. */
export const LEAF_BASIC_CONSTRAINTS = basicConstraintsExt(false);
export const LEAF_EXT_KEY_USAGE = extKeyUsageExt([OID.serverAuth, OID.clientAuth]);
/** Leaf keyUsage: digitalSignature + keyAgreement for EC keys, + keyEncipherment for RSA keys. */
export const LEAF_KEY_USAGE_EC = keyUsageExt(['digitalSignature', 'keyAgreement']);
export const LEAF_KEY_USAGE_RSA = keyUsageExt(['digitalSignature', 'keyEncipherment']);
/** CA keyUsage: keyCertSign + cRLSign + digitalSignature (the last as SPIRE sets it). */
export const CA_KEY_USAGE = keyUsageExt(['digitalSignature', 'keyCertSign', 'cRLSign']);

const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * Why a DNS SAN is unacceptable, or undefined when it is fine: non-empty, at most 253
 * characters, dot-separated labels of 1..63 `A-Z a-z 0-9 -` not starting or ending with `-`,
 * optionally a leading `*.` wildcard label (not alone: `*.com` style checks are the CA policy's).
 */
export function dnsNameProblem(name: string): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'empty DNS name';
  if (name.length > 253) return `DNS name is ${name.length} characters, over 253`;
  const body = name.startsWith('*.') ? name.slice(2) : name;
  const labels = body.split('.');
  for (const label of labels) {
    if (!DNS_LABEL.test(label)) return `bad DNS label ${JSON.stringify(label)}`;
  }
  return undefined;
}
