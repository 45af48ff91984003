/**
 * JWT-SVIDs: minting with node:crypto, validation on top of `jose`.
 *
 * Contract:
 * - Minted tokens: compact JWS, header `{alg, kid, typ: "JWT"}` with `alg` from the signing key
 *   (ES256 P-256, ES384 P-384, RS256 RSA); claims `sub`, `aud` (ALWAYS an array with every
 *   requested audience), `exp`, `iat`, and `iss` when an issuer is given (the server's
 *   `jwt_issuer`; otherwise no `iss`, as SPIRE). Default lifetime 300 s, capped by `expiresAtMost` (the
 *   signing key's own expiry). Signed synchronously with node:crypto (ECDSA as IEEE P1363 r||s,
 *   RSA PKCS#1 v1.5): the hot path of the server's NewJWTSVID; jose verifies what we mint.
 * - Validation order, first failure wins: token shape -> `alg` allow-list (on the decoded
 *   protected header, before any key work: `none`, HS*, EdDSA never reach a key) -> `typ`
 *   (absent, `JWT` or `JOSE`) -> claims shape -> `sub` is a SPIFFE ID -> bundle of the `sub`'s
 *   trust domain -> key by `kid` (a token without `kid` is accepted only when one of that trust
 *   domain's keys verifies it) -> key type fits `alg` -> signature -> claims (`exp` required and
 *   not past, `aud` required and containing the expected audience, `nbf`/`iat` not in the future;
 *   all with `leewaySeconds`). Claim errors are only reported for tokens whose signature verified.
 * - Keys never go through `KeyObject.export({format: 'jwk'})` (which jose does for KeyObjects on
 *   Node < 22 and which can deadlock on Node 20.20): we import DER into WebCrypto CryptoKeys
 *   ourselves and hand those to jose. jose's JWKS helpers are not used (they ignore `use:
 *   jwt-svid` keys).
 *
 * Errors: `SpiffeError`
 *   ERR_JWT_SVID_INVALID    malformed, alg, typ, sub, expired, not_yet_valid, issued_in_future,
 *                           audience, missing_exp, missing_aud; when minting also ttl,
 *                           signer_expired (and audience, sub, kid for bad arguments)
 *   ERR_JWT_SVID_UNTRUSTED  no_bundle, unknown_kid, key_mismatch, signature
 *   ERR_KEY_INVALID         (minting) signer key not private / unsupported, from keys.ts
 * The jose error, when there is one, is kept as `cause`.
 */
import { sign as cryptoSign, webcrypto, type KeyObject } from 'node:crypto';
import { errors as joseErrors, jwtVerify } from 'jose';
import { ErrorCode, SpiffeError, quote } from './errors.js';
import { isSpiffeId, trustDomainOf, type SpiffeId } from './id.js';
import { exportPublicKeySpki, jwsAlgFor } from './keys.js';
import type { JwtBundleSource } from './source.js';

/** Algorithms a JWT-SVID may be signed with; checked before any key work, so `none`, HS* and EdDSA fail. */
export const ALLOWED_JWT_ALGS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512'] as const;
export type JwtSvidAlg = (typeof ALLOWED_JWT_ALGS)[number];

export const DEFAULT_JWT_SVID_TTL_SECONDS = 300;
export const DEFAULT_LEEWAY_SECONDS = 30;
/** Tokens longer than this are refused before any parsing (JWT-SVIDs are well under 4 KiB). */
export const MAX_JWT_SVID_LENGTH = 64 * 1024;
/**
 * Distinct audiences one JWT-SVID request may ask for (the server's agent API enforces it; the
 * agent's Workload API refuses larger requests itself, before any server round trip).
 */
export const MAX_JWT_SVID_AUDIENCES = 32;

export type JwtSvidInvalidReason =
  | 'malformed'
  | 'alg'
  | 'typ'
  | 'sub'
  | 'expired'
  | 'not_yet_valid'
  | 'issued_in_future'
  | 'audience'
  | 'missing_exp'
  | 'missing_aud'
  | 'ttl'
  | 'kid'
  | 'signer_expired';
export type JwtSvidUntrustedReason = 'no_bundle' | 'unknown_kid' | 'key_mismatch' | 'signature';

function invalid(reason: JwtSvidInvalidReason, message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(ErrorCode.JWT_SVID_INVALID, reason, message, cause === undefined ? undefined : { cause });
}

function untrusted(reason: JwtSvidUntrustedReason, message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(ErrorCode.JWT_SVID_UNTRUSTED, reason, message, cause === undefined ? undefined : { cause });
}

const epochSeconds = (d: Date): number => Math.floor(d.getTime() / 1000);

function checkDate(d: Date | undefined, what: string): Date {
  const date = d ?? new Date();
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) throw new TypeError(`${what} must be a valid Date`);
  return date;
}

// ---------------------------------------------------------------------------------------------
// Public KeyObject -> CryptoKey for jose's verification (cached per key and algorithm)

type WebCryptoParams = { name: 'ECDSA'; namedCurve: string } | { name: 'RSASSA-PKCS1-v1_5' | 'RSA-PSS'; hash: string };

/** WebCrypto import parameters for `alg`, or undefined when `key` cannot serve `alg`. */
function importParams(alg: JwtSvidAlg, key: KeyObject): WebCryptoParams | undefined {
  const bits = alg.slice(2);
  if (alg.startsWith('ES')) {
    const curve = { '256': 'prime256v1', '384': 'secp384r1', '512': 'secp521r1' }[bits];
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== curve) return undefined;
    return { name: 'ECDSA', namedCurve: { '256': 'P-256', '384': 'P-384', '512': 'P-521' }[bits]! };
  }
  if (key.asymmetricKeyType !== 'rsa' || (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) return undefined;
  return { name: alg.startsWith('PS') ? 'RSA-PSS' : 'RSASSA-PKCS1-v1_5', hash: `SHA-${bits}` };
}

const cryptoKeys = new WeakMap<KeyObject, Map<string, Promise<webcrypto.CryptoKey>>>();

function toCryptoKey(key: KeyObject, alg: JwtSvidAlg, params: WebCryptoParams): Promise<webcrypto.CryptoKey> {
  let perAlg = cryptoKeys.get(key);
  if (perAlg === undefined) cryptoKeys.set(key, (perAlg = new Map()));
  let pending = perAlg.get(alg);
  if (pending === undefined) {
    // Verification keys only (minting signs with node:crypto).
    pending = webcrypto.subtle.importKey('spki', exportPublicKeySpki(key), params, false, ['verify']);
    perAlg.set(alg, pending);
    pending.catch(() => perAlg!.delete(alg));
  }
  return pending;
}

// ---------------------------------------------------------------------------------------------
// Minting

export interface JwtSigner {
  kid: string;
  privateKey: KeyObject;
}

export interface MintJwtSvidOptions {
  id: SpiffeId;
  /** Every audience goes into `aud` (an array, even for one). Non-empty, each non-empty. */
  audience: readonly string[];
  ttlSeconds?: number;
  signer: JwtSigner;
  now?: Date;
  /** Cap for `exp`, normally the signing key's own expiry. */
  expiresAtMost?: Date;
  /** The `iss` claim (the server's `jwt_issuer`); absent or empty: no `iss`. */
  issuer?: string;
}

export interface MintedJwtSvid {
  token: string;
  expiresAt: Date;
  issuedAt: Date;
}

export async function mintJwtSvid(opts: MintJwtSvidOptions): Promise<MintedJwtSvid> {
  const { id, audience, signer } = opts;
  const ttl = opts.ttlSeconds ?? DEFAULT_JWT_SVID_TTL_SECONDS;
  if (!isSpiffeId(id)) throw invalid('sub', `JWT-SVID subject ${quote(String(id))} is not a SPIFFE ID`);
  if (!Array.isArray(audience) || audience.length === 0 || audience.some((a) => typeof a !== 'string' || a.length === 0)) {
    throw invalid('audience', 'JWT-SVID audience must be a non-empty list of non-empty strings');
  }
  if (!Number.isSafeInteger(ttl) || ttl <= 0) throw invalid('ttl', `JWT-SVID TTL must be a positive whole number of seconds, got ${ttl}`);
  if (typeof signer?.kid !== 'string' || signer.kid.length === 0) throw invalid('kid', 'JWT signer needs a non-empty kid');
  if (signer.privateKey?.type !== 'private') {
    throw new SpiffeError(ErrorCode.KEY_INVALID, 'not_private', 'JWT signer key must be a private key');
  }
  const alg = jwsAlgFor(signer.privateKey); // throws ERR_KEY_INVALID for unsupported keys
  const now = checkDate(opts.now, 'now');
  const iat = epochSeconds(now);
  let exp = iat + ttl;
  if (opts.expiresAtMost !== undefined) exp = Math.min(exp, epochSeconds(checkDate(opts.expiresAtMost, 'expiresAtMost')));
  if (exp <= iat) throw invalid('signer_expired', 'the JWT signing key has expired: cannot mint a JWT-SVID');

  if (opts.issuer !== undefined && typeof opts.issuer !== 'string') throw new TypeError('JWT-SVID issuer must be a string');
  const claims: Record<string, unknown> = { sub: id, aud: [...new Set(audience)], exp, iat };
  if (opts.issuer !== undefined && opts.issuer !== '') claims.iss = opts.issuer;
  const token = signCompactJws({ alg, kid: signer.kid, typ: 'JWT' }, claims, signer.privateKey);
  return { token, expiresAt: new Date(exp * 1000), issuedAt: new Date(iat * 1000) };
}

/** node:crypto parameters per minting alg (jwsAlgFor's range): JWS wants raw r||s ECDSA signatures. */
const SIGN_PARAMS: Record<ReturnType<typeof jwsAlgFor>, { hash: string; dsaEncoding?: 'ieee-p1363' }> = {
  ES256: { hash: 'sha256', dsaEncoding: 'ieee-p1363' },
  ES384: { hash: 'sha384', dsaEncoding: 'ieee-p1363' },
  RS256: { hash: 'sha256' },
};

/** The last protected header encoded (the server signs with one key at a time). */
let lastHeader = { json: '', b64: '' };

/**
 * The compact JWS `b64u(header).b64u(claims).b64u(signature)` (RFC 7515 section 7.1), signed
 * synchronously with node:crypto: the same bytes jose's SignJWT produces (JSON.stringify of the
 * header and claims, in insertion order), without WebCrypto's thread-pool round trip per token.
 * `key` must fit `alg` (mintJwtSvid derives `alg` from the key).
 */
function signCompactJws(header: { alg: ReturnType<typeof jwsAlgFor>; kid: string; typ: 'JWT' }, claims: Record<string, unknown>, key: KeyObject): string {
  const p = SIGN_PARAMS[header.alg];
  const json = JSON.stringify(header);
  if (lastHeader.json !== json) lastHeader = { json, b64: Buffer.from(json).toString('base64url') };
  const input = `${lastHeader.b64}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const signature = cryptoSign(p.hash, Buffer.from(input), p.dsaEncoding === undefined ? key : { key, dsaEncoding: p.dsaEncoding });
  return `${input}.${signature.toString('base64url')}`;
}

// ---------------------------------------------------------------------------------------------
// Decoding (no signature check)

interface Decoded {
  header: Record<string, unknown>;
  alg: JwtSvidAlg;
  kid: string | undefined;
  claims: Record<string, unknown>;
  id: SpiffeId;
}

const B64URL_RE = /^[A-Za-z0-9_-]+$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeJsonPart(part: string, what: string): Record<string, unknown> {
  if (!B64URL_RE.test(part) || part.length % 4 === 1) throw invalid('malformed', `JWT ${what} is not base64url`);
  const bytes = Buffer.from(part, 'base64url');
  if (bytes.toString('base64url') !== part) throw invalid('malformed', `JWT ${what} is not canonical base64url`);
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(bytes));
  } catch (cause) {
    throw invalid('malformed', `JWT ${what} is not UTF-8 JSON`, cause);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('malformed', `JWT ${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

function isAllowedAlg(alg: unknown): alg is JwtSvidAlg {
  return typeof alg === 'string' && (ALLOWED_JWT_ALGS as readonly string[]).includes(alg);
}

/** Shape, header (alg allow-list first, typ, kid) and `sub`. Never touches a key. */
function decode(token: unknown): Decoded {
  if (typeof token !== 'string' || token.length === 0) throw invalid('malformed', 'JWT-SVID must be a non-empty string');
  if (token.length > MAX_JWT_SVID_LENGTH) throw invalid('malformed', `JWT-SVID is longer than ${MAX_JWT_SVID_LENGTH} characters`);
  const parts = token.split('.');
  if (parts.length !== 3) throw invalid('malformed', `JWT-SVID must be a compact JWS with 3 parts, got ${parts.length}`);
  const header = decodeJsonPart(parts[0]!, 'header');
  const alg = header['alg'];
  if (!isAllowedAlg(alg)) {
    throw invalid('alg', `JWT-SVID alg ${quote(String(alg), 20)} is not allowed (expected one of ${ALLOWED_JWT_ALGS.join(', ')})`);
  }
  const typ = header['typ'];
  if (typ !== undefined && typ !== 'JWT' && typ !== 'JOSE') throw invalid('typ', `JWT-SVID typ ${quote(String(typ), 40)} is not JWT or JOSE`);
  const kid = header['kid'];
  if (kid !== undefined && typeof kid !== 'string') throw invalid('malformed', 'JWT-SVID kid must be a string');
  if (parts[2]!.length === 0) throw invalid('malformed', 'JWT-SVID has no signature');
  const claims = decodeJsonPart(parts[1]!, 'payload');
  const sub = claims['sub'];
  if (typeof sub !== 'string') throw invalid('sub', 'JWT-SVID has no string sub claim');
  if (!isSpiffeId(sub)) throw invalid('sub', `JWT-SVID sub ${quote(sub)} is not a valid SPIFFE ID`);
  return { header, alg, kid, claims, id: sub };
}

function expOf(claims: Record<string, unknown>): Date {
  const exp = claims['exp'];
  if (exp === undefined) throw invalid('missing_exp', 'JWT-SVID has no exp claim');
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw invalid('malformed', 'JWT-SVID exp claim must be a number');
  const date = new Date(exp * 1000);
  if (Number.isNaN(date.getTime())) throw invalid('malformed', 'JWT-SVID exp claim is out of range');
  return date;
}

/** `aud` as an array; throws missing_aud / malformed. */
function audOf(claims: Record<string, unknown>): string[] {
  const aud = claims['aud'];
  if (aud === undefined) throw invalid('missing_aud', 'JWT-SVID has no aud claim');
  if (typeof aud === 'string') return [aud];
  if (Array.isArray(aud) && aud.every((a) => typeof a === 'string')) return aud as string[];
  throw invalid('malformed', 'JWT-SVID aud claim must be a string or an array of strings');
}

function checkAudience(aud: readonly string[], expected: string): void {
  if (!aud.includes(expected)) throw invalid('audience', `JWT-SVID audience does not include ${quote(expected)}`);
}

export interface InsecureJwtSvid {
  id: SpiffeId;
  claims: Record<string, unknown>;
  expiresAt: Date;
}

/**
 * Reads a JWT-SVID WITHOUT checking its signature or times (agent cache, clients that got the
 * token from their own Workload API). Still enforces shape, the alg allow-list, typ, a valid
 * `sub`, a numeric `exp`, and, when `audience` is given, that `aud` contains it.
 */
export function parseJwtSvidInsecure(token: string, audience?: string): InsecureJwtSvid {
  const { claims, id } = decode(token);
  const expiresAt = expOf(claims);
  if (audience !== undefined) checkAudience(audOf(claims), audience);
  return { id, claims, expiresAt };
}

// ---------------------------------------------------------------------------------------------
// Validation

export interface ValidateJwtSvidOptions {
  /** The audience this validator is: must be among the token's `aud`. Required, non-empty. */
  audience: string;
  bundles: JwtBundleSource;
  now?: Date;
  leewaySeconds?: number;
}

export interface ValidatedJwtSvid {
  id: SpiffeId;
  claims: Record<string, unknown>;
  expiresAt: Date;
  audience: string[];
}

/** `audience`: the validator's, named when the token's `aud` does not include it. */
function mapJoseError(err: unknown, audience: string): SpiffeError {
  if (err instanceof SpiffeError) return err;
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return untrusted('signature', 'JWT-SVID signature is not valid', err);
  if (err instanceof joseErrors.JWTExpired) return invalid('expired', 'JWT-SVID has expired', err);
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    const missing = err.reason === 'missing';
    switch (err.claim) {
      case 'exp':
        return missing ? invalid('missing_exp', 'JWT-SVID has no exp claim', err) : invalid('malformed', 'JWT-SVID exp claim is invalid', err);
      case 'aud':
        return missing ? invalid('missing_aud', 'JWT-SVID has no aud claim', err) : invalid('audience', `JWT-SVID audience does not include ${quote(audience)}`, err);
      case 'sub':
        return invalid('sub', 'JWT-SVID has no valid sub claim', err);
      case 'nbf':
        return err.reason === 'check_failed' ? invalid('not_yet_valid', 'JWT-SVID is not valid yet (nbf)', err) : invalid('malformed', 'JWT-SVID nbf claim is invalid', err);
      case 'iat':
        return err.reason === 'check_failed' ? invalid('issued_in_future', 'JWT-SVID iat is in the future', err) : invalid('malformed', 'JWT-SVID iat claim is invalid', err);
      default:
        return invalid('malformed', `JWT-SVID claim ${quote(err.claim, 40)} is invalid`, err);
    }
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return invalid('alg', 'JWT-SVID alg is not allowed', err);
  if (err instanceof TypeError) return untrusted('key_mismatch', 'JWT authority key cannot verify this JWT-SVID alg', err);
  return invalid('malformed', 'JWT-SVID is malformed', err);
}

/**
 * Validates a JWT-SVID against the JWT authorities of its subject's trust domain. Resolves with
 * the subject and claims, or rejects with a SpiffeError (reasons in the module comment).
 */
export async function validateJwtSvid(token: string, opts: ValidateJwtSvidOptions): Promise<ValidatedJwtSvid> {
  const { audience, bundles } = opts;
  const leeway = opts.leewaySeconds ?? DEFAULT_LEEWAY_SECONDS;
  if (typeof audience !== 'string' || audience.length === 0) throw invalid('audience', 'the expected audience must be a non-empty string');
  if (!Number.isFinite(leeway) || leeway < 0) throw new TypeError('leewaySeconds must be a non-negative number');
  const now = checkDate(opts.now, 'now');

  const { alg, kid, id } = decode(token);
  const td = trustDomainOf(id);
  const authorities = bundles.getJwtAuthorities(td);
  if (authorities === undefined) throw untrusted('no_bundle', `no JWT bundle for trust domain ${quote(td)} of ${quote(id)}`);

  let candidates: KeyObject[];
  if (kid !== undefined) {
    const key = authorities.get(kid);
    if (key === undefined) throw untrusted('unknown_kid', `no JWT authority with kid ${quote(kid, 100)} in trust domain ${quote(td)}`);
    if (importParams(alg, key) === undefined) {
      throw untrusted('key_mismatch', `JWT authority ${quote(kid, 100)} (${key.asymmetricKeyType}) cannot verify ${alg}`);
    }
    candidates = [key];
  } else {
    candidates = [...authorities.values()].filter((k) => importParams(alg, k) !== undefined);
  }

  const options = {
    algorithms: [alg],
    requiredClaims: ['exp', 'aud', 'sub'],
    audience,
    currentDate: now,
    clockTolerance: leeway,
  };
  let verified: Record<string, unknown> | undefined;
  let lastError: unknown;
  for (const key of candidates) {
    let cryptoKey: webcrypto.CryptoKey;
    try {
      cryptoKey = await toCryptoKey(key, alg, importParams(alg, key)!);
    } catch (cause) {
      lastError = untrusted('key_mismatch', `JWT authority key cannot be used for ${alg}`, cause);
      continue;
    }
    try {
      verified = (await jwtVerify(token, cryptoKey, options)).payload as Record<string, unknown>;
      break;
    } catch (err) {
      // Without a kid, a failed signature just means "not this key"; anything else means the
      // signature verified and a claim is wrong: report it.
      if (kid === undefined && err instanceof joseErrors.JWSSignatureVerificationFailed) {
        lastError = err;
        continue;
      }
      throw mapJoseError(err, audience);
    }
  }
  if (verified === undefined) {
    if (kid !== undefined) throw mapJoseError(lastError, audience);
    throw untrusted('signature', `no JWT authority of trust domain ${quote(td)} verifies this JWT-SVID (it has no kid)`, lastError);
  }

  // jose checked exp/nbf/aud; these are the checks it does not make (or not the way SPIFFE wants).
  const nowSec = epochSeconds(now);
  const expiresAt = expOf(verified);
  const aud = audOf(verified);
  checkAudience(aud, audience);
  if (expiresAt.getTime() / 1000 <= nowSec - leeway) throw invalid('expired', 'JWT-SVID has expired');
  const iat = verified['iat'];
  if (iat !== undefined) {
    if (typeof iat !== 'number' || !Number.isFinite(iat)) throw invalid('malformed', 'JWT-SVID iat claim must be a number');
    if (iat > nowSec + leeway) throw invalid('issued_in_future', 'JWT-SVID iat is in the future');
  }
  return { id, claims: verified, expiresAt, audience: aud };
}
