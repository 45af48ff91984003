/**
 * The `server.federation` section of the server config, in SPIRE's shape:
 *
 *   federation {
 *     bundle_endpoint {                 # this server's SPIFFE bundle endpoint (parseBundleEndpoint)
 *       address = "0.0.0.0"
 *       port = 8443
 *       refresh_hint = "5m"
 *       profile "https_spiffe" {}       # or: profile "https_web" { serving_cert_file { ... } }
 *     }
 *     federates_with "<td>" { ... }     # relationships with other trust domains (parseFederatesWith)
 *   }
 *
 * Contract:
 * - bundle_endpoint is optional; without it no endpoint is served. Defaults: address 0.0.0.0,
 *   port 443, refresh_hint 5m (SPIRE's), file_sync_interval 1h (SPIRE's).
 * - Exactly one profile. No profile at all is accepted as https_spiffe, as SPIRE does (it warns;
 *   so does spindle-server at startup: `profileDefaulted`).
 * - ACME (SPIRE's `bundle_endpoint.acme`, and `acme` inside the https_web profile) is refused by
 *   name: Spindle gets no certificates itself; serving_cert_file takes one from any ACME client.
 * - Problems are recorded on the readers (the caller throws them all at once), never thrown here.
 * - federates_with is parsed by `parseFederatesWith`, its own function, on the same `federation`
 *   reader (config.ts calls both): the static relationships, which the bundle refresher fetches;
 *   they are listed with the dynamic ones and cannot be changed through the API:
 *
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
 */
import { isIP } from 'node:net';
import type { ConfigReader } from '../../common/configfile.js';
import { pathAt } from '../../common/configfields.js';
import { parseSpiffeId, parseTrustDomain, type TrustDomain } from '../../spiffe/id.js';
import type { FederationRelationship } from '../datastore/types.js';

/** Defaults of `server.federation.bundle_endpoint`, by the config file's names; durations in seconds. */
export const BUNDLE_ENDPOINT_DEFAULTS = {
  address: '0.0.0.0',
  port: 443,
  /** SPIRE's default refresh hint: 5 minutes. */
  refresh_hint: 300,
  /** SPIRE's default serving_cert_file.file_sync_interval: 1 hour. */
  file_sync_interval: 3600,
} as const;

/** SPIRE's advice bounds for refresh_hint: below 1m it warns (no one refreshes faster), from 24h it warns too. */
export const REFRESH_HINT_WARN_BELOW_SECONDS = 60;
export const REFRESH_HINT_WARN_FROM_SECONDS = 24 * 3600;

export const BUNDLE_ENDPOINT_PROFILES = ['https_spiffe', 'https_web'] as const;
export type BundleEndpointProfileName = (typeof BUNDLE_ENDPOINT_PROFILES)[number];

export type BundleEndpointProfile =
  | { name: 'https_spiffe' }
  | {
      name: 'https_web';
      /** Absolute path of the PEM certificate (chain, leaf first). */
      certFilePath: string;
      /** Absolute path of the PEM private key. */
      keyFilePath: string;
      /** Seconds between re-reads of both files. */
      fileSyncInterval: number;
    };

export interface BundleEndpointConfig {
  /** IP address to listen on. */
  address: string;
  /** TCP port (0: any free port, for tests). */
  port: number;
  /** spiffe_refresh_hint of the served document, seconds. */
  refreshHint: number;
  profile: BundleEndpointProfile;
  /** No profile was configured: https_spiffe was chosen, as SPIRE does (startup warns). */
  profileDefaulted: boolean;
}

export interface FederationConfig {
  bundleEndpoint?: BundleEndpointConfig;
}

const ACME_REFUSAL =
  'is not supported: Spindle does not obtain certificates itself; get one with any ACME client (certbot, lego, cert-manager) and serve it with profile "https_web" { serving_cert_file { cert_file_path = ... key_file_path = ... } }';

const anyAddress = (a: string): boolean => a === '0.0.0.0' || a === '::';

/** `federation.bundle_endpoint`; undefined when absent. Problems go on `fed`'s readers. */
export function parseBundleEndpoint(fed: ConfigReader, cwd: string, agentApi?: { bindAddress: string; bindPort: number }): BundleEndpointConfig | undefined {
  if (!fed.has('bundle_endpoint')) return undefined;
  const be = fed.section('bundle_endpoint');

  let address: string = BUNDLE_ENDPOINT_DEFAULTS.address;
  const rawAddress = be.string('address');
  if (rawAddress !== undefined) {
    // SPIRE reads it as an IP address (net.ParseIP), not a host name.
    const bare = rawAddress.replace(/^\[(.*)\]$/, '$1');
    if (isIP(bare) === 0) be.problem('address', `expected an IP address (0.0.0.0 listens on all IPv4 addresses), got ${JSON.stringify(rawAddress)}`);
    else address = bare;
  }
  // Port 0 (any free port) is accepted for tests; SPIRE's unset port means the same.
  const port = be.int('port', { min: 0, max: 65535, default: BUNDLE_ENDPOINT_DEFAULTS.port });
  if (agentApi !== undefined && port !== 0 && port === agentApi.bindPort && (address === agentApi.bindAddress || anyAddress(address) || anyAddress(agentApi.bindAddress))) {
    be.problem('port', `${port} is the agent API's port (server.bind_port); the bundle endpoint needs a port of its own`);
  }
  const refreshHint = be.duration('refresh_hint', BUNDLE_ENDPOINT_DEFAULTS.refresh_hint, { min: 1 });

  be.unsupported('acme', ACME_REFUSAL);
  const { profile, defaulted } = parseProfile(be, cwd);
  return { address, port, refreshHint, profile, profileDefaulted: defaulted };
}

function parseProfile(be: ConfigReader, cwd: string): { profile: BundleEndpointProfile; defaulted: boolean } {
  const fallback: BundleEndpointProfile = { name: 'https_spiffe' };
  if (!be.has('profile')) return { profile: fallback, defaulted: true };
  const p = be.section('profile');
  const names = p.keys();
  if (!p.present || names.length !== 1) {
    // Mark them known so the message below is the only one.
    for (const n of names) p.raw(n);
    be.problem(
      'profile',
      `exactly one profile is expected (profile "https_spiffe" {} or profile "https_web" { serving_cert_file { ... } }), got ${
        names.length === 0 ? 'none' : names.map((n) => JSON.stringify(n)).join(' and ')
      }`,
    );
    return { profile: fallback, defaulted: false };
  }
  const name = names[0]!;
  if (!(BUNDLE_ENDPOINT_PROFILES as readonly string[]).includes(name)) {
    p.raw(name);
    p.problem(name, `unknown bundle endpoint profile; expected one of ${BUNDLE_ENDPOINT_PROFILES.join(', ')}`);
    return { profile: fallback, defaulted: false };
  }
  const body = p.section(name);
  if (name === 'https_spiffe') {
    // Takes no settings: any key in it is reported as unknown.
    return { profile: fallback, defaulted: false };
  }
  body.unsupported('acme', ACME_REFUSAL);
  if (!body.has('serving_cert_file')) {
    if (!body.has('acme')) body.problemHere('serving_cert_file is required: the https_web profile serves a certificate from files (serving_cert_file { cert_file_path = ... key_file_path = ... })');
    return { profile: fallback, defaulted: false };
  }
  const f = body.section('serving_cert_file');
  const certFilePath = pathAt(f, 'cert_file_path', cwd);
  const keyFilePath = pathAt(f, 'key_file_path', cwd);
  if (certFilePath === undefined && !f.has('cert_file_path')) f.problem('cert_file_path', 'is required: the PEM certificate (chain, leaf first) the endpoint serves');
  if (keyFilePath === undefined && !f.has('key_file_path')) f.problem('key_file_path', 'is required: the PEM private key of the certificate');
  const fileSyncInterval = f.duration('file_sync_interval', BUNDLE_ENDPOINT_DEFAULTS.file_sync_interval, { min: 1 });
  return { profile: { name: 'https_web', certFilePath: certFilePath ?? '', keyFilePath: keyFilePath ?? '', fileSyncInterval }, defaulted: false };
}

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
