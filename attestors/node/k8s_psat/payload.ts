/**
 * The k8s_psat attestation payload, SPIRE's exact wire form: the JSON object
 * `{"cluster": "<name>", "token": "<projected service-account JWT>"}`. Decoding is strict and
 * bounded: the server parses it before anything else, from an unauthenticated peer.
 */
import { AttestationError } from '../types.js';

export const K8S_PSAT = 'k8s_psat';

export interface PsatPayload {
  cluster: string;
  token: string;
}

/** Upper bound on the whole payload; projected tokens are 1-2 KiB. */
export const MAX_PSAT_PAYLOAD_BYTES = 64 * 1024;
/** Longest cluster name accepted (it becomes one SPIFFE ID path segment). */
export const MAX_CLUSTER_NAME_LENGTH = 253;

/** Whether `name` can be one SPIFFE ID path segment (a-z A-Z 0-9 . - _, not "." or ".."), as cluster names must. */
export function isValidClusterName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_CLUSTER_NAME_LENGTH && /^[A-Za-z0-9._-]+$/.test(name) && name !== '.' && name !== '..';
}

/** A JWS in compact form: three base64url parts. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

export function encodePsatPayload(p: PsatPayload): Buffer {
  return Buffer.from(JSON.stringify({ cluster: p.cluster, token: p.token }), 'utf8');
}

function malformed(detail: string): AttestationError {
  return new AttestationError('malformed', `k8s_psat attestation payload is malformed: ${detail}`);
}

/** Parses a payload; throws AttestationError `malformed` naming what was wrong (never echoing the token). */
export function decodePsatPayload(payload: Buffer): PsatPayload {
  if (payload.length === 0) throw malformed('it is empty');
  if (payload.length > MAX_PSAT_PAYLOAD_BYTES) throw malformed(`it is ${payload.length} bytes, over the ${MAX_PSAT_PAYLOAD_BYTES}-byte limit`);
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch {
    throw malformed('expected the JSON object {"cluster": ..., "token": ...}');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw malformed('expected a JSON object with "cluster" and "token"');
  const o = v as Record<string, unknown>;
  const extra = Object.keys(o).filter((k) => k !== 'cluster' && k !== 'token');
  if (extra.length > 0) throw malformed(`unexpected field ${JSON.stringify(extra[0]!.slice(0, 50))}`);
  const { cluster, token } = o;
  if (cluster === undefined || cluster === '') throw malformed('"cluster" is missing');
  if (typeof cluster !== 'string') throw malformed('"cluster" is not a string');
  if (cluster.length > MAX_CLUSTER_NAME_LENGTH) throw malformed(`"cluster" is longer than ${MAX_CLUSTER_NAME_LENGTH} characters`);
  if (token === undefined || token === '') throw malformed('"token" is missing');
  if (typeof token !== 'string') throw malformed('"token" is not a string');
  if (!COMPACT_JWS.test(token)) throw malformed('"token" is not a JWT (expected three base64url parts separated by dots)');
  return { cluster, token };
}
