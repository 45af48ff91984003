/**
 * Registration entries for tests and the bench seed: every optional field at the value an entry
 * gets when it leaves the field out (as the admin API stores it), the rest given.
 */
import type { NewEntry } from '../../server/datastore/types.js';

export function entryWithDefaults(fields: Pick<NewEntry, 'spiffeId' | 'parentId' | 'selectors'> & Partial<NewEntry>): NewEntry {
  return {
    x509SvidTtl: 0,
    jwtSvidTtl: 0,
    dnsNames: [],
    federatesWith: [],
    admin: false,
    downstream: false,
    hint: '',
    entryExpiry: 0,
    ...fields,
  };
}
