/**
 * Errors raised by the SPIFFE core library. Every error carries a stable string `code`
 * (what kind of input was bad) and, where useful, a `reason` naming the exact rule broken.
 * Messages say what was wrong and quote the offending value (never key material).
 */
export const ErrorCode = {
  SPIFFE_ID_INVALID: 'ERR_SPIFFE_ID_INVALID',
  TRUST_DOMAIN_INVALID: 'ERR_TRUST_DOMAIN_INVALID',
  ENDPOINT_ADDRESS_INVALID: 'ERR_ENDPOINT_ADDRESS_INVALID',
  KEY_INVALID: 'ERR_KEY_INVALID',
  PEM_INVALID: 'ERR_PEM_INVALID',
  X509_CSR_INVALID: 'ERR_X509_CSR_INVALID',
  X509_CERT_INVALID: 'ERR_X509_CERT_INVALID',
  X509_ISSUE_INVALID: 'ERR_X509_ISSUE_INVALID',
  X509_SVID_INVALID: 'ERR_X509_SVID_INVALID',
  X509_SVID_UNTRUSTED: 'ERR_X509_SVID_UNTRUSTED',
  JWT_SVID_INVALID: 'ERR_JWT_SVID_INVALID',
  JWT_SVID_UNTRUSTED: 'ERR_JWT_SVID_UNTRUSTED',
  BUNDLE_INVALID: 'ERR_BUNDLE_INVALID',
  /** SDK: a peer's SPIFFE ID is not one the authorizer accepts. */
  UNAUTHORIZED: 'ERR_SPIFFE_UNAUTHORIZED',
  /** SDK: the X509Source cannot hand out an SVID or bundle (not started, closed, expired, no agent). */
  X509_SOURCE: 'ERR_X509_SOURCE',
  /** SDK: the JwtSource cannot hand out a JWT-SVID or JWT bundle (not started, closed, no agent, fetch failed). */
  JWT_SOURCE: 'ERR_JWT_SOURCE',
  /** SDK: the BundleSource cannot hand out a bundle (not started, closed, no agent, unknown trust domain). */
  BUNDLE_SOURCE: 'ERR_BUNDLE_SOURCE',
  /** SDK: an HTTP request carries no usable `Authorization: Bearer` JWT-SVID (missing, other scheme, too large). */
  JWT_AUTH: 'ERR_JWT_AUTH',
  /** SDK: a TLS peer presented no usable certificate chain. */
  TLS_PEER: 'ERR_TLS_PEER',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class SpiffeError extends Error {
  readonly code: ErrorCode;
  /** The rule that was broken, e.g. `trailing_slash`; stable, for tests and metrics. */
  readonly reason: string;

  constructor(code: ErrorCode, reason: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SpiffeError';
    this.code = code;
    this.reason = reason;
  }
}

export function isSpiffeError(err: unknown, code?: ErrorCode): err is SpiffeError {
  return err instanceof SpiffeError && (code === undefined || err.code === code);
}

/** Quote a caller-supplied value for an error message: JSON-escaped and cut to a sane length. */
export function quote(value: string, max = 300): string {
  const cut = value.length > max ? `${value.slice(0, max)}...(${value.length} chars)` : value;
  return JSON.stringify(cut);
}
