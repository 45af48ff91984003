/**
 * From a validated server config (server/config/config.ts) to CaManager options: ca_ttl, key
 * types, ca_subject, default SVID TTLs, the KeyManager and UpstreamAuthority plugins.
 */
import type { X509Subject } from '../../spiffe/x509/index.js';
import type { ServerConfig } from '../config/config.js';
import { keyManagerFromConfig, type KeyManager } from './keymanager.js';
import type { CaDataStore, CaLogger, CaManagerOptions } from './options.js';

/** Our CA subject from the config's ca_subject (first country / organization, common name if set). */
export function caSubjectFromConfig(s: ServerConfig['caSubject']): X509Subject {
  const out: X509Subject = {};
  if (s.country[0]) out.country = s.country[0];
  if (s.organization[0]) out.organization = s.organization[0];
  if (s.commonName) out.commonName = s.commonName;
  return out;
}

/** CaManager.start options from a validated server config. */
export function caOptionsFromConfig(
  config: ServerConfig,
  deps: { datastore: CaDataStore; logger?: CaLogger; now?: () => Date; keyManager?: KeyManager; serverId?: string },
): CaManagerOptions {
  const ua = config.plugins.upstreamAuthority;
  const opts: CaManagerOptions = {
    trustDomain: config.trustDomain,
    datastore: deps.datastore,
    keyManager: deps.keyManager ?? keyManagerFromConfig(config.plugins.keyManager, deps.logger ? { logger: deps.logger } : {}),
    caTtlSeconds: config.caTtl,
    caKeyType: config.caKeyType,
    jwtKeyType: config.jwtKeyType,
    caSubject: caSubjectFromConfig(config.caSubject),
    defaultX509SvidTtlSeconds: config.defaultX509SvidTtl,
    defaultJwtSvidTtlSeconds: config.defaultJwtSvidTtl,
  };
  if (config.jwtIssuer !== undefined) opts.jwtIssuer = config.jwtIssuer;
  if (deps.now) opts.now = deps.now;
  if (deps.serverId !== undefined) opts.serverId = deps.serverId;
  if (deps.logger) opts.logger = deps.logger;
  if (ua) {
    opts.upstream = { keyFilePath: ua.keyFilePath, certFilePath: ua.certFilePath };
    if (ua.bundleFilePath) opts.upstream.bundleFilePath = ua.bundleFilePath;
  }
  return opts;
}
