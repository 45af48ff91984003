/**
 * TrustDomainService: federation relationships (SPIRE's TrustDomain API).
 * - Dynamic relationships live in the datastore; static ones come from the config
 *   (federation.federates_with): listed with `static`, refused (FAILED_PRECONDITION) for create,
 *   update and delete. The server's own trust domain is never a relationship.
 * - A relationship's URL must be https; the profile is https_web or https_spiffe with the
 *   endpoint's SPIFFE ID (any trust domain: its bundle must be held to authenticate the endpoint).
 * - A `trust_domain_bundle` given with create or update (the bootstrap) is parsed before anything
 *   is written and stored as a federated bundle: of the endpoint SPIFFE ID's trust domain for
 *   https_spiffe (as SPIRE), of the relationship's trust domain for https_web (SPIFFE document: its sequence;
 *   PEM: the stored sequence + 1, or 0 when none is stored, so the first bundle the endpoint serves
 *   replaces it).
 * - Responses carry the federated bundle held and what this server's refresher last did.
 * - Every change is handed to the refresher at once (new and changed relationships are fetched now).
 */
import { Bundle as SpiffeBundle, MAX_SEQUENCE, marshalBundle, parseBundle, parseX509BundlePem } from '../../../spiffe/bundle.js';
import { parseSpiffeId, trustDomainOf, type SpiffeId, type TrustDomain } from '../../../spiffe/id.js';
import type {
  FederationRelationship as FrMsg,
  FederationRelationshipResult,
  TrustDomainServiceServer,
} from '../../../proto/gen/spindle/admin/v1/admin.js';
import { NO_REFRESH, type FederationRefreshState, type FederationRelationship, type StoredBundle } from '../../datastore/types.js';
import { parseTrustDomainField } from '../convert.js';
import { ApiError, GrpcStatus, OK_STATUS, invalidArgument, notFound, statusOf, unary } from '../errors.js';
import { MAX_BATCH_SIZE } from './entry.js';
import type { AdminDeps, ApiLogger, FederationControl } from './types.js';

type Spec = Omit<FederationRelationship, 'createdAt' | 'updatedAt'>;

const utf8 = new TextDecoder('utf-8', { fatal: true });

function isHttpsUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return u.protocol === 'https:' && u.hostname !== '' && u.username === '' && u.password === '';
  } catch {
    return false;
  }
}

export function relationshipToProto(spec: Spec, isStatic: boolean, refresh: FederationRefreshState | undefined, bundle: StoredBundle | undefined): FrMsg {
  return {
    trustDomain: spec.trustDomain,
    bundleEndpointUrl: spec.bundleEndpointUrl,
    bundleEndpointProfile:
      spec.bundleEndpointProfile === 'https_spiffe' ? { $case: 'httpsSpiffe', value: { endpointSpiffeId: spec.endpointSpiffeId } } : { $case: 'httpsWeb', value: {} },
    trustDomainBundle: bundle === undefined ? undefined : { trustDomain: bundle.trustDomain, document: Buffer.from(bundle.document, 'utf8'), sequence: bundle.sequence },
    trustDomainBundlePem: false,
    static: isStatic,
    refresh: {
      lastAttemptAt: BigInt(refresh?.lastAttemptAt ?? 0),
      lastSuccessAt: BigInt(refresh?.lastSuccessAt ?? 0),
      lastError: refresh?.lastError ?? '',
      lastSequence: refresh?.lastSequence ?? 0n,
    },
  };
}

export function createTrustDomainService(deps: AdminDeps, log: ApiLogger): TrustDomainServiceServer {
  const { datastore: ds, trustDomain: own } = deps;
  const nowSeconds = (): number => Math.floor(deps.now().getTime() / 1000);
  const fed = (): FederationControl => {
    if (deps.federation === undefined) throw new ApiError(GrpcStatus.UNAVAILABLE, 'the bundle refresher is not running');
    return deps.federation;
  };

  function foreignTd(raw: string, field: string): TrustDomain {
    const td = parseTrustDomainField(raw, field);
    if (td === own) throw invalidArgument(`invalid ${field} "${raw}": this is the server's own trust domain; a server does not federate with itself`);
    return td;
  }

  function notStatic(td: TrustDomain, verb: string): void {
    if (deps.federation?.isStatic(td) === true) {
      throw new ApiError(
        GrpcStatus.FAILED_PRECONDITION,
        `cannot ${verb} the federation relationship with "${td}": it is configured in the server config (federation.federates_with); change it there`,
      );
    }
  }

  /** The request's relationship, checked; and its bootstrap bundle, parsed (nothing written yet). */
  function parseRequest(m: FrMsg): { spec: Spec; bundle: SpiffeBundle | undefined; pem: boolean } {
    const td = foreignTd(m.trustDomain, 'trust_domain');
    const url = m.bundleEndpointUrl;
    if (url === '') throw invalidArgument('missing bundle_endpoint_url: the bundle endpoint URL is required');
    if (!isHttpsUrl(url)) throw invalidArgument(`invalid bundle_endpoint_url "${url}": the bundle endpoint URL must be an https URL`);
    const p = m.bundleEndpointProfile;
    if (p === undefined) throw invalidArgument('missing bundle endpoint profile: https_web or https_spiffe');
    let spec: Spec;
    if (p.$case === 'httpsWeb') spec = { trustDomain: td, bundleEndpointUrl: url, bundleEndpointProfile: 'https_web', endpointSpiffeId: '' };
    else {
      const raw = p.value.endpointSpiffeId;
      if (raw === '') throw invalidArgument('missing endpoint_spiffe_id: the https_spiffe profile needs the endpoint SPIFFE ID');
      let id: string;
      try {
        id = parseSpiffeId(raw);
      } catch (err) {
        throw invalidArgument(`invalid endpoint_spiffe_id "${raw}": ${(err as Error).message}`, err);
      }
      spec = { trustDomain: td, bundleEndpointUrl: url, bundleEndpointProfile: 'https_spiffe', endpointSpiffeId: id };
    }
    // As SPIRE: with https_spiffe the bundle given is that of the endpoint SPIFFE ID's trust domain
    // (the one that authenticates the endpoint), usually the relationship's own.
    const bundleTd = spec.bundleEndpointProfile === 'https_spiffe' ? trustDomainOf(spec.endpointSpiffeId as SpiffeId) : td;
    let bundle: SpiffeBundle | undefined;
    const b = m.trustDomainBundle;
    if (b !== undefined && b.document.length > 0) {
      if (bundleTd === own) throw invalidArgument(`invalid trust_domain_bundle: the endpoint SPIFFE ID is in the server's own trust domain, whose bundle the CA manages`);
      if (b.trustDomain !== '' && b.trustDomain !== bundleTd) {
        throw invalidArgument(`invalid trust_domain_bundle: it is for "${b.trustDomain}", expected "${bundleTd}"`);
      }
      try {
        bundle = m.trustDomainBundlePem ? parseX509BundlePem(bundleTd, utf8.decode(b.document)) : parseBundle(bundleTd, b.document);
      } catch (err) {
        throw invalidArgument(`invalid trust_domain_bundle: ${(err as Error).message}`, err);
      }
    }
    return { spec, bundle, pem: m.trustDomainBundlePem };
  }

  async function storeBootstrap(td: TrustDomain, bundle: SpiffeBundle, pem: boolean): Promise<void> {
    if (pem) {
      const previous = await ds.getBundle(td);
      const next = previous === undefined ? 0n : previous.sequence + 1n;
      bundle.sequence = next > MAX_SEQUENCE ? MAX_SEQUENCE : next;
    }
    await ds.setBundle({ trustDomain: td, document: marshalBundle(bundle), sequence: bundle.sequence }, nowSeconds());
  }

  async function view(td: TrustDomain): Promise<FrMsg | undefined> {
    const control = deps.federation;
    const st = control?.staticRelationships().find((r) => r.trustDomain === td);
    if (st !== undefined) return relationshipToProto(st, true, control?.refreshState(td), await ds.getBundle(td));
    const stored = await ds.getFederationRelationship(td);
    if (stored === undefined) return undefined;
    return relationshipToProto(stored, false, control?.refreshState(td) ?? stored.refresh ?? NO_REFRESH, await ds.getBundle(td));
  }

  async function reload(): Promise<void> {
    await deps.federation?.reload().catch((err: unknown) => log.warn({ err }, 'federation: reloading the relationships failed'));
  }

  async function batch(
    method: string,
    items: FrMsg[],
    one: (m: FrMsg) => Promise<FrMsg>,
  ): Promise<{ results: FederationRelationshipResult[] }> {
    if (items.length > MAX_BATCH_SIZE) throw invalidArgument(`too many federation relationships in one request: at most ${MAX_BATCH_SIZE}`);
    const results: FederationRelationshipResult[] = [];
    for (const m of items) {
      try {
        results.push({ status: OK_STATUS, federationRelationship: await one(m) });
      } catch (err) {
        results.push({ status: statusOf(err, log, { method }), federationRelationship: m });
      }
    }
    await reload();
    return { results };
  }

  return {
    listFederationRelationships: unary(log, 'ListFederationRelationships', async () => {
      const control = deps.federation;
      const out: FrMsg[] = [];
      const statics = control?.staticRelationships() ?? [];
      for (const s of statics) out.push(relationshipToProto(s, true, control?.refreshState(s.trustDomain), await ds.getBundle(s.trustDomain)));
      for (const r of await ds.listFederationRelationships()) {
        if (statics.some((s) => s.trustDomain === r.trustDomain)) continue;
        out.push(relationshipToProto(r, false, control?.refreshState(r.trustDomain) ?? r.refresh, await ds.getBundle(r.trustDomain)));
      }
      out.sort((a, b) => (a.trustDomain < b.trustDomain ? -1 : a.trustDomain > b.trustDomain ? 1 : 0));
      return { federationRelationships: out };
    }),

    getFederationRelationship: unary(log, 'GetFederationRelationship', async (req) => {
      const td = foreignTd(req.trustDomain, 'trust_domain');
      const v = await view(td);
      if (v === undefined) throw notFound(`no federation relationship with trust domain "${td}"`);
      return v;
    }),

    batchCreateFederationRelationship: unary(log, 'BatchCreateFederationRelationship', async (req) =>
      batch('BatchCreateFederationRelationship', req.federationRelationships, async (m) => {
        const { spec, bundle, pem } = parseRequest(m);
        notStatic(spec.trustDomain, 'create');
        await ds.createFederationRelationship(spec, nowSeconds());
        if (bundle !== undefined) await storeBootstrap(bundle.trustDomain, bundle, pem);
        log.info({ method: 'BatchCreateFederationRelationship', trustDomain: spec.trustDomain }, 'federation relationship created');
        return (await view(spec.trustDomain))!;
      }),
    ),

    batchUpdateFederationRelationship: unary(log, 'BatchUpdateFederationRelationship', async (req) =>
      batch('BatchUpdateFederationRelationship', req.federationRelationships, async (m) => {
        const { spec, bundle, pem } = parseRequest(m);
        notStatic(spec.trustDomain, 'update');
        await ds.updateFederationRelationship(spec, nowSeconds());
        if (bundle !== undefined) await storeBootstrap(bundle.trustDomain, bundle, pem);
        log.info({ method: 'BatchUpdateFederationRelationship', trustDomain: spec.trustDomain }, 'federation relationship updated');
        return (await view(spec.trustDomain))!;
      }),
    ),

    batchDeleteFederationRelationship: unary(log, 'BatchDeleteFederationRelationship', async (req) => {
      if (req.trustDomains.length > MAX_BATCH_SIZE) throw invalidArgument(`too many trust domains in one request: at most ${MAX_BATCH_SIZE}`);
      const results = [];
      for (const raw of req.trustDomains) {
        try {
          const td = foreignTd(raw, 'trust_domain');
          notStatic(td, 'delete');
          if (!(await ds.deleteFederationRelationship(td))) throw notFound(`no federation relationship with trust domain "${td}"`);
          log.info({ method: 'BatchDeleteFederationRelationship', trustDomain: td }, 'federation relationship deleted');
          results.push({ status: OK_STATUS, trustDomain: td });
        } catch (err) {
          results.push({ status: statusOf(err, log, { method: 'BatchDeleteFederationRelationship' }), trustDomain: raw });
        }
      }
      await reload();
      return { results };
    }),

    refreshBundle: unary(log, 'RefreshBundle', async (req) => {
      const td = foreignTd(req.trustDomain, 'trust_domain');
      if ((await view(td)) === undefined) throw notFound(`no federation relationship with trust domain "${td}"`);
      const out = await fed().refreshNow(td);
      if (!out.ok) throw new ApiError(GrpcStatus.FAILED_PRECONDITION, `refreshing the bundle of "${td}" failed: ${out.error ?? 'unknown error'}`);
      return { sequence: out.sequence ?? 0n };
    }),
  };
}
