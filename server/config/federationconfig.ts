/**
 * The server's `federation` section, as SPIRE writes it:
 *
 *   federation {
 *     federates_with "partner.example" {
 *       bundle_endpoint_url = "https://spire.partner.example:8443"
 *       bundle_endpoint_profile "https_spiffe" {
 *         endpoint_spiffe_id = "spiffe://partner.example/spire/server"
 *       }
 *     }
 *     federates_with "web.example" {
 *       bundle_endpoint_url = "https://bundle.web.example/bundle.json"
 *       bundle_endpoint_profile "https_web" {}
 *     }
 *   }
 *
 * `parseFederatesWith` reads the static federation relationships (the bundle refresher fetches
 * their bundles; they are listed with the dynamic ones and cannot be changed through the API).
 */
import type { ConfigReader } from '../../common/configfile.js';
import { parseSpiffeId, parseTrustDomain, type TrustDomain } from '../../spiffe/id.js';
import type { FederationRelationship } from '../datastore/types.js';

export type StaticRelationship = Omit<FederationRelationship, 'createdAt' | 'updatedAt'>;

const PROFILES = ['https_web', 'https_spiffe'] as const;

/** The `federates_with` blocks of `federation` (problems recorded on the reader). */
export function parseFederatesWith(fed: ConfigReader, ownTrustDomain: TrustDomain | undefined): StaticRelationship[] {
  const out: StaticRelationship[] = [];
  const fw = fed.section('federates_with');
  for (const name of fw.keys()) {
    let td: TrustDomain;
    try {
      td = parseTrustDomain(name);
    } catch (err) {
      fw.raw(name);
      fw.problem(name, (err as Error).message);
      continue;
    }
    if (td === ownTrustDomain) {
      fw.raw(name);
      fw.problem(name, "is the server's own trust domain: a server does not federate with itself");
      continue;
    }
    const block = fw.section(name);
    const url = block.string('bundle_endpoint_url');
    if (url === undefined) block.problem('bundle_endpoint_url', 'is required');
    else if (!isHttpsUrl(url)) block.problem('bundle_endpoint_url', `must be an https URL, got ${JSON.stringify(url)}`);
    const prof = block.section('bundle_endpoint_profile');
    const names = prof.keys();
    if (names.length !== 1 || !PROFILES.includes(names[0] as (typeof PROFILES)[number])) {
      for (const n of names) prof.raw(n);
      block.problem('bundle_endpoint_profile', `must be exactly one block, "https_web" {} or "https_spiffe" { endpoint_spiffe_id = "..." }, got ${names.length === 0 ? 'none' : names.map((n) => JSON.stringify(n)).join(', ')}`);
      continue;
    }
    const profile = names[0] as (typeof PROFILES)[number];
    const settings = prof.section(profile);
    let endpointSpiffeId = '';
    if (profile === 'https_spiffe') {
      const id = settings.string('endpoint_spiffe_id');
      if (id === undefined) {
        settings.problem('endpoint_spiffe_id', 'is required for the https_spiffe profile');
        continue;
      }
      try {
        endpointSpiffeId = parseSpiffeId(id);
      } catch (err) {
        settings.problem('endpoint_spiffe_id', `is not a valid SPIFFE ID: ${(err as Error).message}`);
        continue;
      }
    }
    if (url === undefined || !isHttpsUrl(url)) continue;
    out.push({ trustDomain: td, bundleEndpointUrl: url, bundleEndpointProfile: profile, endpointSpiffeId });
  }
  return out.sort((a, b) => (a.trustDomain < b.trustDomain ? -1 : a.trustDomain > b.trustDomain ? 1 : 0));
}

/** An absolute https URL with a host (what a bundle endpoint URL must be). */
export function isHttpsUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return u.protocol === 'https:' && u.hostname !== '' && u.username === '' && u.password === '';
  } catch {
    return false;
  }
}
