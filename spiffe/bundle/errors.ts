/**
 * The one error constructor of the bundle code: every bundle failure is a `SpiffeError` with code
 * `ERR_BUNDLE_INVALID` and one of the reasons below (what each means: spiffe/bundle.ts).
 */
import { ErrorCode, SpiffeError } from '../errors.js';

export type BundleErrorReason =
  | 'json'
  | 'keys'
  | 'missing_use'
  | 'jwk'
  | 'x5c'
  | 'kid'
  | 'duplicate_kid'
  | 'sequence'
  | 'refresh_hint'
  | 'certificate'
  | 'pem'
  | 'der';

export function bundleError(reason: BundleErrorReason, message: string, cause?: unknown): SpiffeError {
  return new SpiffeError(ErrorCode.BUNDLE_INVALID, reason, message, cause === undefined ? undefined : { cause });
}
