/**
 * The CA journal: which signing authorities exist, in which key slot, in which state. Stored as
 * one JSON document through DataStore.getCaJournal/setCaJournal; private keys are NOT in it
 * (they live in the KeyManager under the record's `keyId`).
 *
 * Document (version 1):
 * {
 *   "version": 1,
 *   "trustDomain": "example.org",
 *   "sequence": "7",                      // spiffe_sequence of the bundle this journal describes
 *   "x509": [{                            // X.509 CAs, oldest first
 *     "id": "<serial hex>", "slot": "A", "keyId": "x509-CA-A",
 *     "status": "prepared" | "active" | "old",
 *     "selfSigned": true,                 // false: an intermediate under the upstream authority
 *     "certDer": "<base64 DER>",
 *     "issuedAt": "<ISO time it was made>", "notAfter": "<ISO>", "activatedAt"?: "<ISO>"
 *   }],
 *   "jwt": [{                             // JWT signing keys, oldest first
 *     "kid": "<32 base62>", "slot": "A", "keyId": "JWT-Signer-A", "status": ...,
 *     "publicKeySpki": "<base64 DER>", "issuedAt": "<ISO>", "notAfter": "<ISO>", "activatedAt"?: "<ISO>"
 *   }],
 *   "upstreamRoots": [{ "certDer": "<base64 DER>", "notAfter": "<ISO>" }]   // published upstream roots
 * }
 *
 * Invariants (checked on parse): at most one `prepared` and one `active` record per kind, and
 * they hold different slots; ids/kids unique. `old` records keep their slot letter for the
 * record only: their key is gone (deleted when they stopped signing) and the slot may be reused.
 */
import { CaError } from './errors.js';

export const JOURNAL_VERSION = 1;

export type SlotName = 'A' | 'B';
export type SlotStatus = 'prepared' | 'active' | 'old';

export interface RecordBase {
  slot: SlotName;
  keyId: string;
  status: SlotStatus;
  issuedAt: string;
  notAfter: string;
  activatedAt?: string;
}

export interface X509Record extends RecordBase {
  id: string;
  selfSigned: boolean;
  certDer: string;
}

export interface JwtRecord extends RecordBase {
  kid: string;
  publicKeySpki: string;
}

export interface RootRecord {
  certDer: string;
  notAfter: string;
}

export interface Journal {
  version: typeof JOURNAL_VERSION;
  trustDomain: string;
  sequence: string;
  x509: X509Record[];
  jwt: JwtRecord[];
  upstreamRoots: RootRecord[];
}

export const X509_KEY_IDS: Readonly<Record<SlotName, string>> = { A: 'x509-CA-A', B: 'x509-CA-B' };
export const JWT_KEY_IDS: Readonly<Record<SlotName, string>> = { A: 'JWT-Signer-A', B: 'JWT-Signer-B' };

export function emptyJournal(trustDomain: string): Journal {
  return { version: JOURNAL_VERSION, trustDomain, sequence: '0', x509: [], jwt: [], upstreamRoots: [] };
}

export function serializeJournal(j: Journal): string {
  return JSON.stringify(j);
}

function bad(message: string): CaError {
  return new CaError('journal', `CA journal: ${message}`);
}

const B64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

function str(o: Record<string, unknown>, key: string, where: string): string {
  const v = o[key];
  if (typeof v !== 'string' || v === '') throw bad(`${where}.${key} must be a non-empty string`);
  return v;
}

function time(o: Record<string, unknown>, key: string, where: string): string {
  const v = str(o, key, where);
  if (Number.isNaN(Date.parse(v))) throw bad(`${where}.${key} is not a time: ${JSON.stringify(v).slice(0, 60)}`);
  return v;
}

function b64(o: Record<string, unknown>, key: string, where: string): string {
  const v = str(o, key, where);
  if (!B64_RE.test(v)) throw bad(`${where}.${key} is not base64`);
  return v;
}

function obj(v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${where} must be an object`);
  return v as Record<string, unknown>;
}

function arr(o: Record<string, unknown>, key: string): unknown[] {
  const v = o[key];
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw bad(`${key} must be an array`);
  return v;
}

function base(o: Record<string, unknown>, where: string, keyIds: Readonly<Record<SlotName, string>>): RecordBase {
  const slot = o['slot'];
  if (slot !== 'A' && slot !== 'B') throw bad(`${where}.slot must be "A" or "B"`);
  const status = o['status'];
  if (status !== 'prepared' && status !== 'active' && status !== 'old') throw bad(`${where}.status must be prepared, active or old`);
  const keyId = str(o, 'keyId', where);
  if (keyId !== keyIds[slot]) throw bad(`${where}.keyId ${JSON.stringify(keyId)} does not belong to slot ${slot}`);
  const r: RecordBase = { slot, keyId, status, issuedAt: time(o, 'issuedAt', where), notAfter: time(o, 'notAfter', where) };
  if (o['activatedAt'] !== undefined) r.activatedAt = time(o, 'activatedAt', where);
  return r;
}

function checkSlots(records: readonly RecordBase[], kind: string): void {
  for (const status of ['prepared', 'active'] as const) {
    if (records.filter((r) => r.status === status).length > 1) throw bad(`more than one ${status} ${kind} record`);
  }
  const p = records.find((r) => r.status === 'prepared');
  const a = records.find((r) => r.status === 'active');
  if (p !== undefined && a !== undefined && p.slot === a.slot) throw bad(`prepared and active ${kind} records share slot ${p.slot}`);
}

/** Parses and checks a journal document; throws CaError `journal` naming what is wrong. */
export function parseJournal(text: string): Journal {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (cause) {
    throw new CaError('journal', 'CA journal is not JSON', { cause });
  }
  const o = obj(doc, 'journal');
  if (o['version'] !== JOURNAL_VERSION) throw bad(`unsupported version ${JSON.stringify(o['version'])} (this server reads version ${JOURNAL_VERSION})`);
  const trustDomain = str(o, 'trustDomain', 'journal');
  const sequence = str(o, 'sequence', 'journal');
  if (!/^(0|[1-9][0-9]{0,19})$/.test(sequence) || BigInt(sequence) > (1n << 64n) - 1n) throw bad('sequence must be a 64-bit unsigned integer string');
  const x509 = arr(o, 'x509').map((v, i): X509Record => {
    const where = `x509[${i}]`;
    const r = obj(v, where);
    if (typeof r['selfSigned'] !== 'boolean') throw bad(`${where}.selfSigned must be a boolean`);
    return { id: str(r, 'id', where), ...base(r, where, X509_KEY_IDS), selfSigned: r['selfSigned'], certDer: b64(r, 'certDer', where) };
  });
  const jwt = arr(o, 'jwt').map((v, i): JwtRecord => {
    const where = `jwt[${i}]`;
    const r = obj(v, where);
    return { kid: str(r, 'kid', where), ...base(r, where, JWT_KEY_IDS), publicKeySpki: b64(r, 'publicKeySpki', where) };
  });
  const upstreamRoots = arr(o, 'upstreamRoots').map((v, i): RootRecord => {
    const where = `upstreamRoots[${i}]`;
    const r = obj(v, where);
    return { certDer: b64(r, 'certDer', where), notAfter: time(r, 'notAfter', where) };
  });
  checkSlots(x509, 'X.509 CA');
  checkSlots(jwt, 'JWT key');
  if (new Set(x509.map((r) => r.id)).size !== x509.length) throw bad('duplicate X.509 CA id');
  if (new Set(jwt.map((r) => r.kid)).size !== jwt.length) throw bad('duplicate JWT kid');
  return { version: JOURNAL_VERSION, trustDomain, sequence, x509, jwt, upstreamRoots };
}
