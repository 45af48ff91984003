/**
 * Field-by-field equality of two versions of a registration entry, so that a re-delivery with no
 * change is not reported to agents as an update (AuthorizationCache, authcache.ts).
 */
import type { RegistrationEntry } from '../datastore/types.js';

/** Field-by-field equality of two entry versions (so a no-op re-delivery is not an "update"). */
export function sameEntry(a: RegistrationEntry, b: RegistrationEntry): boolean {
  if (a === b) return true;
  if (
    a.id !== b.id ||
    a.spiffeId !== b.spiffeId ||
    a.parentId !== b.parentId ||
    a.x509SvidTtl !== b.x509SvidTtl ||
    a.jwtSvidTtl !== b.jwtSvidTtl ||
    a.admin !== b.admin ||
    a.downstream !== b.downstream ||
    a.hint !== b.hint ||
    a.entryExpiry !== b.entryExpiry ||
    a.revisionNumber !== b.revisionNumber ||
    a.createdAt !== b.createdAt ||
    a.updatedAt !== b.updatedAt ||
    a.selectors.length !== b.selectors.length ||
    a.dnsNames.length !== b.dnsNames.length ||
    a.federatesWith.length !== b.federatesWith.length
  ) {
    return false;
  }
  for (let i = 0; i < a.selectors.length; i++) {
    const x = a.selectors[i]!;
    const y = b.selectors[i]!;
    if (x.type !== y.type || x.value !== y.value) return false;
  }
  for (let i = 0; i < a.dnsNames.length; i++) if (a.dnsNames[i] !== b.dnsNames[i]) return false;
  for (let i = 0; i < a.federatesWith.length; i++) if (a.federatesWith[i] !== b.federatesWith[i]) return false;
  return true;
}
