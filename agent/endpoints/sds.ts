/**
 * Envoy SDS v3 (`envoy.service.secret.v3.SecretDiscoveryService`) on the agent's socket
 * (Envoy connects to the same socket), served next to the Workload API by `startAgentEndpoint`
 * (endpoint.ts). Callers are admitted as Workload API callers are (admission.ts).
 *
 * - No security header (Envoy sends none). The caller is attested like a Workload API caller:
 *   every attestor on the connection's SO_PEERCRED view, selectors unioned, failure UNAVAILABLE;
 *   then it must still be the same process (UNAVAILABLE otherwise), re-checked before every push.
 * - Resource names: a SPIFFE ID the caller holds (TLS certificate), `default` (the caller's first
 *   SVID), `spiffe://<td>` (that trust domain's bundle as trusted_ca), `ROOTCA` (our own bundle),
 *   `ALL` (every bundle the caller sees, through Envoy's SPIFFE certificate validator, or as one
 *   concatenated trusted_ca when SPIFFE validation is disabled by config, by Node metadata
 *   `disable_spiffe_cert_validation`, or because the Envoy build is 1.17 or older). An empty name
 *   list means every SVID and every bundle (named `spiffe://<td>`). Anything else: INVALID_ARGUMENT.
 *   Bundles the caller sees: our trust domain's plus the federated bundles of its identities.
 * - StreamSecrets: answer the first request; then answer a request only when its name set
 *   differs from the last one; a request whose response_nonce is not the nonce we sent last is
 *   stale and ignored; a NACK (error_detail) is logged, nothing is resent; an ACK sends nothing.
 *   Cache changes (rotation, bundles) are pushed when they change the requested resources.
 *   version_info is a per-stream counter, nonce random.
 * - FetchSecrets answers once; DeltaSecrets is UNIMPLEMENTED.
 * - Per-caller limits (limits.ts), shared with the Workload API on the same socket: each
 *   StreamSecrets/FetchSecrets takes a token of the caller process's rate bucket before any
 *   attestation, and each StreamSecrets a slot of its stream budget; RESOURCE_EXHAUSTED otherwise.
 */
import { status as GrpcStatus, type ServerDuplexStream, type ServerUnaryCall, type sendUnaryData } from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import type { IdentityCache, WorkloadUpdate } from '../manager/types.js';
import type { WorkloadAttestor } from '../../attestors/workload/types.js';
import type { Bundle } from '../../spiffe/bundle.js';
import { parseSpiffeId, trustDomainOf, pathOf } from '../../spiffe/id.js';
import { certificatesToPem, privateKeyToPem } from '../../spiffe/pem.js';
import { Any } from '../../proto/gen/google/protobuf/any.js';
import type { Node } from '../../proto/gen/envoy/config/core/v3/base.js';
import { DiscoveryResponse, type DiscoveryRequest } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';
import { SecretDiscoveryServiceService, type SecretDiscoveryServiceServer } from '../../proto/gen/envoy/service/secret/v3/sds.js';
import { Secret } from '../../proto/gen/envoy/extensions/transport_sockets/tls/v3/secret.js';
import { SPIFFECertValidatorConfig } from '../../proto/gen/envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.js';
import { apiError } from './errors.js';
import { Admission, unaryCall } from './admission.js';
import { cacheError, StreamEnd, type StreamEnder } from './caller.js';
import { CallerLimits } from './limits.js';
import type { EndpointLogger, PeerContext, PeerOf } from './types.js';

export const SDS_SERVICE_NAME = 'envoy.service.secret.v3.SecretDiscoveryService';
export const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
export const SPIFFE_VALIDATOR_CONFIG_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig';
export const SPIFFE_VALIDATOR_NAME = 'envoy.tls.cert_validator.spiffe';

export interface SdsConfig {
  /** Default `default`. */
  defaultSvidName?: string;
  /** Default `ROOTCA`. */
  defaultBundleName?: string;
  /** Default `ALL`. */
  defaultAllBundlesName?: string;
  /** Default false. */
  disableSpiffeCertValidation?: boolean;
}

export interface SdsServiceOptions {
  cache: IdentityCache;
  attestors: readonly WorkloadAttestor[];
  peerOf: PeerOf;
  logger: EndpointLogger;
  config?: SdsConfig;
  /** Per-caller limits shared with the Workload API (startAgentEndpoint passes its own). Default: its own with the defaults. */
  limits?: CallerLimits;
}

export interface SdsService {
  name: string;
  definition: typeof SecretDiscoveryServiceService;
  implementation: SecretDiscoveryServiceServer;
  /** Ends every open stream with UNAVAILABLE. */
  closeStreams(): void;
}

interface ResolvedConfig {
  defaultSvidName: string;
  defaultBundleName: string;
  defaultAllBundlesName: string;
  disableSpiffeCertValidation: boolean;
}

const inline = (text: string) => ({ specifier: { $case: 'inlineBytes' as const, value: Buffer.from(text, 'utf8') } });

function bundlePem(b: Bundle): string {
  return certificatesToPem(b.x509Authorities());
}

/** True when the Node asks for plain trusted_ca validation contexts (metadata flag or Envoy <= 1.17). */
export function nodeDisablesSpiffeValidation(node: Node | undefined): boolean {
  if (node === undefined) return false;
  const flag: unknown = node.metadata?.['disable_spiffe_cert_validation'];
  if (flag === true || (typeof flag === 'string' && flag.toLowerCase() === 'true')) return true;
  const v = node.userAgentVersionType;
  if (v?.$case === 'userAgentBuildVersion' && v.value.version !== undefined) {
    const { majorNumber, minorNumber } = v.value.version;
    if (majorNumber < 1 || (majorNumber === 1 && minorNumber <= 17)) return true;
  }
  return false;
}

/** Visible bundles: own first, then the caller's federated bundles (own never overridden). */
function visibleBundles(update: WorkloadUpdate): Bundle[] {
  const own = update.bundle.trustDomain;
  const out: Bundle[] = [update.bundle];
  const seen = new Set<string>([own]);
  for (const b of update.federatedBundles) {
    if (seen.has(b.trustDomain)) continue;
    seen.add(b.trustDomain);
    out.push(b);
  }
  return out;
}

/**
 * The Secrets for `names` (empty: everything the caller sees). Throws WorkloadApiError
 * INVALID_ARGUMENT for an unknown name or one the caller does not hold.
 */
export function buildSecrets(names: readonly string[], update: WorkloadUpdate, config: ResolvedConfig, disableSpiffe: boolean): Secret[] {
  const bundles = visibleBundles(update);
  const tlsSecret = (name: string, id: WorkloadUpdate['identities'][number]): Secret => ({
    name,
    type: {
      $case: 'tlsCertificate',
      value: { certificateChain: inline(certificatesToPem(id.chain)), privateKey: inline(privateKeyToPem(id.privateKeyPkcs8)) },
    },
  });
  const caSecret = (name: string, pem: string): Secret => ({
    name,
    type: { $case: 'validationContext', value: { trustedCa: inline(pem), customValidatorConfig: undefined } },
  });
  const allSecret = (name: string): Secret => {
    if (disableSpiffe) return caSecret(name, bundles.map(bundlePem).join(''));
    const cfg: SPIFFECertValidatorConfig = {
      trustDomains: bundles.map((b) => ({ name: b.trustDomain, trustBundle: inline(bundlePem(b)) })),
    };
    return {
      name,
      type: {
        $case: 'validationContext',
        value: {
          trustedCa: undefined,
          customValidatorConfig: {
            name: SPIFFE_VALIDATOR_NAME,
            typedConfig: { typeUrl: SPIFFE_VALIDATOR_CONFIG_TYPE_URL, value: Buffer.from(SPIFFECertValidatorConfig.encode(cfg).finish()) },
          },
        },
      },
    };
  };

  if (names.length === 0) {
    const out: Secret[] = [];
    const seen = new Set<string>();
    for (const id of update.identities) {
      if (seen.has(id.spiffeId)) continue;
      seen.add(id.spiffeId);
      out.push(tlsSecret(id.spiffeId, id));
    }
    for (const b of bundles) out.push(caSecret(`spiffe://${b.trustDomain}`, bundlePem(b)));
    return out;
  }

  const out: Secret[] = [];
  for (const name of new Set(names)) {
    if (name === config.defaultSvidName) {
      const first = update.identities[0];
      if (first === undefined) throw apiError(GrpcStatus.INVALID_ARGUMENT, `no identity issued for resource ${JSON.stringify(name)}`);
      out.push(tlsSecret(name, first));
    } else if (name === config.defaultBundleName) {
      out.push(caSecret(name, bundlePem(update.bundle)));
    } else if (name === config.defaultAllBundlesName) {
      out.push(allSecret(name));
    } else if (name.startsWith('spiffe://')) {
      let id;
      try {
        id = parseSpiffeId(name);
      } catch (err) {
        throw apiError(GrpcStatus.INVALID_ARGUMENT, `unknown resource name ${JSON.stringify(name)}: ${(err as Error).message}`, err);
      }
      if (pathOf(id) === '') {
        const td = trustDomainOf(id);
        const b = bundles.find((x) => x.trustDomain === td);
        if (b === undefined) throw apiError(GrpcStatus.INVALID_ARGUMENT, `no bundle for trust domain ${JSON.stringify(td)} available to the caller`);
        out.push(caSecret(name, bundlePem(b)));
      } else {
        const held = update.identities.find((i) => i.spiffeId === id);
        if (held === undefined) throw apiError(GrpcStatus.INVALID_ARGUMENT, `no identity issued for ${JSON.stringify(name)}`);
        out.push(tlsSecret(name, held));
      }
    } else {
      throw apiError(GrpcStatus.INVALID_ARGUMENT, `unknown resource name ${JSON.stringify(name)}`);
    }
  }
  return out;
}


function sameNameSet(a: readonly string[], b: readonly string[]): boolean {
  const sa = new Set(a);
  const sb = new Set(b);
  if (sa.size !== sb.size) return false;
  for (const x of sa) if (!sb.has(x)) return false;
  return true;
}

export function createSdsService(options: SdsServiceOptions): SdsService {
  const { cache, attestors, peerOf } = options;
  const log = options.logger;
  const config: ResolvedConfig = {
    defaultSvidName: options.config?.defaultSvidName || 'default',
    defaultBundleName: options.config?.defaultBundleName || 'ROOTCA',
    defaultAllBundlesName: options.config?.defaultAllBundlesName || 'ALL',
    disableSpiffeCertValidation: options.config?.disableSpiffeCertValidation ?? false,
  };
  const limits = options.limits ?? new CallerLimits();
  const open = new Set<StreamEnder>();

  const admission = new Admission({ peerOf, attestors, limits, cache, kind: 'sds' });

  function checkTypeUrl(req: DiscoveryRequest): void {
    if (req.typeUrl !== '' && req.typeUrl !== SECRET_TYPE_URL) {
      throw apiError(GrpcStatus.INVALID_ARGUMENT, `unsupported type_url ${JSON.stringify(req.typeUrl)}; expected ${SECRET_TYPE_URL}`);
    }
  }

  function toAny(secrets: Secret[]): Any[] {
    return secrets.map((s) => ({ typeUrl: SECRET_TYPE_URL, value: Buffer.from(Secret.encode(s).finish()) }));
  }

  function streamSecrets(call: ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>): void {
    const context = { method: 'StreamSecrets', peer: call.getPeer() };
    const life = new StreamEnd(call, open, log, context);
    const { cleanup, endWith, fail } = life;
    let caller: PeerContext | undefined;
    let ready = false;
    const queued: DiscoveryRequest[] = [];
    let update: WorkloadUpdate | undefined;
    let names: string[] | undefined; // undefined until the first request is answered
    let disableSpiffe = config.disableSpiffeCertValidation;
    let lastNonce: string | undefined;
    let lastResources: Buffer | undefined;
    let version = 0;
    // A response not yet taken by the transport (the client does not read): later ones are not
    // queued behind it; `owed` remembers that the state changed, and the response built when the
    // transport takes the previous one carries the newest state (nothing piles up per stream).
    let inflight = false;
    let owed: boolean | undefined; // undefined: nothing owed; else the owed response's `force`

    call.on('error', () => cleanup());
    call.on('end', () => {
      // Client half-closed: finish the call.
      if (life.ended) return;
      cleanup();
      call.end();
    });
    open.add(endWith);

    /** Sends the requested resources; `force` false skips a response identical to the last one. */
    const respond = (force: boolean): void => {
      if (life.ended || names === undefined || update === undefined) return;
      if (inflight) {
        owed = (owed ?? false) || force;
        return;
      }
      const changed = caller?.whyNotSameProcess();
      if (changed !== undefined) {
        endWith(GrpcStatus.UNAVAILABLE, `caller process changed: ${changed}; reconnect and retry`);
        return;
      }
      let resources: Any[];
      try {
        resources = toAny(buildSecrets(names, update, config, disableSpiffe));
      } catch (err) {
        fail(err);
        return;
      }
      const bytes = Buffer.concat(resources.map((r) => Any.encode(r).finish()));
      if (!force && lastResources !== undefined && lastResources.equals(bytes)) return;
      lastResources = bytes;
      version++;
      lastNonce = randomUUID();
      const res: DiscoveryResponse = { versionInfo: String(version), resources, canary: false, typeUrl: SECRET_TYPE_URL, nonce: lastNonce };
      log.debug({ ...context, version, names, count: resources.length }, 'SDS response sent');
      inflight = true;
      call.write(res, () => {
        inflight = false;
        const again = owed;
        owed = undefined;
        if (again !== undefined) respond(again);
      });
    };

    const handle = (req: DiscoveryRequest): void => {
      if (life.ended) return;
      try {
        checkTypeUrl(req);
      } catch (err) {
        fail(err);
        return;
      }
      if (req.node !== undefined && nodeDisablesSpiffeValidation(req.node)) disableSpiffe = true;
      if (lastNonce !== undefined && req.responseNonce !== lastNonce) {
        log.debug({ ...context, nonce: req.responseNonce }, 'SDS request with a stale nonce ignored');
        return;
      }
      if (req.errorDetail !== undefined) {
        log.warn({ ...context, version: req.versionInfo, code: req.errorDetail.code, error: req.errorDetail.message }, 'Envoy rejected the secrets (NACK)');
        return;
      }
      if (names !== undefined && sameNameSet(names, req.resourceNames)) return; // ACK
      names = [...req.resourceNames];
      respond(true);
    };

    call.on('data', (req: DiscoveryRequest) => {
      if (life.ended) return;
      if (!ready) queued.push(req);
      else handle(req);
    });

    admission
      .openSubscription(call, life, {
        admitted(peer) {
          caller = peer;
        },
        initial(initial, early) {
          update = early ?? initial;
          ready = true;
          for (const req of queued.splice(0)) handle(req);
        },
        update(u) {
          update = u;
          respond(false);
        },
      })
      .catch(fail);
  }

  function fetchSecrets(call: ServerUnaryCall<DiscoveryRequest, DiscoveryResponse>, callback: sendUnaryData<DiscoveryResponse>): void {
    unaryCall(call, callback, log, 'FetchSecrets', async (signal) => {
      const req = call.request;
      const { selectors } = await admission.admitCall(call, signal, () => checkTypeUrl(req));
      let update: WorkloadUpdate;
      try {
        update = await cache.fetchX509(selectors);
      } catch (err) {
        throw cacheError(err);
      }
      const disable = config.disableSpiffeCertValidation || nodeDisablesSpiffeValidation(req.node);
      const resources = toAny(buildSecrets(req.resourceNames, update, config, disable));
      return { versionInfo: '1', resources, canary: false, typeUrl: SECRET_TYPE_URL, nonce: randomUUID() } satisfies DiscoveryResponse;
    });
  }

  const implementation: SecretDiscoveryServiceServer = {
    deltaSecrets: (call) => {
      call.emit('error', { code: GrpcStatus.UNIMPLEMENTED, details: 'DeltaSecrets is not implemented' });
    },
    streamSecrets,
    fetchSecrets,
  };

  return {
    name: SDS_SERVICE_NAME,
    definition: SecretDiscoveryServiceService,
    implementation,
    closeStreams() {
      for (const end of [...open]) end(GrpcStatus.UNAVAILABLE, 'the agent is shutting down');
    },
  };
}
