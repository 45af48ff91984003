/**
 * Errors of the server CA (key manager, journal, upstream authority, rotation). Stable string
 * `code` ERR_CA plus a `reason`; messages name the file, slot or value that was wrong and never
 * carry key material.
 *
 * Reasons:
 *   key_manager   a key file or the keys directory cannot be read, written or trusted
 *   slot_id       a key slot ID that is not a safe file name
 *   journal       the CA journal in the datastore is not a document this version understands,
 *                 or belongs to another trust domain
 *   upstream      the upstream authority's files are unusable (which file and why in the message)
 *   not_ready     no active CA / JWT key (start() has not finished or the CA expired)
 *   trust_domain  an SVID requested for another trust domain
 *   config        an option of CaManager.start is invalid
 */
export type CaErrorReason = 'key_manager' | 'slot_id' | 'journal' | 'upstream' | 'not_ready' | 'trust_domain' | 'config';

export class CaError extends Error {
  readonly code = 'ERR_CA';
  readonly reason: CaErrorReason;
  constructor(reason: CaErrorReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CaError';
    this.reason = reason;
  }
}
