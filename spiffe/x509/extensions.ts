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
import { quote } from '../errors.js';

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

/** The longest DNS name accepted in a DNS SAN (RFC 1035 text form, no trailing dot). */
export const MAX_DNS_NAME_LENGTH = 253;

/** What is wrong with a DNS name: the category (for callers that report one) and a sentence. */
export interface DnsNameIssue {
  reason: 'empty' | 'too_long' | 'format' | 'char';
  detail: string;
}

/**
 * The one DNS SAN rule, used by the registration entry validator, the admin API, CSR creation
 * and certificate issuance: non-empty, at most 253 characters, dot-separated labels of 1..63
 * `A-Z a-z 0-9 -` not starting or ending with `-`, optionally a leading `*` wildcard label
 * followed by at least one more label (`*.com` style checks are the CA policy's). No trailing
 * dot, no empty labels. Returns undefined when the name is fine.
 */
export function dnsNameIssue(name: string): DnsNameIssue | undefined {
  if (typeof name !== 'string' || name.length === 0) return { reason: 'empty', detail: 'DNS name must not be empty' };
  if (name.length > MAX_DNS_NAME_LENGTH) {
    return { reason: 'too_long', detail: `DNS name is ${name.length} characters, over the ${MAX_DNS_NAME_LENGTH} limit` };
  }
  const labels = name.split('.');
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i]!;
    if (i === 0 && label === '*') {
      if (labels.length === 1) return { reason: 'format', detail: 'a wildcard needs a domain after "*."' };
      continue;
    }
    if (label.length === 0) {
      return { reason: 'format', detail: 'empty label (leading, trailing or doubled ".")' };
    }
    if (label.length > 63) return { reason: 'too_long', detail: `label ${quote(label)} is longer than 63 characters` };
    if (!DNS_LABEL.test(label)) {
      const detail = label.includes('*')
        ? 'a wildcard is allowed only as the whole leftmost label ("*.example.org")'
        : `label ${quote(label)} may contain only letters, digits and inner hyphens`;
      return { reason: 'char', detail };
    }
  }
  return undefined;
}

/** Why a DNS SAN is unacceptable (dnsNameIssue's sentence), or undefined when it is fine. */
export function dnsNameProblem(name: string): string | undefined {
  return dnsNameIssue(name)?.detail;
}
